"""What the scripts that choose a setting on tuning runs share: the run's seed, refused when it is a
reported one, and the table judged on the tuning column (rnas.judging.truth.Judging)."""
from __future__ import annotations

import argparse
from pathlib import Path

from rnas.artifacts import read_json
from rnas.judging.oracle import TableOracle
from rnas.spaces.nb201 import NB201Space
from rnas.judging.truth import Judging, TruthConfig


def tuning_oracle(folder: Path, table: str, chosen: str) -> tuple[TableOracle, int]:
    """The table on the tuning column, and the seed of the run in ``folder`` (a project or experiment
    folder, or a copy of its ``artifacts/sample/provenance.json``); ``chosen`` says what is being tuned."""
    seed = read_json(folder / "artifacts/sample/provenance.json")["seed"]
    judging = Judging.of(seed, TruthConfig())
    if judging.role != "tune":
        raise SystemExit(f"{folder}: seed {seed} is a reported seed; {chosen} are chosen on tuning seeds (100 and up)")
    return TableOracle.from_csv(table, NB201Space(), judging.column, judging.column), seed


def runs_arguments(description: str) -> argparse.Namespace:
    """``--table T RUN_DIR [RUN_DIR ...]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--table", required=True)
    parser.add_argument("runs", nargs="+", type=Path)
    return parser.parse_args()
