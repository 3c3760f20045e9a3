"""A tiny image task and a tiny final network, shared by the training and distributed tests."""
from __future__ import annotations

import torch
from torch import nn

from rnas.data.images import ImageSplit

N_CLASSES = 4


def brightness_split(n: int = 64, seed: int = 0) -> ImageSplit:
    """8x8 grey images of noise whose mean brightness (30 + 60 k) gives the class k."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    images = 30 + 60 * labels.view(-1, 1, 1, 1) + torch.randint(-40, 41, (n, 1, 8, 8), generator=generator)
    return ImageSplit(images.clamp(0, 255).to(torch.uint8), labels, [str(k) for k in range(N_CLASSES)],
                      (0.5,), (0.3,))


class TinyChild(nn.Module):
    """``forward(x) -> (logits, aux_logits or None)`` with batch norm, and drop-path drawn from the
    global RNG (each probability it trained with is recorded in ``drop_path_seen``)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.head = nn.Linear(channels, N_CLASSES)
        self.aux_head = nn.Linear(channels, N_CLASSES)
        self.drop_path_prob = 0.0
        self.drop_path_seen: list[float] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        if self.training:
            self.drop_path_seen.append(self.drop_path_prob)
            keep = 1.0 - self.drop_path_prob
            h = h * torch.empty(len(h), 1, 1, 1).bernoulli_(keep) / keep
        features = h.mean((2, 3))
        return self.head(features), (self.aux_head(features) if self.training else None)
