"""Candidate networks trained per minute on this machine: one after another, or K at once in one module.

    python benchmarks/bench_candidates.py --candidates 10 --steps 30 --threads 1

The networks are rerank's for `nb201-cpu` (the NB201 network, C=8, N=1, 16x16 images, batch 64),
for --candidates random cells (--seed). Three ways to run a training step of all of them:
- ``sequential``: each network's own forward, backward and SGD step, as rerank trains them;
- ``grouped``: the K networks side by side in one module, each convolution of the K candidates one
  grouped convolution (an edge's op runs on the channels of the candidates that chose it), one
  backward and one SGD step for all: the same arithmetic per candidate in far fewer kernel calls;
- ``pool_as_conv``: sequential, with the 3x3 average pool (no padding counted) computed as a
  depthwise convolution of ones divided by the count of valid pixels, which is the same function.
Prints one JSON line: milliseconds per step of all K, candidates-steps per second for each way, and
the largest difference between the pooling op and its convolution form on one batch.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from rnas.networks import NetworkNB201
from rnas.networks.nb201 import NB201Config
from rnas.spaces.nb201 import EDGES, N_NODES, OPS, NB201Space

SKIP, CONV1, CONV3, POOL = (OPS.index(name) for name in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"))


class GroupedReLUConvBN(nn.Module):
    def __init__(self, groups: int, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(groups * c_in, groups * c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(groups * c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class GroupedCell(nn.Module):
    """The cells of K candidates on K blocks of ``channels`` channels."""

    def __init__(self, channels: int, archs: list[tuple[int, ...]]):
        super().__init__()
        self.ops, self.plan = nn.ModuleDict(), []
        for e in range(len(EDGES)):
            for op in (SKIP, CONV1, CONV3, POOL):
                users = [k for k, arch in enumerate(archs) if arch[e] == op]
                if not users:
                    continue
                name = f"{e}_{op}"
                if op in (CONV1, CONV3):
                    self.ops[name] = GroupedReLUConvBN(len(users), channels, channels, 1 if op == CONV1 else 3)
                index = torch.tensor([k * channels + c for k in users for c in range(channels)])
                self.plan.append((e, op, name, index, len(users) == len(archs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, N_NODES):
            total = torch.zeros_like(x)
            for e, op, name, index, everyone in self.plan:
                source, t = EDGES[e]
                if t != target:
                    continue
                h = nodes[source] if everyone else nodes[source].index_select(1, index)
                out = h if op == SKIP else (F.avg_pool2d(h, 3, 1, 1, count_include_pad=False) if op == POOL
                                            else self.ops[name](h))
                total = total + out if everyone else total.index_add(1, index, out)
            nodes.append(total)
        return nodes[-1]


class GroupedReduction(nn.Module):
    def __init__(self, groups: int, c_in: int, c_out: int):
        super().__init__()
        self.a, self.b = GroupedReLUConvBN(groups, c_in, c_out, 3, 2), GroupedReLUConvBN(groups, c_out, c_out, 3)
        self.shortcut = nn.Conv2d(groups * c_in, groups * c_out, 1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(F.avg_pool2d(x, 2, 2, ceil_mode=True)) + self.b(self.a(x))


class GroupedNB201(nn.Module):
    """K NB201 networks (one cell per stage) in one module; logits ``[K, batch, classes]``."""

    def __init__(self, archs: list[tuple[int, ...]], channels: int, classes: int = 10):
        super().__init__()
        k, c = len(archs), channels
        self.k = k
        self.stem = nn.Sequential(nn.Conv2d(3, k * c, 3, padding=1, bias=False), nn.BatchNorm2d(k * c))
        self.body = nn.Sequential(GroupedCell(c, archs), GroupedReduction(k, c, 2 * c), GroupedCell(2 * c, archs),
                                  GroupedReduction(k, 2 * c, 4 * c), GroupedCell(4 * c, archs))
        self.last = nn.BatchNorm2d(k * 4 * c)
        self.weight = nn.Parameter(torch.randn(k, 4 * c, classes) / (4 * c) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(k, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.last(self.body(self.stem(x)))).mean((2, 3)).view(len(x), self.k, -1)
        return torch.einsum("bkw,kwc->kbc", features, self.weight) + self.bias[:, None]


class PoolAsConv(nn.Module):
    """The 3x3 average pool with padding 1 that counts only real pixels, as a depthwise convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype)
        count = F.conv2d(torch.ones(1, 1, *x.shape[2:], dtype=x.dtype), ones[:1], padding=1)
        return F.conv2d(x, ones, padding=1, groups=x.shape[1]) / count


def ms_per_step(step, steps: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = NB201Space()
    archs = space.sample_unique(args.candidates, random.Random(args.seed))
    child = NB201Config(cells_per_stage=1, channels=args.channels)
    x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))

    def sequential_step(networks):
        optimizers = [torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in networks]

        def step():
            for network, optimizer in zip(networks, optimizers):
                optimizer.zero_grad()
                F.cross_entropy(network(x)[0], y).backward()
                nn.utils.clip_grad_norm_(network.parameters(), 5.0)
                optimizer.step()
        return step

    networks = [NetworkNB201(space, arch, child, 10) for arch in archs]
    sequential = ms_per_step(sequential_step(networks), args.steps)
    for network in networks:
        for module in network.modules():
            for name, sub in module.named_children():
                if isinstance(sub, nn.AvgPool2d) and sub.stride == 1:
                    setattr(module, name, PoolAsConv())
    pool_as_conv = ms_per_step(sequential_step(networks), args.steps)
    grouped_net = GroupedNB201(archs, args.channels)
    optimizer = torch.optim.SGD(grouped_net.parameters(), lr=0.05, momentum=0.9)

    def grouped_step():
        optimizer.zero_grad()
        F.cross_entropy(grouped_net(x).flatten(0, 1), y.repeat(len(archs)), reduction="sum").div(len(y)).backward()
        optimizer.step()
    grouped = ms_per_step(grouped_step, args.steps)
    h = torch.randn(64, args.channels, 16, 16)
    pool_error = (F.avg_pool2d(h, 3, 1, 1, count_include_pad=False) - PoolAsConv()(h)).abs().max().item()
    per_s = {name: round(len(archs) / ms * 1000, 1) for name, ms in
             (("sequential", sequential), ("grouped", grouped), ("pool_as_conv", pool_as_conv))}
    print(json.dumps({"benchmark": "candidates", "candidates": len(archs), "threads": args.threads,
                      "ms_per_step": {"sequential": round(sequential, 1), "grouped": round(grouped, 1),
                                      "pool_as_conv": round(pool_as_conv, 1)},
                      "candidate_steps_per_s": per_s, "pool_as_conv_max_error": pool_error}))


if __name__ == "__main__":
    main()
