"""The weight-sharing supernet of the NAO cell space (docs/algorithm.md §2, NAO-WS PyTorch port).

Every (cell, node, branch, input node, op) owns its module, built from ``rnas.networks.ops.OP_TABLE``
with stride 2 where a reduction cell reads node 0 or 1; a sep-conv's weights and batch-norm
affine parameters are therefore kept per input node, as in the port. ``forward(x, arch)``
runs only the modules on ``arch``'s path, so the others get no gradient (``None``) and no
weight decay from an optimizer that skips gradient-less parameters.

The loose ends of a cell are concatenated and mixed by a ReLU-1x1 conv-BN whose weight has
one slice per node, the slices of the loose ends concatenated (the port's WSReLUConvBN):
every cell outputs ``channels`` channels whatever the architecture. (It is computed as the
sum of each loose end's 1x1 conv, which needs no concatenated copy.)

Batch-norm always normalises with the batch's statistics and keeps no running averages
(``rnas.networks.ops.use_batch_statistics``), in training and in evaluation alike: running averages
would mix the statistics of every architecture trained. Affine parameters are kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.config import require
from rnas.networks.ops import (CellInputs, FactorizedReduce, op_constructors, reduction_layout, relu_conv2d, sum_branches,
                      use_batch_statistics)
from rnas.spaces.base import Arch
from rnas.spaces.nao_cnn import N_INPUTS, NAOCellSpace

# A cell of an architecture as the forward pass reads it: its nodes and its loose ends.
CellPlan = tuple[list[tuple[int, int, int, int]], list[int]]


@dataclass
class SupernetConfig:
    cells_per_stage: int = 2     # N: 3 stages of N normal cells, a reduction cell between stages
    channels: int = 20           # width of the first stage; doubled at each reduction
    stem_multiplier: int = 3     # the stem conv outputs stem_multiplier * channels

    def check(self) -> None:
        for key in ("cells_per_stage", "channels", "stem_multiplier"):
            require(getattr(self, key) >= 1, key, "must be a positive integer")


class SharedBranch(nn.Module):
    """One branch of one node: a module for every (input node, op) it may choose."""

    def __init__(self, space: NAOCellSpace, n_inputs: int, channels: int, reduction: bool):
        super().__init__()
        constructors = op_constructors(space.ops)
        self.candidates = nn.ModuleList(
            nn.ModuleList(make(channels, 2 if reduction and source < N_INPUTS else 1) for make in constructors)
            for source in range(n_inputs))

    def forward(self, states: list[Tensor], source: int, op: int) -> Tensor:
        return self.candidates[source][op](states[source])


class LooseEndCombine(nn.Module):
    """ReLU, 1x1 conv, BN over the concatenated loose ends, with one weight slice per node."""

    def __init__(self, n_states: int, channels: int):
        super().__init__()
        # one Parameter per node, so the slices of nodes that are not loose ends get no gradient
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(channels, channels, 1, 1))
                                        for _ in range(n_states))
        for weight in self.weights:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Conv2d's default
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, states: list[Tensor], loose_ends: list[int]) -> Tensor:
        # the 1x1 conv of a concatenation is the sum of the 1x1 convs of its parts; summing
        # avoids copying the loose ends into a concatenation that backward would have to keep
        first, *rest = loose_ends
        mixed = relu_conv2d(states[first], self.weights[first])
        for i in rest:
            mixed.add_(relu_conv2d(states[i], self.weights[i]))  # conv outputs are not saved for backward
        return self.bn(mixed)


class SupernetCell(nn.Module):
    def __init__(self, space: NAOCellSpace, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, prev_was_reduction: bool):
        super().__init__()
        self.reduction = reduction
        self.inputs = CellInputs(c_prev_prev, c_prev, channels, prev_was_reduction)
        n_states = N_INPUTS + space.n_nodes
        self.nodes = nn.ModuleList(
            nn.ModuleList(SharedBranch(space, node, channels, reduction) for _branch in range(2))
            for node in range(N_INPUTS, n_states))
        # a reduction cell's loose-end inputs are still full size: reduce them before the mix
        if reduction:
            self.reduce_loose_inputs = nn.ModuleList(FactorizedReduce(channels, channels) for _ in range(N_INPUTS))
        self.combine = LooseEndCombine(n_states, channels)

    def forward(self, s0: Tensor, s1: Tensor, plan: CellPlan) -> Tensor:
        nodes, loose_ends = plan
        states = self.inputs(s0, s1)
        for (x_branch, y_branch), (x_in, x_op, y_in, y_op) in zip(self.nodes, nodes):
            x, y = x_branch(states, x_in, x_op), y_branch(states, y_in, y_op)
            states.append(sum_branches(x, y, states[x_in], states[y_in]))
        for i in loose_ends:
            if self.reduction and i < N_INPUTS:
                states[i] = self.reduce_loose_inputs[i](states[i])
        return self.combine(states, loose_ends)


class SupernetCIFAR(nn.Module):
    """Stem, 3 stages of ``cells_per_stage`` shared-weight cells with a reduction cell between
    stages, global average pooling and a linear classifier; works for any input size >= 8."""

    def __init__(self, space: NAOCellSpace, cfg: SupernetConfig, num_classes: int, in_channels: int = 3):
        super().__init__()
        cfg.check()
        self.space = space
        c_stem = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        self.cells = nn.ModuleList()
        c_prev_prev, c_prev, channels, prev_was_reduction = c_stem, c_stem, cfg.channels, False
        for reduction in reduction_layout(cfg.cells_per_stage):
            channels *= 2 if reduction else 1
            self.cells.append(SupernetCell(space, c_prev_prev, c_prev, channels, reduction, prev_was_reduction))
            c_prev_prev, c_prev, prev_was_reduction = c_prev, channels, reduction
        self.classifier = nn.Linear(c_prev, num_classes)
        use_batch_statistics(self)

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        """Logits of architecture ``arch``, computed with the shared weights of its path only."""
        normal, reduction = ((self.space.nodes(cell), self.space.loose_ends(cell))
                             for cell in self.space.cells(self.space.validate(arch)))
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduction if cell.reduction else normal)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))
