"""The networks of the NAS-Bench-201 cell space: the weight-sharing supernet and the final network.

Both are the NB201 macro skeleton (Dong & Yang 2020, ``TinyNetwork``): a 3x3 conv stem with
batch norm, 3 stages of ``cells_per_stage`` cells at C, 2C and 4C channels joined by residual
reduction blocks (``ResNetBasicblock``, stride 2), then BN, ReLU, global average pooling and a
linear classifier. A cell's node i is the sum over j < i of ``op(node j)`` along edge j->i;
node 3 is the cell's output. The ops are none, skip, ReLU-Conv1x1-BN, ReLU-Conv3x3-BN and a 3x3
average pool (no padding counted); ``none`` adds nothing, so it is skipped, not computed.

The two networks differ only in what each edge holds: in the supernet, a module for each of
the 5 ops, and a step runs the one op per edge that the sampled architecture names (one path;
the other modules get no gradient); in the final network, the architecture's op alone. Module
names are the same in both (``cells.<i>.edges.<e>.<op id>``). The final network's parameter
count is the table's ``num_params`` (tests/test_networks_nb201.py).

The supernet's batch norm always normalises with the batch's statistics and keeps no running
averages (``rnas.networks.ops.use_batch_statistics``), as the NAO supernet's does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.config import require
from rnas.networks.ops import OP_TABLE, ReLUConv2d, ReLUConvBN, use_batch_statistics
from rnas.spaces.base import Arch
from rnas.spaces.nb201 import EDGES, N_NODES, OPS, NB201Space

NONE = OPS.index("none")


@dataclass
class NB201Config:
    """The skeleton of both networks (NB201's own, C=16, N=5, by default). It has no stem multiplier
    (the stem outputs ``channels``), no auxiliary head and no drop-path, unlike the NAO networks."""
    cells_per_stage: int = 5         # N
    channels: int = 16               # C, doubled at each reduction
    classifier_dropout: float = 0.0

    def check(self) -> None:
        for key in ("cells_per_stage", "channels"):
            require(getattr(self, key) >= 1, key, "must be a positive integer")
        require(0.0 <= self.classifier_dropout < 1.0, "classifier_dropout", "must be in [0, 1)")


def relu_conv3x3_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(ReLUConv2d(c_in, c_out, 3, stride), nn.BatchNorm2d(c_out))


#: op name -> constructor(channels); ``none`` has no module (the cell skips it)
CELL_OPS = {
    "skip_connect": lambda channels: nn.Identity(),
    "nor_conv_1x1": lambda channels: ReLUConvBN(channels, channels),
    "nor_conv_3x3": lambda channels: relu_conv3x3_bn(channels, channels),
    "avg_pool_3x3": lambda channels: OP_TABLE["avg_pool_3x3"](channels, 1),
}


class Cell(nn.Module):
    """A cell whose edge ``e`` holds a module for each op id in ``choices[e]``."""

    def __init__(self, channels: int, choices: Sequence[Sequence[int]]):
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleDict({str(op): CELL_OPS[OPS[op]](channels) for op in ops if op != NONE}) for ops in choices)

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        nodes = [x]
        for target in range(1, N_NODES):
            inflows = [self.edges[e][str(op)](nodes[source])
                       for e, ((source, t), op) in enumerate(zip(EDGES, arch)) if t == target and op != NONE]
            nodes.append(sum(inflows[1:], inflows[0]) if inflows else torch.zeros_like(x))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's ResNetBasicblock between stages: two ReLU-Conv3x3-BN (the first with stride 2) plus
    a shortcut of 2x2 average pooling and a 1x1 conv. (``ceil_mode``: an odd size rounds up, as the
    strided conv's does; even sizes pool exactly as NB201's.)"""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = relu_conv3x3_bn(c_in, c_out, stride=2)
        self.conv_b = relu_conv3x3_bn(c_out, c_out)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 skeleton around cells whose edges hold the ops ``choices`` (see ``Cell``)."""

    def __init__(self, choices: Sequence[Sequence[int]], channels: int, cells_per_stage: int, num_classes: int,
                 in_channels: int, classifier_dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cells = nn.ModuleList()
        for stage in range(3):
            width = channels * 2 ** stage
            if stage:
                self.cells.append(ResidualReduction(width // 2, width))
            self.cells.extend(Cell(width, choices) for _ in range(cells_per_stage))
        self.last_act = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(width, num_classes)

    def logits(self, x: Tensor, arch: Arch) -> Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, arch) if isinstance(cell, Cell) else cell(x)
        features = torch.flatten(F.adaptive_avg_pool2d(self.last_act(x), 1), 1)
        return self.classifier(self.dropout(features))


class SupernetNB201(NB201Network):
    """Every op on every edge; ``forward(x, arch)`` runs ``arch``'s path with the shared weights."""

    def __init__(self, space: NB201Space, cfg: NB201Config, num_classes: int, in_channels: int = 3):
        cfg.check()
        super().__init__([range(len(OPS))] * len(EDGES), cfg.channels, cfg.cells_per_stage, num_classes, in_channels,
                         cfg.classifier_dropout)
        self.space = space
        use_batch_statistics(self)

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        return self.logits(x, self.space.validate(arch))


class NetworkNB201(NB201Network):
    """The final network of one architecture; ``forward(x) -> (logits, None)`` (no auxiliary head)."""

    def __init__(self, space: NB201Space, arch: Arch, cfg: NB201Config, num_classes: int, in_channels: int = 3):
        cfg.check()
        arch = space.validate(arch)
        super().__init__([(op,) for op in arch], cfg.channels, cfg.cells_per_stage, num_classes, in_channels,
                         cfg.classifier_dropout)
        self.arch = arch

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.logits(x, self.arch), None
