"""How well a short stand-alone training ranks NB201 cells, the measurement `rerank` makes.

    python benchmarks/nb201_supernet/standalone.py --data ../shared/data/cifar10-train-jpg.tar.gz \
        --table ../shared/data/nb201/cifar10.csv --cells 30 --epochs 8 --out standalone_random30_e8.csv
    python benchmarks/nb201_supernet/standalone.py ... --from-scores scores.csv --cells 20 --epochs 10
    python benchmarks/nb201_supernet/standalone.py ... --from-rerank tuning/runs/seed100/rerank.csv --cells 20 --epochs 20
    python benchmarks/nb201_supernet/standalone.py ... --random --seed 0 --cells 200 --budget-cpu-seconds 2145

Trains each cell from scratch as the rerank stage of `nb201-cpu` does, through the same call
(``ImageTask.retrain``: the NB201 network at C=8, N=1 on 10,000 training images at 16x16, crop and
flip, SGD with nesterov, cosine lr 0.05 -> 0, weight decay 5e-4, batch 64, --seed) and records the validation accuracy and loss after every epoch
with the cell's true accuracy. The cells: the first --cells of the pipeline's reference cells
(``rnas.judging.truth.reference_cells``), or with --from-scores the best --cells of a ``levers.py
--scores-out`` file by supernet loss score (the candidates a re-ranking gets), or with --random
random cells drawn with --seed, or with --from-rerank the candidates of a pipeline run (to measure
another fidelity on the cells a re-ranking gets): with --budget-cpu-seconds, as many as that CPU time trains, which is
the honest baseline of a search that costs that time (the best of them by validation). The budget is
CPU time, not wall time, so that other work on a shared machine does not shrink it. Writes one row per
cell to --out and prints one JSON line per epoch count: Kendall tau, Spearman, precision@10% of the
validation accuracy against the table, and the true accuracy of the cell it picks. The protocol
(rnas.judging.truth.Judging): a tuning --seed (100 and up, the default) takes the tuning reference cells and
judges against the validation column; a reported seed the reported cells and the test column.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
import torch

from benchmarks.nb201_supernet.levers import load_resized, prepared
from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.data.images import AugmentConfig, ImageSplit, load_split
from rnas.data.prepare import resized
from rnas.networks.nb201 import NB201Config
from rnas.spaces.nb201 import NB201Space
from rnas.tasks.base import RunEnv
from rnas.tasks.image import ImageTask
from rnas.training.child import ChildTrainConfig, child_batches, evaluate_classifier
from rnas.training.distributed import DistributedContext
from rnas.judging.truth import Judging, TruthConfig, load_truth, ranking, reference_cells, true_accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 ImageFolder folder or .tar.gz")
    parser.add_argument("--table", required=True)
    parser.add_argument("--cache", default="/tmp/rnas-nb201-levers", help="prepared data (shared with levers.py)")
    parser.add_argument("--max-train", type=int, default=10000)
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--from-scores", help="a levers.py --scores-out CSV: its best cells by loss score")
    parser.add_argument("--from-rerank", help="a pipeline run's rerank.csv: its candidates, in search order")
    parser.add_argument("--random", action="store_true", help="random cells drawn with --seed")
    parser.add_argument("--budget-cpu-seconds", type=float, help="train no new cell once this CPU time is spent")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--valid-every", type=int, default=1,
                        help="validate after every this many epochs and after the last (0: after the last only, "
                             "as nb201-cpu's rerank does)")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=100, help="the run's seed (100 and up: a tuning seed); it trains the cells")
    parser.add_argument("--train-seed", type=int, help="trains the cells instead of --seed (rerank.repeats' other trainings)")
    parser.add_argument("--held-out", type=int, nargs="+", default=[],
                        help="also score each trained network on this many training images it never saw (the "
                             "prepared training split's leftover beyond --max-train, in a fixed shuffled order; "
                             "nested sizes): columns held_out_acc_N, held_out_loss_N")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space, device = NB201Space(), torch.device("cpu")
    judging = Judging.of(args.seed, TruthConfig())
    oracle = load_truth(TruthConfig(table=args.table, report_col=judging.column), space, key="--table")
    base = prepared(args)
    data = prepared_at(base, args.resolution)
    held_out = held_out_split(args, base) if args.held_out else None
    valid_images = len(load_split(data, "valid"))
    if args.from_scores:
        frame = pd.read_csv(args.from_scores).sort_values("loss", ascending=False, kind="stable")
        cells = [space.from_str(a) for a in frame["arch"][:args.cells]]
    elif args.from_rerank:
        frame = pd.read_csv(args.from_rerank).sort_values("search_rank", kind="stable")
        cells = [space.from_str(a) for a in frame["arch"][:args.cells]]
    elif args.random:
        cells = space.sample_unique(args.cells, random.Random(args.seed))
    else:
        cells = reference_cells(space, args.cells, args.seed)
    child, cfg = child_and_recipe(args.channels, args.epochs, args.valid_every)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    env = RunEnv(space, device, train_seed, provenance={}, dist=DistributedContext(device=device))
    rows, checkpoint = [], Path(args.out).with_suffix(".ckpt")
    started = time.process_time()
    for arch, truth in zip(cells, true_accuracies(oracle, cells)):
        if args.budget_cpu_seconds is not None and time.process_time() - started >= args.budget_cpu_seconds:
            break
        torch.manual_seed(train_seed)
        start = time.process_time()
        retrained = ImageTask().retrain(env, space.to_str(arch), data, child=child, train=cfg, train_on_valid=False,
                                        checkpoint=checkpoint, fingerprint=space.to_str(arch))
        checkpoint.unlink()
        validated = [h for h in retrained.history if "valid_accuracy" in h]
        held_out_cols = held_out_scores(retrained.model, held_out, args.held_out, cfg, env.dist)
        rows.append({"arch": space.to_str(arch), "truth": truth, "cpu_seconds": round(time.process_time() - start, 1),
                     "valid_images": valid_images,
                     **{f"valid_acc_{h['epoch']}": h["valid_accuracy"] for h in validated},
                     **{f"valid_loss_{h['epoch']}": h["valid_loss"] for h in validated}, **held_out_cols})
        pd.DataFrame(rows).to_csv(args.out, index=False)
    summarise(pd.DataFrame(rows))


def child_and_recipe(channels: int, epochs: int, valid_every: int = 1) -> tuple[NB201Config, ChildTrainConfig]:
    """The network and the short training of `nb201-cpu`'s rerank, at ``channels`` for ``epochs``,
    validating every ``valid_every`` epochs and after the last (0: after the last only)."""
    child = NB201Config(cells_per_stage=1, channels=channels)
    return child, ChildTrainConfig(epochs=epochs, batch_size=64, lr_max=0.05, lr_min=0.0, nesterov=True,
                                   weight_decay=5e-4, drop_path_prob=0.0, auxiliary_weight=0.0,
                                   augment=AugmentConfig(crop_padding=2, flip=True), valid_every=valid_every)


def prepared_at(data: Path, resolution: int) -> Path:
    """The train and valid splits of the prepared folder ``data`` resized to ``resolution``, as a prepared
    folder beside it (made once), normalised with the full-size split's mean and std as levers.py does."""
    folder = data.with_name(f"{data.name}_r{resolution}")
    if not (folder / "meta.json").exists():
        with atomic_dir(folder) as tmp:
            for split in ("train", "valid"):
                s = load_resized(data, split, resolution)
                torch.save({"images": s.images, "labels": s.labels}, tmp / f"{split}.pt")
            write_json(tmp / "meta.json", {**read_json(data / "meta.json"), "resolution": resolution})
    return folder


def held_out_split(args: argparse.Namespace, base: Path) -> ImageSplit:
    """The prepared training images that --max-train left out, at the training split's resolution and
    normalisation, in an order shuffled once with a fixed seed (so a first N is a class-mixed sample).
    Found by content: the full training split (prepared once, --max-train none) minus the trained subset."""
    full = load_split(prepared(argparse.Namespace(**{**vars(args), "max_train": None})), "train")
    trained = load_split(base, "train")
    seen = {bytes(image.numpy()) for image in trained.images}
    left = torch.tensor([i for i, image in enumerate(full.images) if bytes(image.numpy()) not in seen])
    left = left[torch.randperm(len(left), generator=torch.Generator().manual_seed(0))]
    if max(args.held_out) > len(left):
        raise SystemExit(f"--held-out: {max(args.held_out)} images asked, {len(left)} left out of training")
    return ImageSplit(resized(full.images[left], args.resolution), full.labels[left], trained.classes,
                      trained.mean, trained.std)


def held_out_scores(model: torch.nn.Module, held_out: ImageSplit | None, sizes: list[int],
                    cfg: ChildTrainConfig, dist: DistributedContext) -> dict[str, float]:
    """The trained network's accuracy and loss on the first N held-out images, for each N in ``sizes``:
    each image is scored once, segment by segment, and the segments' means are accumulated."""
    scores, bounds, correct, loss = {}, [0, *sorted(sizes)], 0.0, 0.0
    for start, end in zip(bounds, bounds[1:]) if held_out is not None else []:
        segment = dataclasses.replace(held_out, images=held_out.images[start:end], labels=held_out.labels[start:end])
        metrics = evaluate_classifier(model, child_batches(segment, cfg, dist, train=False), dist, cfg.mixed_precision)
        correct, loss = correct + metrics["accuracy"] * (end - start), loss + metrics["loss"] * (end - start)
        scores.update({f"held_out_acc_{end}": correct / end, f"held_out_loss_{end}": loss / end})
    return scores


def validated_epochs(frame: pd.DataFrame) -> list[int]:
    """The epochs a table of this script holds validation accuracies for (``valid_acc_<epoch>``), in order."""
    return sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("valid_acc_"))


def summarise(frame: pd.DataFrame) -> None:
    for epoch in validated_epochs(frame):
        scores = frame[f"valid_acc_{epoch}"].tolist()
        quality = ranking(scores, frame["truth"].tolist())
        print(json.dumps({"epochs": epoch, "cells": len(frame), **{k: round(v, 3) for k, v in quality.items()},
                          "pick_true_acc": frame["truth"][frame[f"valid_acc_{epoch}"].idxmax()]}))


if __name__ == "__main__":
    main()
