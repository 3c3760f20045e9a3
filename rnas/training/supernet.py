"""Training and scoring the weight-sharing supernet (docs/algorithm.md §2, §5).

One trainer lives across stages: the warmup stage trains it on the seed pool and saves its
state; the sample stage loads that state and continues on each round's pool. The cosine
learning-rate schedule therefore spans ``total_epochs``, every stage's epochs together.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rnas.artifacts import load_checkpoint, save_checkpoint
from rnas.config import require
from rnas.data.images import ImageBatches, ImageSplit, fixed_batches
from rnas.device import autocast, memory_format, use_channels_last
from rnas.spaces.base import Arch, SearchSpace
from rnas.training.distributed import DistributedContext
from rnas.training.progress import CountProgress, Progress
from rnas.training.step import (ClassifierTrainConfig, DivergenceGuard, apply_gradients, batch_totals,
                              optimizer_step)

Batch = tuple[torch.Tensor, torch.Tensor]
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class SupernetTrainConfig(ClassifierTrainConfig):
    eval_batches: int = 4            # fixed validation batches, the same for every architecture
    eval_batch_size: int = 500
    #: pool: each step trains one path drawn uniformly from the pool. fair: each batch trains the
    #: paths of ``fair_paths`` (drawn from the whole space), their gradients summed into one step
    #: (FairNAS's strict fairness: every op of every edge trained equally often)
    path_sampling: Literal["pool", "fair"] = "pool"
    #: what ``score`` measures on the validation batches: accuracy, or the mean cross-entropy (a
    #: finer signal from a partly trained supernet: benchmarks/nb201_supernet/levers.csv)
    score_by: Literal["accuracy", "loss"] = "accuracy"

    def check(self) -> None:
        super().check()
        require(self.eval_batches > 0, "eval_batches", "must be > 0")
        require(self.eval_batch_size > 0, "eval_batch_size", "must be > 0")


def fair_paths(space: SearchSpace, rng: random.Random) -> list[Arch]:
    """As many paths as the widest slot has values, which together take every value of every slot
    once, in random order (a narrower slot repeats random values of its own to fill up)."""
    width = max(slot.n_choices for slot in space.slots)
    columns = [rng.sample(range(slot.n_choices), slot.n_choices)
               + [rng.randrange(slot.n_choices) for _ in range(width - slot.n_choices)] for slot in space.slots]
    return [tuple(column[k] for column in columns) for k in range(width)]


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except that batch norm normalises with each batch's own statistics and leaves
    its running estimates untouched (shared weights' running statistics fit no single path)."""
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, tracked in zip(norms, tracking):
            m.track_running_stats = tracked
        model.train(was_training)


class SupernetTrainer:
    """SGD with a cosine schedule over ``total_epochs``; each step trains one path.

    ``model(x, arch) -> logits``. Deterministic given ``seed`` (and the data's seed).
    """

    def __init__(self, model: nn.Module, cfg: SupernetTrainConfig, device: torch.device,
                 total_epochs: int, seed: int, dist: DistributedContext | None = None):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.cfg, self.device, self.total_epochs = cfg, device, total_epochs
        self.dist = dist if dist is not None else DistributedContext(device=device)
        self.model = model.to(device, memory_format=memory_format(device))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr_max, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total_epochs,
                                                                    eta_min=cfg.lr_min)
        self.epoch = 0
        # Samples the path of every step; seeded identically on every rank so all ranks agree.
        self.rng = random.Random(seed)
        self.divergence = DivergenceGuard(device)

    # --- data ---------------------------------------------------------------------------
    def train_batches(self, split: ImageSplit, seed: int) -> ImageBatches:
        """This rank's shard of shuffled, augmented training batches of ``cfg.batch_size`` in all
        (the data draws each global batch, and its augmentation, independently of the world size)."""
        return ImageBatches(split, self.cfg.batch_size, self.device,
                            shuffle=True, augment=self.cfg.augment, seed=seed, drop_last=True,
                            channels_last=use_channels_last(self.device), shard=self.dist.shard)

    def score_batches(self, split: ImageSplit) -> list[Batch]:
        """The fixed validation batches every architecture is scored on."""
        return fixed_batches(split, self.cfg.eval_batches, self.cfg.eval_batch_size, self.device,
                             channels_last=use_channels_last(self.device))

    # --- training -----------------------------------------------------------------------
    def train_epochs(self, archs: Sequence[Arch], n_epochs: int, batches: ImageBatches,
                     on_epoch: EpochCallback | None = None, label: str = "supernet") -> list[dict[str, Any]]:
        """Train ``n_epochs`` more epochs, each step on one architecture drawn uniformly from ``archs``.

        Returns one record per epoch; ``on_epoch`` gets each record as it is made (main rank only).
        """
        if not archs:
            raise ValueError("train_epochs: no architectures to train")
        if len(batches) == 0:
            raise ValueError(f"train_epochs: the data holds no full batch of {self.cfg.batch_size}")
        if self.epoch + n_epochs > self.total_epochs:
            raise ValueError(f"train_epochs: {n_epochs} more epochs after epoch {self.epoch} would run past "
                             f"the {self.total_epochs}-epoch learning-rate schedule")
        progress = (Progress(label, self.epoch, self.epoch + n_epochs, self.total_epochs)
                    if self.dist.is_main else None)
        history = []
        for i in range(n_epochs):
            record = self._train_epoch(archs, batches, progress)
            self.divergence.check(record["epoch"], record["lr"], last=i + 1 == n_epochs)
            history.append(record)
            if on_epoch is not None and self.dist.is_main:
                on_epoch(record)
        return history

    def _train_epoch(self, archs: Sequence[Arch], batches: ImageBatches,
                     progress: Progress | None) -> dict[str, Any]:
        if progress is not None:
            progress.begin_epoch(self.epoch)
        batches.set_epoch(self.epoch)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, images: synced once per epoch
        start = time.perf_counter()
        for done, (x, y) in enumerate(batches, start=1):
            if self.cfg.path_sampling == "fair":
                totals += self._train_fair_step(x, y, fair_paths(self.model.space, self.rng))
            else:
                totals += self._train_step(x, y, self.rng.choice(archs))
            if progress is not None and progress.due():
                loss_sum, correct, images = totals.tolist()
                progress.batch(done, len(batches), loss_sum / images, correct / images, int(images))
        loss_sum, correct, images = self.dist.sum(totals).tolist()
        seconds = time.perf_counter() - start
        self.dist.average_buffers(self.model)
        self.scheduler.step()
        self.epoch += 1
        record = {"epoch": self.epoch, "lr": lr, "loss": loss_sum / images,
                  "accuracy": correct / images, "images_per_s": images / seconds,
                  "seconds": seconds, "n_archs": len(archs)}
        if progress is not None:
            progress.end_epoch(record["loss"], record["accuracy"], record["images_per_s"])
        return record

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, arch: Arch) -> torch.Tensor:
        with autocast(self.device, self.cfg.mixed_precision):
            logits = self.model(x, arch)
            loss = F.cross_entropy(logits, y)
        optimizer_step(self.model, self.optimizer, loss, self.dist, self.cfg.grad_clip)
        self.divergence.step(loss)
        return batch_totals(loss, logits, y)

    def _train_fair_step(self, x: torch.Tensor, y: torch.Tensor, paths: list[Arch]) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(3, device=self.device)
        for arch in paths:  # each path's graph is freed by its backward before the next is built
            with autocast(self.device, self.cfg.mixed_precision):
                logits = self.model(x, arch)
                loss = F.cross_entropy(logits, y)
            loss.backward()
            self.divergence.step(loss)
            totals += batch_totals(loss, logits, y)
        apply_gradients(self.model, self.optimizer, self.dist, self.cfg.grad_clip)
        return totals / len(paths)

    # --- scoring ------------------------------------------------------------------------
    def score(self, archs: Sequence[Arch], batches: Sequence[Batch], label: str = "score") -> list[float]:
        """Each architecture's accuracy or mean cross-entropy (``score_by``) on the same ``batches``;
        ranks split the architectures."""
        totals = torch.zeros(len(archs), device=self.device)
        mine = range(self.dist.rank, len(archs), self.dist.world_size)
        progress = CountProgress(label, "scored", len(mine), "architectures") if self.dist.is_main else None
        by_loss = self.cfg.score_by == "loss"
        with batch_statistics(self.model), torch.no_grad(), autocast(self.device, self.cfg.mixed_precision):
            for done, i in enumerate(mine, start=1):
                for x, y in batches:
                    logits = self.model(x, archs[i])
                    totals[i] += (F.cross_entropy(logits.float(), y, reduction="sum") if by_loss
                                  else (logits.argmax(1) == y).sum())
                if progress is not None:
                    progress.update(done)
        n_images = sum(len(y) for _, y in batches)
        return (self.dist.sum(totals) / n_images).tolist()

    # --- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                "total_epochs": self.total_epochs, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["total_epochs"] != self.total_epochs:
            raise ValueError(f"supernet state follows a {state['total_epochs']}-epoch schedule, "
                             f"this trainer a {self.total_epochs}-epoch one")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        version, internal, gauss_next = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss_next))

    def save(self, path: str | os.PathLike) -> None:
        """Write the state atomically; a no-op on every rank but the main one."""
        if self.dist.is_main:
            save_checkpoint(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_checkpoint(path, keys=("model", "optimizer", "scheduler", "epoch", "total_epochs",
                                                         "rng")))
