"""The image datasets ``rnas.data.prepare`` reads, each as a ``Source``: labels per split, and the
pixels decoded only when asked for. ``digits`` (scikit-learn's, offline), ``cifar10`` (the python
batches) and ``imagefolder`` (a folder or a ``.tar.gz`` read as a stream, e.g. CINIC-10)."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image

from rnas.errors import DataError

Progress = Callable[[str], None]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_FILES, "test_batch", "batches.meta")
DIGITS_TEST_FRACTION = 0.15


@dataclass
class Source:
    """A dataset before decoding: labels per split it has, and a way to get the pixels."""
    classes: list[str]
    labels: dict[str, torch.Tensor]                      # split -> int64 [N]
    pixels: Callable[[str, torch.Tensor], torch.Tensor]  # (split, indices) -> uint8 [n, C, H, W]
    fingerprint: dict[str, str]
    default_test_fraction: float = 0.0


def digits_source() -> Source:
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    sha = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    return Source(classes=[str(c) for c in digits.target_names], labels={"train": labels},
                   pixels=lambda split, rows: images[rows],
                   fingerprint={"kind": "sklearn digits (images + labels)", "sha256": sha},
                   default_test_fraction=DIGITS_TEST_FRACTION)


def cifar10_source(root: Path, download: bool, key: str, progress: Progress) -> Source:
    folder = root / CIFAR_FOLDER
    missing = [name for name in CIFAR_FILES if not (folder / name).is_file()]
    if missing and download:
        import torchvision  # the download helper only

        progress(f"downloading CIFAR-10 into {root}")
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        missing = [name for name in CIFAR_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{key}.root: CIFAR-10 not found in {folder} (missing {', '.join(missing)}); "
                                f"set {key}.download=true to download it there, or point {key}.root at the "
                                f"folder that holds {CIFAR_FOLDER}")
    sha = hashlib.sha256()
    batches = {}
    for name in CIFAR_FILES:
        raw = (folder / name).read_bytes()
        sha.update(name.encode() + raw)
        try:
            batches[name] = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise DataError(f"{key}.root: {folder / name} is not a CIFAR-10 batch file ({e})") from None

    def stack(names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names])
        return torch.from_numpy(images), torch.from_numpy(labels).long()

    train_images, train_labels = stack(CIFAR_TRAIN_FILES)
    test_images, test_labels = stack(("test_batch",))
    images = {"train": train_images, "test": test_images}
    return Source(classes=[n.decode() for n in batches["batches.meta"][b"label_names"]],
                   labels={"train": train_labels, "test": test_labels},
                   pixels=lambda split, rows: images[split][rows],
                   fingerprint={"kind": "cifar-10 batch files", "path": str(folder), "sha256": sha.hexdigest()})


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles of dicts of numpy arrays: refuse anything else a file might run."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        if module == "numpy.core.multiarray":  # the name numpy 1 wrote; numpy 2 moved it
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


@dataclass
class _ImageFile:
    path: str                  # relative to the root, POSIX
    content: bytes | Path      # bytes from a tar.gz, or the file to read


@dataclass
class _Listing:
    files: list[_ImageFile]    # sorted by path
    top_folders: set[str]      # to tell an empty split folder from a missing one
    fingerprint: dict[str, str]


@dataclass
class _ImageFolder:
    classes: list[str]
    files: dict[str, list[_ImageFile]] = field(default_factory=dict)   # split -> files
    labels: dict[str, torch.Tensor] = field(default_factory=dict)      # split -> int64


def imagefolder_source(root: Path, where: str, progress: Progress) -> Source:
    """``where`` ("data.root: <path>") starts every error message."""
    if root.is_dir():
        listing = _list_folder(root)
    elif root.name.endswith((".tar.gz", ".tgz")):
        listing = _read_tar_gz(root, where)
    else:
        raise DataError(f"{where} is neither a folder nor a .tar.gz")
    if not listing.files:
        raise DataError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    progress(f"found {len(listing.files)} images in {root}")
    folder = _parse_layout(listing, where)
    return Source(classes=folder.classes, labels=folder.labels,
                   pixels=lambda split, rows: _decode_all([folder.files[split][i] for i in rows.tolist()],
                                                          listing.files[0], where),
                   fingerprint=listing.fingerprint)


def _is_image(path: PurePosixPath) -> bool:
    # dot-files include macOS "._x.jpg" resource forks, which are not images despite the suffix
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in path.parts)


def _list_folder(root: Path) -> _Listing:
    files, listing = [], hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_file() and _is_image(rel):
            files.append(_ImageFile(str(rel), path))
            listing.update(f"{rel}\t{path.stat().st_size}\n".encode())
    return _Listing(files, {p.name for p in root.iterdir() if p.is_dir()},
                    {"kind": "folder listing (paths and sizes)", "path": str(root), "sha256": listing.hexdigest()})


def _read_tar_gz(path: Path, where: str) -> _Listing:
    """Stream the archive once (no extraction to disk): every image's bytes."""
    try:
        files, top_folders = _tar_members(path, where)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # not gzip, truncated, corrupt
        raise DataError(f"{where} is not a readable .tar.gz ({e})") from None
    files.sort(key=lambda f: f.path)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return _Listing(files, top_folders, {"kind": "tar.gz file", "path": str(path), "sha256": sha.hexdigest()})


def _tar_members(path: Path, where: str) -> tuple[list[_ImageFile], set[str]]:
    files, top_folders = [], set()
    with tarfile.open(path, "r|gz") as archive:
        for member in archive:
            name = PurePosixPath(member.name.removeprefix("./"))
            if name.is_absolute() or ".." in name.parts:  # never written to disk, but a sign of a bad archive
                raise DataError(f"{where}: refusing member {member.name!r} (an absolute path or one "
                                "leaving the archive)")
            if member.isdir() or len(name.parts) > 1:
                top_folders.add(name.parts[0])
            if member.isfile() and _is_image(name):
                files.append(_ImageFile(str(name), archive.extractfile(member).read()))
    return files, top_folders


def _parse_layout(listing: _Listing, where: str) -> _ImageFolder:
    """Group files by split and class: ``<split>/<class>/<image>`` or ``<class>/<image>``."""
    files = listing.files
    depths = {len(PurePosixPath(f.path).parts) for f in files}
    if depths not in ({2}, {3}):
        example = next(f.path for f in files if len(PurePosixPath(f.path).parts) not in (2, 3))
        raise DataError(f"{where}: expected <split>/<class>/<image> or <class>/<image> "
                         f"(all at one depth), found {example}")
    by_split: dict[str, list[tuple[str, _ImageFile]]] = {}
    for f in files:
        parts = PurePosixPath(f.path).parts
        split_folder, cls = (parts[0], parts[1]) if len(parts) == 3 else ("train", parts[0])
        if split_folder not in SPLIT_FOLDERS:
            raise DataError(f"{where}: unknown split folder {split_folder!r} "
                             f"(expected {', '.join(SPLIT_FOLDERS)})")
        by_split.setdefault(SPLIT_FOLDERS[split_folder], []).append((cls, f))
    if depths == {3}:
        empty = sorted(name for name in listing.top_folders & set(SPLIT_FOLDERS)
                       if SPLIT_FOLDERS[name] not in by_split)
        if empty:
            raise DataError(f"{where}: the split folder {empty[0]!r} has no images")
    if "train" not in by_split:
        raise DataError(f"{where}: has no train split (found {', '.join(sorted(by_split))})")
    classes = sorted({cls for cls, _ in by_split["train"]})
    index = {cls: i for i, cls in enumerate(classes)}
    folder = _ImageFolder(classes)
    for split, entries in by_split.items():
        unknown = sorted({cls for cls, _ in entries} - set(classes))
        if unknown:
            raise DataError(f"{where}: class {unknown[0]!r} is in the {split} split but not in train")
        folder.files[split] = [f for _, f in entries]
        folder.labels[split] = torch.tensor([index[cls] for cls, _ in entries], dtype=torch.long)
    return folder


def _decode(file: _ImageFile, where: str) -> np.ndarray:
    """uint8 [H, W, 3]; gray or palette images are converted to RGB."""
    data = file.content if isinstance(file.content, bytes) else file.content.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # what PIL raises for bad files
        raise DataError(f"{where}: cannot decode {file.path} ({e})") from None


def _decode_all(files: list[_ImageFile], reference: _ImageFile, where: str) -> torch.Tensor:
    """Decode into one uint8 [N, 3, H, W] tensor; every image must have the size of ``reference``.

    One process: on CIFAR-10 (50k JPEGs, ~4 s) a process pool cost more than it saved on 2 cores.
    """
    shape = _decode(reference, where).shape
    out = np.empty((len(files), *shape), dtype=np.uint8)
    for i, file in enumerate(files):
        image = _decode(file, where)
        if image.shape != shape:
            raise DataError(f"{where}: {file.path} is {image.shape[1]}x{image.shape[0]} pixels, "
                             f"{reference.path} is {shape[1]}x{shape[0]}; all images must have one size")
        out[i] = image
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
