"""Loading prepared image splits and iterating over them in batches, on any device.

A prepared split (see ``rnas.data.prepare``) is small enough to live on the device as uint8, so
batches are gathered, augmented and normalised there with tensor ops: no worker processes and no
per-batch host-to-device copies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from rnas.artifacts import load_checkpoint, read_json
from rnas.config import require

SPLITS = ("train", "valid", "test")
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ImageSplit:
    images: torch.Tensor          # uint8 [N, C, H, W]
    labels: torch.Tensor          # int64 [N]
    classes: list[str]
    mean: tuple[float, ...]       # per channel, in [0, 1], of the prepared TRAIN split
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.labels)


def load_split(prepared_dir: str | Path, split: str) -> ImageSplit:
    """One split of a folder written by ``prepare_dataset``; ``split`` is train, valid or test."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected {', '.join(SPLITS)})")
    prepared_dir = Path(prepared_dir)
    meta = read_json(prepared_dir / "meta.json")
    path = prepared_dir / f"{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the prepared data has no {split} split (counts {meta['counts']}); "
                                f"hold one out of train with data.{split}_fraction")
    tensors = load_checkpoint(path)
    return ImageSplit(tensors["images"], tensors["labels"], list(meta["classes"]),
                      tuple(meta["mean"]), tuple(meta["std"]))


@dataclass
class AugmentConfig:
    crop_padding: int = 4         # random crop with zero padding; 0 = off
    flip: bool = True             # random horizontal flip
    cutout: int = 0               # cutout square side; 0 = off

    def check(self) -> None:
        require(self.crop_padding >= 0, "crop_padding", "must be >= 0")
        require(self.cutout >= 0, "cutout", "must be >= 0")


class ImageBatches:
    """Iterates (images float32 normalised [B,C,H,W] on `device`, labels int64 on `device`); the whole
    split lives on `device` (no per-batch host transfers on GPU); augmentation is done batched on tensors.

    Each iteration is one epoch with its own permutation and augmentation, both drawn from
    ``(seed, epoch)``; the epoch counter advances per iteration, ``set_epoch`` sets it to resume.
    ``shard=(rank, world)``: rank r gets every world-th sample of each global batch of
    ``batch_size``, augmented exactly as a single process would, so ``world`` processes together
    see the same global batches as one.
    """

    def __init__(self, split: ImageSplit, batch_size: int, device: torch.device, *, shuffle: bool,
                 augment: AugmentConfig | None = None, seed: int = 0, drop_last: bool = False,
                 channels_last: bool = False, shard: tuple[int, int] = (0, 1)):
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard {shard}: rank must be in [0, world)")
        if batch_size < 1 or batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of the world size {world}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        # normalise straight from uint8: (x / 255 - mean) / std == (x - 255 mean) / (255 std)
        self.shift = torch.tensor(split.mean, device=self.device).mul(255).view(1, -1, 1, 1)
        self.scale = torch.tensor(split.std, device=self.device).mul(255).view(1, -1, 1, 1)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.augment = augment if augment is not None else AugmentConfig(crop_padding=0, flip=False, cutout=0)
        self.seed, self.drop_last, self.channels_last = seed, drop_last, channels_last
        self.rank, self.world = rank, world
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        return self._batches(generator)

    def _batches(self, generator: torch.Generator) -> Iterator[Batch]:
        n = len(self.labels)
        order = (torch.randperm(n, generator=generator, device=self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            global_rows = order[start:start + self.batch_size]
            # drawn for the whole global batch, then sharded: augmentation independent of world size
            draws = torch.rand(len(global_rows), 5, generator=generator, device=self.device)[self.rank::self.world]
            rows = global_rows[self.rank::self.world]
            yield self._batch(rows, draws), self.labels[rows]

    def _batch(self, rows: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Gather, augment (``draws``: 5 uniforms per sample) and normalise one batch."""
        images = self.images[rows]
        augment = self.augment
        if augment.crop_padding:
            images = random_crop(images, augment.crop_padding, draws[:, 0], draws[:, 1])
        if augment.flip:
            images = torch.where((draws[:, 2] < 0.5).view(-1, 1, 1, 1), images.flip(3), images)
        x = (images.float() - self.shift) / self.scale
        if augment.cutout:
            x = cutout(x, augment.cutout, draws[:, 3], draws[:, 4])
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def random_crop(images: torch.Tensor, padding: int, u_y: torch.Tensor, u_x: torch.Tensor) -> torch.Tensor:
    """Per-sample crop of the zero-padded images at offsets ``floor(u * (2 padding + 1))``, u in [0, 1)."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    span = 2 * padding
    dy = (u_y * (span + 1)).long().clamp_(max=span)
    dx = (u_x * (span + 1)).long().clamp_(max=span)
    rows = (dy[:, None] + torch.arange(h, device=images.device)).view(b, 1, h, 1).expand(b, c, h, w + span)
    cols = (dx[:, None] + torch.arange(w, device=images.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def cutout(x: torch.Tensor, size: int, u_y: torch.Tensor, u_x: torch.Tensor) -> torch.Tensor:
    """Zero a ``size`` square per sample, centred anywhere in the image and clipped at its borders
    (DeVries & Taylor; as in DARTS/NAO, applied after normalisation)."""
    _, _, h, w = x.shape
    cy = (u_y * h).long().clamp_(max=h - 1)[:, None]
    cx = (u_x * w).long().clamp_(max=w - 1)[:, None]
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= cy - size // 2) & (ys < cy + size - size // 2)
    in_cols = (xs >= cx - size // 2) & (xs < cx + size - size // 2)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill(hole, 0.0)


def fixed_batches(split: ImageSplit, n_batches: int, batch_size: int, device: torch.device,
                  channels_last: bool = False) -> list[Batch]:
    """The same deterministic, class-balanced-ish subset every call: for comparable supernet scores.

    ``n_batches`` batches of ``batch_size`` (fewer if the split is smaller), classes interleaved so
    that every batch is as balanced as the split allows; no augmentation.
    """
    rows = class_balanced_order(split.labels.cpu(), torch.Generator().manual_seed(0))[: n_batches * batch_size]
    subset = ImageSplit(split.images[rows], split.labels[rows], split.classes, split.mean, split.std)
    return list(ImageBatches(subset, batch_size, device, shuffle=False, channels_last=channels_last))


def class_balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """All row indices with the classes interleaved (random order within a class), so that any
    prefix is as class-balanced as the labels allow."""
    shuffled = torch.randperm(len(labels), generator=generator)
    grouped = shuffled[torch.argsort(labels[shuffled], stable=True)]
    grouped_labels = labels[grouped]
    counts = torch.bincount(grouped_labels)
    rank_in_class = torch.arange(len(labels)) - (counts.cumsum(0) - counts)[grouped_labels]
    return grouped[torch.argsort(rank_in_class * len(counts) + grouped_labels, stable=True)]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 64-bit seed for one (seed, epoch) pair, stable across Python versions."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
