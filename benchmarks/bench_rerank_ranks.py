"""Re-ranking on N processes against one: wall time and identical rows (`trainer.nproc` for rerank).

    python benchmarks/bench_rerank_ranks.py --data ../shared/data/cifar10-train-jpg.tar.gz --cells 8 --epochs 3

Re-ranks --cells random NB201 cells (drawn with --seed) with `nb201-cpu`'s short training (C=8, N=1,
16x16, 10,000 training images; --epochs each) through the library the stage calls
(``rnas.search.rerank.rerank``, ``ImageTask.measure``), once on one process and once on --nproc processes
(one torch thread each, a fresh measurement folder each), and prints one JSON line: both wall times,
their ratio, and whether the rows (every cell's validation scores) and the winner are identical.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.nb201_supernet.levers import prepared
from benchmarks.nb201_supernet.standalone import child_and_recipe, prepared_at
from rnas.search.pool import ArchPool
from rnas.search.rerank import MeasurementStore, cell_id, rerank, winner
from rnas.spaces.nb201 import NB201Space
from rnas.tasks.base import RunEnv
from rnas.tasks.image import ImageTask
from rnas.training.distributed import DistributedContext


def rank_main(rank: int, nproc: int, args: argparse.Namespace, data: Path, folder: Path, rows: dict) -> None:
    """One rank's part: its share of the cells, and on rank 0 the gathered rows."""
    torch.set_num_threads(1)
    space, device = NB201Space(), torch.device("cpu")
    cells = space.sample_unique(args.cells, random.Random(args.seed))
    pool = ArchPool(space, cells, [0.0] * len(cells))
    env = RunEnv(space, device, args.seed, provenance={}, dist=DistributedContext(device=device))
    child, train = child_and_recipe(args.channels, args.epochs)
    store = MeasurementStore(folder / "measured", "bench")

    def measure(arch: str, repeat: int) -> dict:  # one training per cell (repeat 0)
        return ImageTask().measure(env, arch, data, child=child, train=train,
                                   checkpoint=folder / f"checkpoints/{cell_id(arch)}.pt", fingerprint=arch)

    result = rerank(space, pool, measure, store, shard=(rank, nproc), poll_seconds=0.5)
    if result is not None:
        rows[nproc] = [{k: v for k, v in row.items() if k != "seconds"} for row in result]


def timed_rerank(nproc: int, args: argparse.Namespace, data: Path) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="rnas-bench-rerank-") as folder, mp.Manager() as manager:
        rows = manager.dict()
        start = time.perf_counter()
        ranks = [mp.get_context("spawn").Process(target=rank_main, args=(r, nproc, args, data, Path(folder), rows))
                 for r in range(nproc)]
        for p in ranks:
            p.start()
        for p in ranks:
            p.join()
        if any(p.exitcode for p in ranks):
            raise SystemExit(f"a rank failed (exit codes {[p.exitcode for p in ranks]})")
        return time.perf_counter() - start, rows[nproc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder folder or .tar.gz")
    parser.add_argument("--cache", default="/tmp/rnas-nb201-levers", help="prepared data (shared with levers.py)")
    parser.add_argument("--max-train", type=int, default=10000)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = prepared_at(prepared(args), 16)
    one_seconds, one_rows = timed_rerank(1, args, data)
    n_seconds, n_rows = timed_rerank(args.nproc, args, data)
    print(json.dumps({"benchmark": "rerank_ranks", "cells": args.cells, "epochs": args.epochs, "nproc": args.nproc,
                      "seconds_1": round(one_seconds, 1), f"seconds_{args.nproc}": round(n_seconds, 1),
                      "ratio": round(n_seconds / one_seconds, 3), "identical_rows": one_rows == n_rows,
                      "same_winner": winner(one_rows)["arch"] == winner(n_rows)["arch"]}))


if __name__ == "__main__":
    main()
