"""Device selection and the per-device fast paths (memory format, mixed precision)."""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import ContextManager, Iterator

import torch

from rnas.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {name!r} requested but only {count} CUDA device(s) are visible")
    return device


def require_gpu_per_rank(name: str, processes: int, key: str) -> None:
    """Ranks on CUDA take one GPU each (``cuda:LOCAL_RANK``): refuse more ranks than GPUs before any
    starts, rather than let NCCL fail in every rank."""
    if resolve_device(name).type == "cuda" and processes > (count := torch.cuda.device_count()):
        raise ConfigError(f"{key}: {processes} processes on device {name!r} need one GPU each, and {count} "
                          f"{'is' if count == 1 else 'are'} visible; set {key} to at most {count}, or device=cpu")


@contextlib.contextmanager
def leased_device(name: str, lock_dir: str | os.PathLike | None = None) -> Iterator[torch.device]:
    """``resolve_device``, and with ``"auto"`` on a machine of several GPUs, a GPU no other RNAS
    process holds: parallel experiments (``dvc queue start -j N``) then spread over the GPUs.

    The lease is an exclusive ``flock`` on ``<lock_dir>/rnas-gpu-<i>.lock`` held while the block
    runs; the OS releases it if the process dies. When every GPU is held, GPU 0 is shared.
    """
    device = resolve_device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if name != "auto" or count < 2 or "LOCAL_RANK" in os.environ:  # torchrun places its ranks itself
        yield device
        return
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    for index in range(count):
        handle = open(lock_dir / f"rnas-gpu-{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield torch.device("cuda", index)
        finally:
            handle.close()
        return
    print(f"[device] all {count} GPUs are leased by other RNAS processes; sharing cuda:0", file=sys.stderr)
    yield torch.device("cuda", 0)


def use_channels_last(device: torch.device) -> bool:
    """Convnets run faster in NHWC on both CPU (oneDNN) and CUDA (cuDNN, tensor cores)."""
    return device.type in ("cpu", "cuda")


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if use_channels_last(device) else torch.contiguous_format


def autocast(device: torch.device, enabled: bool = True) -> ContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere, where fp32 is faster."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reuse_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks up to 32 MB (its ceiling) in the heap for reuse.

    PyTorch allocates CPU activations with malloc; glibc serves large blocks with fresh mmaps
    and trims freed heap back to the OS, so activations are page-faulted in again and again
    (here a ReLU on a 16 MB tensor took 6.5 ms instead of 1 ms; a supernet training step ~7%
    longer). Returns whether glibc accepted.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory (MB) of this process or of the largest child it waited for (a
    torchrun rank) and, on CUDA, peak allocated device memory."""
    peak_kb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    out = {"peak_rss_mb": round(peak_kb / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
