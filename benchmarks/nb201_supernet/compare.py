"""Search strategies compared on one trained NB201 supernet, judged by the table.

    python benchmarks/nb201_supernet/compare.py --seeds 0 1 2 \
        --strategies rnas nao predictor random evolution -- \
        -S profile=nb201-cpu -S data.search.root=../shared/data/cifar10-train-jpg.tar.gz \
        -S evaluate.truth.table=../shared/data/nb201/cifar10.csv

Runs ``dvc exp run <overrides> -S search.strategy=S -S search.seed=K`` for every strategy and
search seed, one after the other in this workspace. The supernet (warmup) and the embedding are the
same in every run, so DVC reruns only sample, rerank, retrain and evaluate; with
``search.epochs_per_round: 0`` (the nb201-cpu profile) the supernet also stays fixed during the
search, and the strategies differ only in what they propose. Appends one row per run to --out (true
test accuracy of the found cell, of the supernet's own pick before re-ranking and of the top cells;
the found cell's supernet score and rank) and prints one JSON line per strategy: mean and standard
deviation over seeds, and rnas's difference to it with Welch's p. ``--summarise`` only prints that.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rnas.judging.rank_stats import welch_p  # noqa: E402

COLUMNS = ("truth_found_acc", "truth_found_percentile", "truth_pool_pick_acc", "truth_top_mean_acc",
           "truth_top_max_acc", "truth_pool_max_acc", "truth_rerank_max_acc", "truth_rerank_kendall_tau",
           "truth_predictor_kendall_tau")


def run_one(overrides: list[str], strategy: str, seed: int) -> dict:
    start = time.perf_counter()
    command = ["dvc", "exp", "run", *overrides, "-S", f"search.strategy={strategy}", "-S", f"search.seed={seed}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads(Path("artifacts/evaluate/metrics.json").read_text())
    best = json.loads(Path("artifacts/rerank/best.json").read_text())
    return {"strategy": strategy, "seed": seed, "arch": best["arch"], "supernet_score": best["score"],
            "search_rank": best.get("search_rank", 1),
            **{k: metrics.get(k) for k in COLUMNS}, "wall_seconds": round(time.perf_counter() - start, 1),
            "loadavg": os.getloadavg()[0]}


def summarise(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for strategy, runs in frame.groupby("strategy", sort=False):
        found = runs["truth_found_acc"].tolist()
        rows.append({"strategy": strategy, "seeds": len(found), "found_mean": round(statistics.mean(found), 2),
                     "found_std": round(statistics.stdev(found), 2) if len(found) > 1 else None,
                     "supernet_pick_mean": round(runs["truth_pool_pick_acc"].mean(), 2),
                     "top_mean": round(runs["truth_top_mean_acc"].mean(), 2)})
    if "rnas" in set(frame["strategy"]):  # rnas against each baseline: Welch's t-test on the found cells
        rnas = frame.loc[frame["strategy"] == "rnas", "truth_found_acc"].tolist()
        for row in rows:
            other = frame.loc[frame["strategy"] == row["strategy"], "truth_found_acc"].tolist()
            if row["strategy"] != "rnas" and len(other) > 1 and len(rnas) > 1:
                row["rnas_minus_this"] = round(statistics.mean(rnas) - statistics.mean(other), 2)
                row["welch_p"] = round(welch_p(rnas, other), 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["rnas", "nao", "predictor", "random", "evolution"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/nb201_supernet/strategies.csv")
    parser.add_argument("--summarise", action="store_true", help="only print the summary of --out")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then the dvc exp run -S overrides")
    args = parser.parse_args()
    overrides = [o for o in args.overrides if o != "--"]
    for seed in [] if args.summarise else args.seeds:
        for strategy in args.strategies:
            row = run_one(overrides, strategy, seed)
            print(json.dumps(row), flush=True)
            out = Path(args.out)
            pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
    for row in summarise(pd.read_csv(args.out)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
