"""NAO's gradient step in the controller's latent space: the baseline RNAS replaces.

From the encodings of the top-k architectures, move uphill on the predictor,
``x <- x + lambda * dH/dx``, with lambda = step, 2 * step, ... until enough new architectures
decode (Luo et al. 2018).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from rnas.config import require
from rnas.strategies.base import LatentSearchConfig, LatentSearchStrategy


@dataclass
class NAOConfig(LatentSearchConfig):
    step: float = 1.0             # lambda grows by this much per attempt
    max_steps: int = 30

    def check(self):
        super().check()
        require(self.step > 0, "step", "must be positive")
        require(self.max_steps > 0, "max_steps", "must be positive")


class NAOStrategy(LatentSearchStrategy):
    name = "nao"
    Config = NAOConfig

    def moves(self, latent: Tensor, n: int) -> Iterator[Tensor]:
        latent = latent.detach().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(self.controller.predict(latent).sum(), latent)
        for i in range(1, self.config.max_steps + 1):
            yield latent.detach() + i * self.config.step * grad


STRATEGY = NAOStrategy
