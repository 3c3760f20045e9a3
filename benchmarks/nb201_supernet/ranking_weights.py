"""Choose the combined ranking's weights (search.ranking.weights) on tuning runs only.

    python benchmarks/nb201_supernet/ranking_weights.py --table ../shared/data/nb201/cifar10.csv \
        RUN_DIR [RUN_DIR ...] > benchmarks/nb201_supernet/tuning/ranking_weights.jsonl

Each RUN_DIR is a project (or experiment) folder whose pipeline ran with a tuning seed (100 and up)
and with every signal in ``search.ranking.signals``: its ``artifacts/sample/reference.csv`` holds the
supernet's score and each signal of the tuning reference cells. For every weighting on a grid
(the supernet's weight 0-3, each signal's 0 or 1), the weighted rank ensemble
(rnas.search.ranking.combined_scores) of each run's reference cells is judged against the table's
validation column. Prints one JSON line per weighting, best mean Kendall tau first. A run of a
reported seed is refused: its cells and its column are for reporting, never for choosing.
"""
from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

from benchmarks.nb201_supernet.tuning_run import runs_arguments, tuning_oracle
from rnas.search.ranking import SIGNAL_PREFIX, SUPERNET, combined_scores
from rnas.spaces.nb201 import NB201Space
from rnas.judging.truth import ranking, true_accuracies

SUPERNET_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0)
SIGNALS = ("params", "synflow", "naswot", "snip", "grad_norm")


def load_run(folder: Path, table: str) -> tuple[dict[str, list[float]], list[float], int]:
    """The members' values of the run's reference cells, their true accuracies, and the run's seed."""
    oracle, seed = tuning_oracle(folder, table, "weights")
    space = NB201Space()
    reference = pd.read_csv(folder / "artifacts/sample/reference.csv")
    missing = [name for name in SIGNALS if SIGNAL_PREFIX + name not in reference]
    if missing:
        raise SystemExit(f"{folder}: no signals {missing} in artifacts/sample/reference.csv "
                         f"(run with search.ranking.signals naming every signal)")
    truth = true_accuracies(oracle, [space.from_str(a) for a in reference["arch"]])
    members = {SUPERNET: reference["score"].tolist(),
               **{name: reference[SIGNAL_PREFIX + name].tolist() for name in SIGNALS}}
    return members, truth, seed


def main() -> None:
    args = runs_arguments(__doc__.splitlines()[0])
    runs = [load_run(folder, args.table) for folder in args.runs]
    rows = []
    for supernet in SUPERNET_WEIGHTS:
        for chosen in itertools.product((0.0, 1.0), repeat=len(SIGNALS)):
            weights = {SUPERNET: supernet, **dict(zip(SIGNALS, chosen))}
            if not any(weights.values()):
                continue
            quality = [ranking(combined_scores(members, weights), truth) for members, truth, _ in runs]
            taus = [q["kendall_tau"] for q in quality]
            rows.append({"weights": {k: v for k, v in weights.items() if v}, "seeds": [seed for *_, seed in runs],
                         "kendall_tau_mean": round(statistics.mean(taus), 4), "kendall_tau": [round(t, 4) for t in taus],
                         "precision_at_10pct_mean": round(statistics.mean(q["precision_at_10pct"] for q in quality), 4)})
    for row in sorted(rows, key=lambda r: -r["kendall_tau_mean"]):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
