"""What both classifier trainers share: their SGD settings, optimizer step, per-batch totals, and
the guard that stops a run whose loss is no longer finite."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnas.config import require
from rnas.errors import ConfigError
from rnas.data.images import AugmentConfig
from rnas.training.distributed import DistributedContext


@dataclass
class ClassifierTrainConfig:
    """SGD with momentum on a cosine schedule from ``lr_max`` to ``lr_min``, gradients clipped."""
    epochs: int = 30                 # epochs of the stage that uses this config
    batch_size: int = 128            # global: split over the ranks of a torchrun job
    lr_max: float = 0.05
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    mixed_precision: bool = True     # bf16 autocast on CUDA; ignored on CPU
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def check(self) -> None:
        require(self.epochs >= 0, "epochs", "must be >= 0")
        require(self.batch_size > 0, "batch_size", "must be > 0")
        require(0 <= self.lr_min <= self.lr_max, "lr_min", "must be in [0, lr_max]")
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.grad_clip > 0, "grad_clip", "must be > 0")


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   dist: DistributedContext, grad_clip: float) -> None:
    # set_to_none: parameters off a supernet path get no momentum or weight-decay update this step
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    apply_gradients(model, optimizer, dist, grad_clip)


def apply_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, dist: DistributedContext,
                    grad_clip: float) -> None:
    """The step on the gradients accumulated since ``zero_grad``: summed over ranks, clipped."""
    dist.all_reduce_gradients(model)
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def batch_totals(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[loss summed over the batch, correct predictions, images], kept on the device."""
    n = float(len(labels))
    correct = (logits.argmax(1) == labels).sum().float()
    return torch.stack([loss.detach().float() * n, correct, torch.full_like(correct, n)])


#: consecutive steps of non-finite loss that stop a run: one overflow may pass, a run of them does not
DIVERGED_AFTER_STEPS = 20


class DivergenceGuard:
    """Counts the consecutive steps whose loss is not finite, on the device (read once per epoch)."""

    def __init__(self, device: torch.device):
        self.streak = torch.zeros((), dtype=torch.long, device=device)

    def step(self, loss: torch.Tensor) -> None:
        self.streak = torch.where(torch.isfinite(loss.detach()), torch.zeros_like(self.streak), self.streak + 1)

    def check(self, epoch: int, lr: float, last: bool) -> None:
        """After ``epoch`` (1-based), trained at ``lr``: stop after too many non-finite steps in a row,
        or any at all at the end of training (``last``), where the weights are what is kept."""
        streak = int(self.streak)
        if streak >= DIVERGED_AFTER_STEPS or (last and streak):
            raise ConfigError(f"training diverged: the loss was not finite for the last {streak} steps of "
                              f"epoch {epoch} (lr {lr:g}); lower the learning rate")
