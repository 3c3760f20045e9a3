"""The final network of one architecture of the NAO cell space (docs/algorithm.md §6).

Stem, 3 stages of ``cells_per_stage`` normal cells with a reduction cell between stages
(channels doubled at each), an optional auxiliary head after the second reduction, global
average pooling, dropout and a linear classifier. A cell outputs the concatenation of its
loose ends, so its width is ``channels * len(loose_ends)``; the next cell's ``CellInputs``
projects it back. Drop-path is applied to every branch but a plain identity, in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.config import require
from rnas.networks.ops import CellInputs, FactorizedReduce, op_constructors, reduction_layout, sum_branches
from rnas.spaces.base import Arch
from rnas.spaces.nao_cnn import N_INPUTS, NAOCellSpace

AUXILIARY_PREFIX = "auxiliary_head."


@dataclass
class ChildConfig:
    cells_per_stage: int = 6
    channels: int = 36
    stem_multiplier: int = 3
    auxiliary: bool = True           # auxiliary head after the second reduction
    classifier_dropout: float = 0.4

    def check(self) -> None:
        for key in ("cells_per_stage", "channels", "stem_multiplier"):
            require(getattr(self, key) >= 1, key, "must be a positive integer")
        require(0.0 <= self.classifier_dropout < 1.0, "classifier_dropout", "must be in [0, 1)")


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability ``drop_prob``, scaling the rest to keep the mean."""
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class ChildCell(nn.Module):
    def __init__(self, space: NAOCellSpace, cell: Arch, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, prev_was_reduction: bool):
        super().__init__()
        self.inputs = CellInputs(c_prev_prev, c_prev, channels, prev_was_reduction)
        self.nodes = space.nodes(cell)
        self.loose_ends = space.loose_ends(cell)
        constructors = op_constructors(space.ops)
        self.branches = nn.ModuleList(
            constructors[op](channels, 2 if reduction and source < N_INPUTS else 1)
            for x_in, x_op, y_in, y_op in self.nodes for source, op in ((x_in, x_op), (y_in, y_op)))
        # a reduction cell's loose-end inputs are still full size: reduce them before the concat
        self.reduce_loose_inputs = nn.ModuleDict(
            {str(i): FactorizedReduce(channels, channels) for i in self.loose_ends if reduction and i < N_INPUTS})
        self.out_channels = channels * len(self.loose_ends)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = self.inputs(s0, s1)
        for node, (x_in, _, y_in, _) in enumerate(self.nodes):
            x = self._branch(2 * node, states[x_in], drop_prob)
            y = self._branch(2 * node + 1, states[y_in], drop_prob)
            states.append(sum_branches(x, y, states[x_in], states[y_in]))
        for key, reduce in self.reduce_loose_inputs.items():
            states[int(key)] = reduce(states[int(key)])
        return torch.cat([states[i] for i in self.loose_ends], dim=1)

    def _branch(self, index: int, x: Tensor, drop_prob: float) -> Tensor:
        op = self.branches[index]
        x = op(x)
        if drop_prob > 0 and not isinstance(op, nn.Identity):
            x = drop_path(x, drop_prob)
        return x


class AuxiliaryHead(nn.Sequential):
    """The CIFAR auxiliary classifier of NASNet/DARTS/NAO. Adaptive pooling to 2x2 stands in
    for their 5x5/3 average pool (which assumes 8x8 maps), so any input size works."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c_in, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(768, num_classes),
        )


class NetworkCIFAR(nn.Module):
    drop_path_prob: float  # set by the trainer each epoch (ramped linearly)

    def __init__(self, space: NAOCellSpace, arch: Arch, cfg: ChildConfig, num_classes: int, in_channels: int = 3):
        super().__init__()
        cfg.check()
        normal, reduce = space.cells(space.validate(arch))
        self.drop_path_prob = 0.0
        c_stem = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        self.cells = nn.ModuleList()
        self.auxiliary_after = None  # index of the cell the auxiliary head reads
        c_prev_prev, c_prev, channels, prev_was_reduction = c_stem, c_stem, cfg.channels, False
        for index, reduction in enumerate(reduction_layout(cfg.cells_per_stage)):
            channels *= 2 if reduction else 1
            cell = ChildCell(space, reduce if reduction else normal, c_prev_prev, c_prev, channels,
                             reduction, prev_was_reduction)
            self.cells.append(cell)
            c_prev_prev, c_prev, prev_was_reduction = c_prev, cell.out_channels, reduction
            if reduction and cfg.auxiliary:  # the last assignment wins: after the second reduction
                self.auxiliary_after = index
        if self.auxiliary_after is not None:
            self.auxiliary_head = AuxiliaryHead(self.cells[self.auxiliary_after].out_channels, num_classes)
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits, auxiliary logits in training mode with the auxiliary head, else None)."""
        drop_prob = self.drop_path_prob if self.training else 0.0
        aux_logits = None
        s0 = s1 = self.stem(x)
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop_prob)
            if index == self.auxiliary_after and self.training:
                aux_logits = self.auxiliary_head(s1)
        features = torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1)
        return self.classifier(self.dropout(features)), aux_logits

