"""How well the NB201 weight-sharing supernet ranks cells on a CPU budget, one lever at a time.

    python benchmarks/nb201_supernet/levers.py --data ../shared/data/cifar10-train-jpg.tar.gz \
        --table ../shared/data/nb201/cifar10.csv --epochs 6 --label base

Trains the pipeline's supernet (rnas.networks.nb201 with rnas.training.supernet, as the warmup
stage does: one path per step drawn from a pool of random cells) on real CIFAR-10, scores the
pipeline's reference cells (rnas.truth.reference_cells) on fixed validation images, and prints one
JSON line: the settings, Kendall tau / Spearman / precision@10% against the table, the true
accuracy of the supernet's pick, and the seconds (wall and CPU) spent training and scoring, with
the load average (on shared cores, CPU seconds are the figure that compares runs).
The data is prepared once per (max_train, seed) into --cache.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
import torch

from rnas.data.images import AugmentConfig, load_split
from rnas.data.prepare import DataConfig, prepare_dataset
from rnas.networks import SupernetConfig, SupernetNB201
from rnas.spaces.nb201 import NB201Space
from rnas.training.supernet import SupernetTrainConfig, SupernetTrainer
from rnas.truth import TruthConfig, load_truth, ranking, reference_cells, true_accuracies


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder folder or .tar.gz")
    parser.add_argument("--table", required=True, help="NB201 table (arch_str, test_acc_200ep, ...)")
    parser.add_argument("--cache", default="/tmp/rnas-nb201-levers", help="prepared data, per max_train")
    parser.add_argument("--label", default="run")
    parser.add_argument("--max-train", type=int, default=10000, help="training images (class balanced)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-max", type=float, default=0.05)
    parser.add_argument("--lr-min", type=float, default=0.001)
    parser.add_argument("--weight-decay", type=float, default=3e-4)
    parser.add_argument("--pool-size", type=int, default=100, help="random cells the paths are drawn from")
    parser.add_argument("--path-sampling", choices=("pool", "fair"), default="pool")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="random crop (padding 4) and flip while training")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=500, help="also the batch-norm statistics' batch")
    parser.add_argument("--reference", type=int, default=200, help="reference cells scored against the table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scores-out", help="also write each reference cell's score and true accuracy (CSV)")
    return parser.parse_args()


def prepared(args: argparse.Namespace) -> Path:
    folder = Path(args.cache) / f"train{args.max_train}"
    if not (folder / "meta.json").exists():
        prepare_dataset(DataConfig(dataset="imagefolder", root=args.data, valid_fraction=0.1, test_fraction=0.1,
                                   max_train=args.max_train), folder)
    return folder


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space, device = NB201Space(), torch.device("cpu")
    oracle = load_truth(TruthConfig(table=args.table), space, key="--table")
    data = prepared(args)
    train, valid = load_split(data, "train"), load_split(data, "valid")
    model = SupernetNB201(space, SupernetConfig(args.cells_per_stage, args.channels, 1), len(train.classes))
    cfg = SupernetTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_max=args.lr_max,
                              lr_min=args.lr_min, weight_decay=args.weight_decay, eval_batches=args.eval_batches,
                              eval_batch_size=args.eval_batch_size, path_sampling=args.path_sampling, augment=AugmentConfig(crop_padding=4 if args.augment else 0, flip=args.augment))
    cfg.check()
    trainer = SupernetTrainer(model, cfg, device, total_epochs=max(args.epochs, 1), seed=args.seed)
    pool = space.sample_unique(args.pool_size, random.Random(args.seed))
    start, cpu_start = time.perf_counter(), time.process_time()
    history = trainer.train_epochs(pool, args.epochs, trainer.train_batches(train, args.seed)) if args.epochs else []
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    cells = reference_cells(space, args.reference)
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = trainer.score(cells, trainer.score_batches(valid))
    score_seconds, score_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    truth = true_accuracies(oracle, cells)
    quality = ranking(scores, truth)
    if args.scores_out:
        pd.DataFrame({"arch": [space.to_str(a) for a in cells], "score": scores, "truth": truth}).to_csv(
            args.scores_out, index=False)
    result = {"label": args.label, **{k: v for k, v in vars(args).items() if k not in ("data", "table", "cache", "label", "scores_out")},
              "kendall_tau": round(quality["kendall_tau"], 4), "spearman": round(quality["spearman"], 4),
              "precision_at_10pct": round(quality["precision_at_10pct"], 3),
              "pick_true_acc": truth[max(range(len(scores)), key=scores.__getitem__)],
              "final_train_accuracy": round(history[-1]["accuracy"], 4) if history else None,
              "train_seconds": round(train_seconds, 1), "score_seconds": round(score_seconds, 1),
              "train_cpu_seconds": round(train_cpu_seconds, 1), "score_cpu_seconds": round(score_cpu_seconds, 1),
              "loadavg": os.getloadavg()[0]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
