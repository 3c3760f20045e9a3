"""The optimizer step both classifier trainers take, and the per-batch totals they report."""
from __future__ import annotations

import torch
from torch import nn

from rnas.training.distributed import DistributedContext


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   dist: DistributedContext, grad_clip: float) -> None:
    # set_to_none: parameters off a supernet path get no momentum or weight-decay update this step
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    dist.all_reduce_gradients(model)
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def batch_totals(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[loss summed over the batch, correct predictions, images], kept on the device."""
    n = float(len(labels))
    correct = (logits.argmax(1) == labels).sum().float()
    return torch.stack([loss.detach().float() * n, correct, torch.full_like(correct, n)])
