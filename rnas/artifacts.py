"""Atomic artifact writing: a reader (or DVC) never sees a half-written file or folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch

from rnas.errors import ArtifactError

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the result should look like any new file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces the folder ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should look like any folder
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); rerun the stage that writes it") from None


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Checkpoints hold tensors, numbers, strings and containers only: loaded with weights_only.

    A file that does not load (truncated, corrupt, not a checkpoint) or lacks one of ``keys`` is
    an ``ArtifactError`` naming it; a missing file is a ``FileNotFoundError``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file (run the stage that makes it: `dvc repro`)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a bad file: unpickling, zip, EOF, runtime
        # torch's own advice for an unpickling failure (weights_only=False) would run the file's code
        reason = ("not a checkpoint of plain tensors" if isinstance(e, pickle.UnpicklingError)
                  else " ".join(str(e).split()).split(". ")[0][:120] or type(e).__name__)
        raise ArtifactError(f"{path} is unreadable ({reason}); delete it and rerun the stage that writes it") from None
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise ArtifactError(f"{path} has no {missing[0]!r} entry (written by another version?); "
                            "delete it and rerun the stage that writes it")
    return payload


def read_csv(path: str | os.PathLike, columns: tuple[str, ...] = ()) -> "pd.DataFrame":
    """A CSV artifact with at least ``columns``; anything else is an ``ArtifactError`` naming the file."""
    import pandas as pd

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file (run the stage that makes it: `dvc repro`)")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:  # EmptyDataError is a ValueError
        raise ArtifactError(f"{path} is not a readable CSV ({' '.join(str(e).split())[:160]}); "
                            "rerun the stage that writes it") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path} has no column {missing[0]!r}; rerun the stage that writes it")
    return frame


def set_aside(path: str | os.PathLike, why: str) -> Path:
    """Rename a file that must not be used (stale, unreadable) to ``<name>.<why>``, saying so in one line."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.{why}")
    os.replace(path, aside)
    print(f"[artifacts] {path} is {why}: set aside as {aside.name}, not loaded", file=sys.stderr, flush=True)
    return aside


def resumable_checkpoint(path: str | os.PathLike, fingerprint: str, keys: tuple[str, ...],
                         main: bool = True) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to the run ``fingerprint`` and holds ``keys``; else
    None. A stale one (another fingerprint) or an unreadable one is never loaded: the ``main``
    process sets it aside (the other ranks of a job only skip it)."""
    if not os.path.exists(path):
        return None
    try:
        state = load_checkpoint(path, keys=("fingerprint", *keys))
    except (ArtifactError, FileNotFoundError):  # not found: the main rank has just set it aside
        if main and os.path.exists(path):
            set_aside(path, "unreadable")
        return None
    if state["fingerprint"] != fingerprint:
        if main:
            set_aside(path, "stale")
        return None
    return state


def source_fingerprint(root: str | os.PathLike, paths: Iterable[str]) -> str:
    """sha256 over the Python sources at ``paths`` (files, or folders searched recursively; relative
    to ``root``), by relative path and content: changes when the code they hold changes."""
    root, sha = Path(root), hashlib.sha256()
    for path in sorted(paths):
        files = sorted((root / path).rglob("*.py")) if (root / path).is_dir() else [root / path]
        for file in files:
            sha.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return sha.hexdigest()
