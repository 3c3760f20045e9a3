"""Merge benchmark outputs run on disjoint seed ranges into one, as if one command had run them all.

    python benchmarks/nb201/merge.py --protocol paper --out benchmarks/nb201/results/paper CHUNK_DIR ...

Each run ``(strategy, seed)`` of ``python -m rnas.judging.benchmark`` is seeded on its own, so seeds 0-9
and 10-19 run by two commands (``--seeds 10 --seed-offset 10``) give exactly the runs of one
command with ``--seeds 20``. This reads each chunk's ``curves.csv`` (every query of every run)
and ``summary.csv``, and writes the usual outputs for all runs together (``rnas.judging.benchmark.write_outputs``:
summary with CI and Welch p, curves, metrics, plot). A run's wall time is not in ``curves.csv``:
each gets its chunk's mean for its strategy, so the summed ``wall_seconds`` stay exact.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
import yaml

from rnas.judging.benchmark import write_outputs
from rnas.judging.table_search import BenchmarkConfig, Budget, QueryRecord, RunResult, TableSpec

HERE = Path(__file__).resolve().parent


def read_runs(chunk: Path) -> list[RunResult]:
    curves = pd.read_csv(chunk / "curves.csv", keep_default_na=False)
    summary = pd.read_csv(chunk / "summary.csv").set_index("strategy")
    names = [f.name for f in fields(QueryRecord)]
    runs = []
    for (strategy, seed), rows in curves.groupby(["strategy", "seed"], sort=False):
        wall = summary.wall_seconds[strategy] / summary.seeds[strategy]
        queries = [QueryRecord(**row) for row in rows.sort_values("query")[names].to_dict(orient="records")]
        runs.append(RunResult(strategy, int(seed), queries, float(wall)))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chunks", nargs="+", type=Path)
    parser.add_argument("--protocol", required=True, help="a protocol block of the params file (paper, queries100)")
    parser.add_argument("--params", default=str(HERE / "params.yaml"))
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())
    protocol = params[args.protocol]
    runs = [run for chunk in args.chunks for run in read_runs(chunk)]
    labels = list(dict.fromkeys(run.strategy for run in runs))
    runs.sort(key=lambda r: (labels.index(r.strategy), r.seed))
    if len({(r.strategy, r.seed) for r in runs}) != len(runs):
        raise SystemExit("the chunks overlap: a (strategy, seed) run appears twice")
    config = BenchmarkConfig(
        table=TableSpec("nb201", params["table"], protocol["select_col"], protocol["report_col"],
                        protocol.get("cost_col")),
        budget=Budget(protocol.get("budget_seconds"), protocol.get("budget_queries")),
        strategies=labels, seeds=len({r.seed for r in runs}))
    best = json.loads((args.chunks[0] / "metrics.json").read_text())["best_possible_report"]
    summary = write_outputs(runs, config, args.out, best)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
