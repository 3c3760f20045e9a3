"""Device selection and the per-device fast paths (memory format, mixed precision)."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r} requested but only {count} CUDA device(s) are visible")
    return device


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
