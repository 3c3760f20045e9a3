"""Torch's random state in a checkpoint, so that a resumed training draws the same dropout and
drop-path masks (and BPTT windows) as an uninterrupted one."""
from __future__ import annotations

from typing import Any

import torch

#: the checkpoint keys ``rng_state`` writes
RNG_KEYS = ("cpu_rng", "cuda_rng")


def rng_state(device: torch.device) -> dict[str, Any]:
    return {"cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
