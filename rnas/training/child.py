"""Training a final network from scratch (docs/algorithm.md §6), resumable from a per-epoch checkpoint.

The checkpoint carries the caller's run fingerprint: an interrupted run with the same
fingerprint continues at the next epoch and ends with the weights an uninterrupted run would
have; a checkpoint with another fingerprint, or one that does not load, is set aside (renamed)
and training starts over.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from rnas.artifacts import resumable_checkpoint, save_checkpoint
from rnas.config import require
from rnas.data.images import AugmentConfig, ImageBatches, ImageSplit
from rnas.device import autocast, memory_format, use_channels_last
from rnas.networks import main_logits
from rnas.training.distributed import DistributedContext
from rnas.training.progress import Progress
from rnas.training.rng_state import RNG_KEYS, rng_state, set_rng_state
from rnas.training.step import ClassifierTrainConfig, DivergenceGuard, batch_totals, optimizer_step

EpochCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_KEYS = ("epoch", "history", "model", "optimizer", "scheduler", *RNG_KEYS)


@dataclass
class ChildTrainConfig(ClassifierTrainConfig):
    epochs: int = 600
    lr_max: float = 0.025
    lr_min: float = 0.0
    nesterov: bool = False           # Nesterov momentum (the NB201 recipe)
    auxiliary_weight: float = 0.4    # loss weight of the auxiliary head, if the network has one
    drop_path_prob: float = 0.2      # reached at the end of training, ramped linearly from 0
    compile: bool = False            # torch.compile the network
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(cutout=16))
    #: validate after every this many epochs and after the last; 0: after the last only (a large
    #: validation split then costs one pass, not one per epoch)
    valid_every: int = 1

    def check(self) -> None:
        super().check()
        require(self.epochs > 0, "epochs", "must be > 0")
        require(self.valid_every >= 0, "valid_every", "must be >= 0 (0: validate after the last epoch only)")
        require(self.auxiliary_weight >= 0, "auxiliary_weight", "must be >= 0")
        require(0 <= self.drop_path_prob < 1, "drop_path_prob", "must be in [0, 1)")
        require(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")


def drop_path_prob_at(cfg: ChildTrainConfig, epoch: int) -> float:
    """Drop-path probability during 0-based ``epoch``: 0 at the start, rising linearly."""
    return cfg.drop_path_prob * epoch / cfg.epochs


def validates_after(cfg: ChildTrainConfig, epoch: int) -> bool:
    """Whether 1-based ``epoch`` ends with a validation pass."""
    return epoch == cfg.epochs or (cfg.valid_every > 0 and epoch % cfg.valid_every == 0)


def child_batches(split: ImageSplit, cfg: ChildTrainConfig, dist: DistributedContext, *, train: bool,
                  seed: int = 0) -> ImageBatches:
    """This rank's shard: shuffled and augmented for training, in order and plain for evaluation."""
    return ImageBatches(split, cfg.batch_size, dist.device, shuffle=train,
                        augment=cfg.augment if train else None, seed=seed,
                        channels_last=use_channels_last(dist.device), shard=dist.shard)


def evaluate_classifier(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                        dist: DistributedContext | None = None,
                        mixed_precision: bool = True) -> dict[str, float]:
    """Mean cross-entropy and accuracy over ``batches`` (summed over ranks when sharded)."""
    device = next(model.parameters()).device
    totals = torch.zeros(3, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(device, mixed_precision):
        for x, y in batches:
            logits = main_logits(model(x)).float()
            correct = (logits.argmax(1) == y).sum().float()
            totals += torch.stack([F.cross_entropy(logits, y, reduction="sum"), correct,
                                   torch.full_like(correct, len(y))])
    model.train(was_training)
    if dist is not None:
        dist.sum(totals)
    loss_sum, correct, n_images = totals.tolist()
    return {"loss": loss_sum / n_images, "accuracy": correct / n_images}


class _ChildRun:
    """The state of one training run: network, optimizer, schedule, and what the checkpoint holds."""

    def __init__(self, model: nn.Module, cfg: ChildTrainConfig, device: torch.device,
                 dist: DistributedContext):
        self.cfg, self.device, self.dist = cfg, device, dist
        self.model = model.to(device, memory_format=memory_format(device))
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr_max, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs,
                                                                    eta_min=cfg.lr_min)
        self.history: list[dict[str, Any]] = []
        self.divergence = DivergenceGuard(device)

    def train_epoch(self, batches: ImageBatches, progress: Progress | None) -> dict[str, float]:
        self.model.train()
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, images: synced once per epoch
        start = time.perf_counter()
        for done, (x, y) in enumerate(batches, start=1):
            totals += self._step(x, y)
            if progress is not None and progress.due():
                loss_sum, correct, images = totals.tolist()
                progress.batch(done, len(batches), loss_sum / images, correct / images, int(images))
        loss_sum, correct, images = self.dist.sum(totals).tolist()
        seconds = time.perf_counter() - start
        self.dist.average_buffers(self.model)
        return {"train_loss": loss_sum / images, "train_accuracy": correct / images,
                "images_per_s": images / seconds, "seconds": seconds}

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.cfg.mixed_precision):
            logits, aux_logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
            total = loss if aux_logits is None else loss + self.cfg.auxiliary_weight * F.cross_entropy(aux_logits, y)
        optimizer_step(self.model, self.optimizer, total, self.dist, self.cfg.grad_clip)
        self.divergence.step(total)
        return batch_totals(loss, logits, y)

    def checkpoint(self, fingerprint: str) -> dict[str, Any]:
        # The RNG states make a resumed run draw the same drop-path masks as an uninterrupted one.
        return {"fingerprint": fingerprint, "epoch": len(self.history), "history": self.history,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), **rng_state(self.device)}

    def resume(self, path: str | os.PathLike, fingerprint: str) -> None:
        state = resumable_checkpoint(path, fingerprint, CHECKPOINT_KEYS, main=self.dist.is_main)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state, self.device)
        self.history = list(state["history"])
        if self.dist.is_main:
            print(f"[train] resuming {path} after epoch {state['epoch']}/{self.cfg.epochs}", file=sys.stderr)


def train_child(model: nn.Module, cfg: ChildTrainConfig, train: ImageBatches, valid: ImageBatches | None,
                device: torch.device, checkpoint_path: str | os.PathLike, run_fingerprint: str,
                on_epoch: EpochCallback | None = None,
                dist: DistributedContext | None = None) -> list[dict[str, Any]]:
    """Train ``model`` (``forward(x) -> (logits, aux_logits or None)``, attribute ``drop_path_prob``).

    Checkpoints after every epoch; ``run_fingerprint`` must change whenever anything that shapes
    the run does (architecture, configs, data, seed). Returns every epoch's record, those of a
    resumed run's earlier epochs included; ``on_epoch`` gets each new record (main rank only),
    after its checkpoint is written.
    """
    dist = dist if dist is not None else DistributedContext(device=device)
    run = _ChildRun(model, cfg, device, dist)
    run.resume(checkpoint_path, run_fingerprint)
    progress = Progress("train", len(run.history), cfg.epochs) if dist.is_main else None
    for epoch in range(len(run.history), cfg.epochs):
        run.model.drop_path_prob = drop_path_prob_at(cfg, epoch)
        train.set_epoch(epoch)
        if progress is not None:
            progress.begin_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"],
                                  "drop_path_prob": run.model.drop_path_prob}
        record.update(run.train_epoch(train, progress))
        run.divergence.check(epoch + 1, record["lr"], last=epoch + 1 == cfg.epochs)
        if valid is not None and validates_after(cfg, epoch + 1):
            metrics = evaluate_classifier(run.forward, valid, dist, cfg.mixed_precision)
            record.update(valid_loss=metrics["loss"], valid_accuracy=metrics["accuracy"])
        run.scheduler.step()
        run.history.append(record)
        if dist.is_main:
            save_checkpoint(checkpoint_path, run.checkpoint(run_fingerprint))
            note = f"valid acc {record['valid_accuracy']:.1%}" if "valid_accuracy" in record else ""
            progress.end_epoch(record["train_loss"], record["train_accuracy"],
                               record["images_per_s"], note)
            if on_epoch is not None:
                on_epoch(record)
    return run.history
