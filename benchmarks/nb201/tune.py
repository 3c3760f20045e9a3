"""Tune every strategy with the same budget, on tuning seeds, seeing only the select column.

    python benchmarks/nb201/tune.py [--grid benchmarks/nb201/tuning.yaml] [--only LABEL ...]
        [--out benchmarks/nb201/tuning_log.csv]

For each run label of the grid file, each of its candidate option sets (merged over the label's
options in ``params.yaml``, as ``--config`` merges them) runs the benchmark on the tuning seeds
(``seed_offset`` .. + ``seeds`` - 1, disjoint from the reported seeds 0-49) under the grid's
protocol, and is scored by the mean over seeds of the SELECT column of each run's answer: the
report column (test accuracy) is never read. Appends one row per candidate to the log (label,
options as JSON, protocol, seeds, mean, std, seconds) and prints the best candidate per label.
``diagnose.py``, which reads the whole table, plays no part here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
import torch
import yaml

from rnas.judging.table_search import BenchmarkConfig, Budget, TableSpec, merge_options, run_benchmark

HERE = Path(__file__).resolve().parent


def tune_label(label: str, candidates: list[dict], params: dict, grid: dict) -> list[dict]:
    protocol = params[grid["protocol"]]
    table = TableSpec("nb201", params["table"], protocol["select_col"], protocol["select_col"],
                      protocol.get("cost_col"))
    budget = Budget(protocol.get("budget_seconds"), protocol.get("budget_queries"))
    rows = []
    for candidate in candidates:
        options = {label: merge_options(params["strategies"].get(label) or {}, candidate or {})}
        config = BenchmarkConfig(table=table, budget=budget, strategies=[label], seeds=grid["seeds"],
                                 seed_offset=grid["seed_offset"], strategy_options=options)
        config.check()
        start = time.perf_counter()
        finals = pd.Series([r.final_report for r in run_benchmark(config)])
        rows.append({"label": label, "options": json.dumps(candidate or {}, sort_keys=True),
                     "protocol": grid["protocol"],
                     "seeds": f"{grid['seed_offset']}-{grid['seed_offset'] + grid['seeds'] - 1}",
                     "mean_select": round(finals.mean(), 4), "std_select": round(finals.std(), 4),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=str(HERE / "tuning.yaml"))
    parser.add_argument("--params", default=str(HERE / "params.yaml"))
    parser.add_argument("--only", nargs="*", help="run labels to tune (default: all in the grid)")
    parser.add_argument("--out", default=str(HERE / "tuning_log.csv"), help="CSV log, appended to")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one run at a time on one thread: the steadiest on shared cores
    grid = yaml.safe_load(Path(args.grid).read_text())
    params = yaml.safe_load(Path(args.params).read_text())
    out = Path(args.out)
    for label in args.only or list(grid["candidates"]):
        rows = pd.DataFrame(tune_label(label, grid["candidates"][label], params, grid))
        rows.to_csv(out, mode="a", header=not out.exists(), index=False)
        best = rows.loc[rows.mean_select.idxmax()]
        print(f"{label}: best {best.options} (mean select {best.mean_select:.3f})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
