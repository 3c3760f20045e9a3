"""How well the NB201 weight-sharing supernet ranks cells on a CPU budget, one lever at a time.

    python benchmarks/nb201_supernet/levers.py --data ../shared/data/cifar10-train-jpg.tar.gz \
        --table ../shared/data/nb201/cifar10.csv --epochs 6 --label base

Trains the pipeline's supernet (rnas.networks.nb201 with rnas.training.supernet, as the warmup
stage does: one path per step drawn from a pool of random cells) on real CIFAR-10, scores the
pipeline's reference cells (rnas.judging.truth.reference_cells) on fixed validation images, and prints one
JSON line: the settings; for each score (validation accuracy, and minus the validation loss:
``loss_*``) Kendall tau / Spearman / precision@10% against the table and the true accuracy of the
supernet's pick; the seconds (wall and CPU) spent training and scoring, with the load average (on
shared cores, CPU seconds are the figure that compares runs). ``--save-weights`` and
``--load-weights`` let scoring levers (``--bn-recalibrate``) reuse one trained supernet.
The data is prepared once per (max_train, seed) into --cache.

``--signals`` also judges the combined ranking as ``nb201-cpu`` makes it (``combined_*``, and
``loss_combined_*`` with the loss-scored supernet): the supernet's rank at weight ``--supernet-weight``
and each signal's at 1 (rnas.search.ranking.combined_scores), the signals computed on the profile's
signal network (``--signal-channels``, ``--signal-cells-per-stage``, one batch of 64 training images).
``--pool-from signals`` trains on the cells the signals favour: the ``--pool-size`` best of
``--signal-candidates`` random cells by the signals' equal-weight rank ensemble.

The protocol (rnas.judging.truth.Judging): a tuning seed (100 and up, the default) scores the tuning
reference cells against the validation column; a reported seed the reported cells against test.
The rows of levers.csv before this rule were run on seeds 0-2 against test.
"""
from __future__ import annotations

import argparse
import contextlib
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

from rnas.data.images import AugmentConfig, ImageBatches, ImageSplit, load_split
from rnas.data.prepare import DataConfig, prepare_dataset, resized
from rnas.networks import NB201Config, SupernetNB201
from rnas.spaces.nb201 import NB201Space
from rnas.tasks.base import Supernet
from rnas.tasks.image import OBJECTIVES
from rnas.networks.ops import use_batch_statistics
from rnas.export import build_network
from rnas.search.ranking import combined_scores, signal_scores
from rnas.search.signals import SIGNALS
from rnas.training.supernet import SupernetTrainConfig, SupernetTrainer
from rnas.judging.truth import Judging, TruthConfig, load_truth, ranking, reference_cells, true_accuracies


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--label", default="run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-max", type=float, default=0.05)
    parser.add_argument("--lr-min", type=float, default=0.001)
    parser.add_argument("--weight-decay", type=float, default=3e-4)
    parser.add_argument("--pool-size", type=int, default=100, help="random cells the paths are drawn from")
    parser.add_argument("--path-sampling", choices=("pool", "fair"), default="pool")
    parser.add_argument("--pool-from", choices=("random", "signals"), default="random",
                        help="the pool: random cells, or the best of --signal-candidates by the signals")
    parser.add_argument("--signal-candidates", type=int, default=1000)
    parser.add_argument("--signals", nargs="*", default=[], choices=list(SIGNALS),
                        help="judge the combined ranking of the supernet and these signals (and pick the pool by them)")
    parser.add_argument("--supernet-weight", type=float, default=2.0, help="the supernet's weight in the ranking")
    parser.add_argument("--signal-channels", type=int, default=8)
    parser.add_argument("--signal-cells-per-stage", type=int, default=1)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="random crop (padding 4) and flip while training")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=500, help="also the batch-norm statistics' batch")
    parser.add_argument("--reference", type=int, default=200, help="reference cells scored against the table")
    parser.add_argument("--seed", type=int, default=100,
                        help="a tuning seed (100 and up: the tuning cells, judged on validation) or a reported one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=32,
                        help="train and score on images downsampled to this side (area averaging, as data.*.resolution)")
    parser.add_argument("--bn-recalibrate", type=int, default=0, metavar="BATCHES",
                        help="before scoring a cell, re-estimate batch-norm statistics on this many training "
                             "batches of its path and score in eval mode (0: each scored batch's own statistics)")
    parser.add_argument("--save-weights", help="write the trained supernet's weights here")
    parser.add_argument("--load-weights", help="skip training: score the supernet saved by --save-weights")
    parser.add_argument("--scores-out", help="also write each reference cell's score and true accuracy (CSV)")
    args = parser.parse_args()
    if args.pool_from == "signals" and not args.signals:
        parser.error("--pool-from signals needs --signals")
    return args


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The CIFAR-10 images and the NB201 table, and where the images are prepared (see ``prepared``)."""
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder folder or .tar.gz")
    parser.add_argument("--table", required=True, help="NB201 table (arch_str, valid_acc_200ep, test_acc_200ep, ...)")
    parser.add_argument("--cache", default="/tmp/rnas-nb201-levers", help="prepared data, per max_train")
    parser.add_argument("--max-train", type=int, default=10000, help="training images (class balanced)")


def prepared(args: argparse.Namespace) -> Path:
    folder = Path(args.cache) / f"train{args.max_train}"
    if not (folder / "meta.json").exists():
        prepare_dataset(DataConfig(dataset="imagefolder", root=args.data, valid_fraction=0.1, test_fraction=0.1,
                                   max_train=args.max_train), folder)
    return folder


def load_resized(data: Path, split: str, resolution: int) -> ImageSplit:
    """A prepared split at ``resolution``, resized here rather than at prepare: normalised with the
    32x32 split's mean and std, as measured."""
    s = load_split(data, split)
    return ImageSplit(resized(s.images, resolution), s.labels, s.classes, s.mean, s.std)


@contextlib.contextmanager
def recalibrated(model: torch.nn.Module, train: ImageSplit, n_batches: int):
    """Score with per-cell batch-norm statistics: the supernet keeps none (each batch normalises
    with its own), so give every batch norm running averages, re-estimated for each cell on
    ``n_batches`` fixed training batches of its path, and score in eval mode with them."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    calibration = [x for (x, _), _ in zip(ImageBatches(train, 256, torch.device("cpu"), shuffle=True, seed=1),
                                           range(n_batches))]
    forward = model.forward

    def calibrated_forward(x, arch):
        for m in norms:
            m.track_running_stats, m.momentum = True, None  # None: a cumulative average
            m.running_mean, m.running_var = torch.zeros(m.num_features), torch.ones(m.num_features)
            m.num_batches_tracked = torch.tensor(0)
        model.train()
        for batch in calibration:
            forward(batch, arch)
        model.eval()
        return forward(x, arch)

    model.forward = calibrated_forward
    try:
        yield
    finally:
        model.forward = forward
        use_batch_statistics(model)


def nb201_signals(train: ImageSplit, archs: list[str], child: NB201Config, batch_size: int, names: list[str],
                  seed: int) -> dict[str, list[float]]:
    """The signals ``names`` of ``archs`` (space strings) as the pipeline's sample stage computes them
    (rnas.tasks.image): each cell built as ``child``, on one batch of ``batch_size`` training images drawn by ``seed``."""
    images, labels = next(iter(ImageBatches(train, batch_size, torch.device("cpu"), shuffle=True, seed=seed)))
    return signal_scores(lambda arch: build_network(arch, child, len(train.classes), train.images.shape[1], "nb201"),
                         archs, images, labels, names, seed)


def cell_signals(args: argparse.Namespace, space: NB201Space, train: ImageSplit, cells: list) -> dict[str, list[float]]:
    """The signals ``args.signals`` of ``cells`` on the profile's signal network and batch (64 images)."""
    return nb201_signals(train, [space.to_str(c) for c in cells],
                         NB201Config(args.signal_cells_per_stage, args.signal_channels), 64, args.signals, args.seed)


def signal_favoured_pool(args: argparse.Namespace, space: NB201Space, train: ImageSplit) -> list:
    """The ``pool_size`` best of ``signal_candidates`` random cells by the signals' equal-weight ranking."""
    candidates = space.sample_unique(args.signal_candidates, random.Random(args.seed))
    combined = combined_scores(cell_signals(args, space, train, candidates), dict.fromkeys(args.signals, 1.0))
    order = sorted(range(len(candidates)), key=lambda i: -combined[i])  # stable: ties keep the draw's order
    return [candidates[i] for i in order[:args.pool_size]]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space, device = NB201Space(), torch.device("cpu")
    judging = Judging.of(args.seed, TruthConfig())  # the protocol: a tuning seed never sees the test column
    oracle = load_truth(TruthConfig(table=args.table, report_col=judging.column), space, key="--table")
    data = prepared(args)
    train, valid = (load_resized(data, split, args.resolution) for split in ("train", "valid"))
    model = SupernetNB201(space, NB201Config(args.cells_per_stage, args.channels), len(train.classes))
    cfg = SupernetTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_max=args.lr_max,
                              lr_min=args.lr_min, weight_decay=args.weight_decay, eval_batches=args.eval_batches,
                              eval_batch_size=args.eval_batch_size, path_sampling=args.path_sampling, augment=AugmentConfig(crop_padding=args.resolution // 8 if args.augment else 0,
                                                                    flip=args.augment))
    cfg.check()
    trainer = SupernetTrainer(model, cfg, device, total_epochs=max(args.epochs, 1), seed=args.seed)
    pool_start = time.process_time()
    pool = (signal_favoured_pool(args, space, train) if args.pool_from == "signals"
            else space.sample_unique(args.pool_size, random.Random(args.seed)))
    pool_cpu_seconds = time.process_time() - pool_start
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.load_weights:
        model.load_state_dict(torch.load(args.load_weights))
        history = []
    else:
        history = trainer.train_epochs(pool, args.epochs, trainer.train_batches(train, args.seed)) if args.epochs else []
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if args.save_weights:
        torch.save(model.state_dict(), args.save_weights)
    cells = reference_cells(space, args.reference, args.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    batches = trainer.score_batches(valid)
    scores = {}  # higher is better, as the pipeline's search sees them (rnas.tasks.image.OBJECTIVES)
    with recalibrated(model, train, args.bn_recalibrate) if args.bn_recalibrate else contextlib.nullcontext():
        for by in ("accuracy", "loss"):
            trainer.cfg.score_by = by
            scores[by] = Supernet(trainer, None, batches, OBJECTIVES[by]).score(cells)
    score_seconds, score_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    truth = true_accuracies(oracle, cells)
    if args.signals:
        signals = cell_signals(args, space, train, cells)
        for by in ("accuracy", "loss"):
            scores[f"combined_{by}"] = combined_scores({"supernet": scores[by], **signals},
                                                       {"supernet": args.supernet_weight, **dict.fromkeys(signals, 1.0)})
    quality = {by: ranking(by_scores, truth) for by, by_scores in scores.items()}
    if args.scores_out:
        pd.DataFrame({"arch": [space.to_str(a) for a in cells], "accuracy": scores["accuracy"],
                      "loss": scores["loss"], "truth": truth}).to_csv(args.scores_out, index=False)
    skip = ("data", "table", "cache", "label", "scores_out", "save_weights", "load_weights")
    result = {"label": args.label, **{k: v for k, v in vars(args).items() if k not in skip},
              "role": judging.role, "column": judging.column}
    prefixes = (("accuracy", ""), ("loss", "loss_"))  # the accuracy columns keep their old names
    if args.signals:
        prefixes += (("combined_accuracy", "combined_"), ("combined_loss", "loss_combined_"))
    for by, prefix in prefixes:
        result.update({f"{prefix}kendall_tau": round(quality[by]["kendall_tau"], 4),
                       f"{prefix}spearman": round(quality[by]["spearman"], 4),
                       f"{prefix}precision_at_10pct": round(quality[by]["precision_at_10pct"], 3),
                       f"{prefix}pick_true_acc": truth[max(range(len(cells)), key=scores[by].__getitem__)]})
    result.update({"final_train_accuracy": round(history[-1]["accuracy"], 4) if history else None,
                   "train_seconds": round(train_seconds, 1), "score_seconds": round(score_seconds, 1),
                   "train_cpu_seconds": round(train_cpu_seconds, 1), "score_cpu_seconds": round(score_cpu_seconds, 1),
                   "pool_cpu_seconds": round(pool_cpu_seconds, 1),
                   "loadavg": os.getloadavg()[0]})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
