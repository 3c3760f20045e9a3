"""Prepare an image-classification dataset once: uint8 tensors per split, plus ``meta.json``.

Sources (``data.dataset``):
- ``digits``: scikit-learn's bundled 8x8 digits (offline, 1 channel). It has no test split of its
  own; unless ``data.test_fraction`` is set, 15% is held out as test so a run on a laptop still
  ends with a test number.
- ``cifar10``: the python-pickle batches in ``<root>/cifar-10-batches-py`` (downloaded by
  torchvision only when ``data.download`` is true); train -> train + valid, official test -> test.
- ``imagefolder``: ``<split>/<class>/<image>`` (splits ``train``, ``valid`` or ``val``, ``test``)
  or ``<class>/<image>`` (all train), in a folder or a ``.tar.gz`` read as a stream (e.g.
  CINIC-10). Images are decoded to RGB and must all have one size.

Splits a source lacks are carved out of train (stratified per class, seeded); a fraction of 0
leaves the split out. ``max_train`` then subsamples train class-balanced, so valid and test do
not depend on it. Everything up to decoding (paths, layout, classes, split sizes) is checked
first, so a bad parameter fails in seconds.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from rnas.artifacts import atomic_dir, write_json
from rnas.config import require, to_dict
from rnas.data.images import SPLITS, class_balanced_order
from rnas.data.image_sources import Progress, Source, cifar10_source, digits_source, imagefolder_source
from rnas.errors import DataError



@dataclass
class DataConfig:
    dataset: Literal["digits", "cifar10", "imagefolder"] = "digits"
    #: cifar10: folder holding (or receiving) ``cifar-10-batches-py``; imagefolder: a folder or a .tar.gz
    root: str | None = None
    #: cifar10 only: allowed to download into ``root`` when missing
    download: bool = False
    #: held out of train for the search, when the source has no valid split
    valid_fraction: float = 0.1
    #: held out of train when the source has no test split (digits: 0 means 0.15)
    test_fraction: float = 0.0
    #: class-balanced subsample of train (CPU profiles); None = all
    max_train: int | None = None
    #: images resized to this side by area averaging (e.g. 16: 4x fewer pixels for a CPU-budget
    #: supernet); None keeps the source's size
    resolution: int | None = None
    seed: int = 0

    def check(self) -> None:
        require(0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")
        require(0.0 <= self.test_fraction < 1.0, "test_fraction", "must be in [0, 1)")
        require(self.valid_fraction + self.test_fraction < 1.0, "test_fraction",
                "valid_fraction + test_fraction must leave something to train on")
        require(self.dataset == "digits" or self.root is not None, "root",
                f"required for dataset {self.dataset!r}")
        require(not self.download or self.dataset == "cifar10", "download", "only cifar10 can be downloaded")
        require(self.max_train is None or self.max_train > 0, "max_train", "must be positive (or null for all)")
        require(self.resolution is None or self.resolution > 0, "resolution", "must be positive (or null for the source's)")


def prepare_dataset(cfg: DataConfig, out_dir: str | Path, progress: Progress | None = None,
                    key: str = "data") -> dict:
    """Write ``train.pt`` / ``valid.pt`` / ``test.pt`` and ``meta.json`` into ``out_dir``; return the meta.

    A split with no images (e.g. valid with ``valid_fraction`` 0) gets no file; its count is 0.
    ``key`` is where ``cfg`` sits in the parameters, for error messages (``data.search.root: ...``).
    """
    cfg.check()
    progress = progress or (lambda message: None)
    source = _open_source(cfg, key, progress)
    if len(source.classes) < 2:
        where = f"{key}.root: {cfg.root}" if cfg.root else f"{key}.dataset: {cfg.dataset}"
        raise DataError(f"{where}: {len(source.classes)} class ({', '.join(source.classes)}); "
                        "classification needs at least 2")
    selection = _select(source, cfg, key, progress)
    splits = {}
    for split, (from_split, rows) in selection.items():
        progress(f"decoding {split}: {len(rows)} images")
        images = source.pixels(from_split, rows)
        splits[split] = {"images": images if cfg.resolution is None else resized(images, cfg.resolution),
                         "labels": source.labels[from_split][rows]}
    mean, std = channel_mean_std(splits["train"]["images"])
    meta = {
        "dataset": cfg.dataset,
        "classes": source.classes,
        "counts": {split: len(splits[split]["labels"]) if split in splits else 0 for split in SPLITS},
        "taken_from": {split: selection[split][0] for split in selection},
        "image_shape": list(splits["train"]["images"].shape[1:]),
        "mean": mean,
        "std": std,
        "source": source.fingerprint,
        # identifies the prepared tensors: source content plus every parameter but where it lies
        "fingerprint": hashlib.sha256(json.dumps(
            {"source": source.fingerprint["sha256"], "config": {**to_dict(cfg), "root": None}},
            sort_keys=True).encode()).hexdigest(),
        "config": to_dict(cfg),
        "seed": cfg.seed,
    }
    with atomic_dir(out_dir) as tmp:
        for split, tensors in splits.items():
            torch.save(tensors, tmp / f"{split}.pt")
        write_json(tmp / "meta.json", meta)
    progress(f"wrote {out_dir}: {meta['counts']}")
    return meta


def resized(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` to ``[N, C, side, side]`` by area averaging, in chunks to bound memory."""
    if images.shape[-2:] == (side, side):
        return images
    return torch.cat([F.interpolate(chunk.float(), size=(side, side), mode="area").round_().to(torch.uint8)
                      for chunk in images.split(4096)])


def channel_mean_std(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale, exact, from a 256-bin histogram per channel."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        counts = torch.bincount(channel.reshape(-1), minlength=256).double()
        p = counts / counts.sum()
        mean = float((p * values).sum())
        means.append(mean)
        stds.append(math.sqrt(max(float((p * values.square()).sum()) - mean * mean, 0.0)))
    return means, stds


# --- choosing which images go where ---------------------------------------------------------


def _select(source: Source, cfg: DataConfig, key: str,
            progress: Progress) -> dict[str, tuple[str, torch.Tensor]]:
    """split -> (source split it is taken from, sorted row indices into that source split)."""
    for split in ("valid", "test"):
        if split in source.labels and getattr(cfg, f"{split}_fraction") > 0:
            progress(f"the source has its own {split} split: {key}.{split}_fraction is not used")
    generator = torch.Generator().manual_seed(cfg.seed)
    train_labels = source.labels["train"]
    carve = {"valid": 0.0 if "valid" in source.labels else cfg.valid_fraction,
             "test": 0.0 if "test" in source.labels else cfg.test_fraction or source.default_test_fraction}
    train, valid, test = _stratified_split(train_labels, (carve["valid"], carve["test"]), generator)
    if cfg.max_train is not None and len(train) > cfg.max_train:
        keep = class_balanced_order(train_labels[train], generator)[: cfg.max_train]
        train = train[keep].sort().values
    selection = {"train": ("train", train)}
    for split, carved in (("valid", valid), ("test", test)):
        if split in source.labels:
            selection[split] = (split, torch.arange(len(source.labels[split])))
        elif carve[split] > 0:
            selection[split] = ("train", carved)
    for split, (_, rows) in selection.items():
        if len(rows) == 0:
            where = f"{key}.root: {cfg.root}" if cfg.root else f"{key}.dataset: {cfg.dataset}"
            raise DataError(f"{where}: the {split} split is empty (train has {len(train_labels)} images; "
                             f"see {key}.valid_fraction, {key}.test_fraction, {key}.max_train)")
    return selection


def _stratified_split(labels: torch.Tensor, fractions: tuple[float, ...],
                      generator: torch.Generator) -> list[torch.Tensor]:
    """Rows split per class: ``[rest, part_1, ...]`` with round(fraction * class size) per part."""
    shuffled = torch.randperm(len(labels), generator=generator)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for cls in labels.unique().tolist():
        rows = shuffled[labels[shuffled] == cls]
        start = 0
        for i, fraction in enumerate(fractions, start=1):
            take = round(fraction * len(rows))
            parts[i].append(rows[start:start + take])
            start += take
        parts[0].append(rows[start:])
    return [torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.long) for p in parts]


def _open_source(cfg: DataConfig, key: str, progress: Progress) -> Source:
    if cfg.dataset == "digits":
        return digits_source()
    root = Path(cfg.root)
    if not root.exists() and not (cfg.dataset == "cifar10" and cfg.download):
        raise FileNotFoundError(f"{key}.root: {root} does not exist")
    if cfg.dataset == "cifar10":
        return cifar10_source(root, cfg.download, key, progress)
    return imagefolder_source(root, f"{key}.root: {root}", progress)
