"""The candidate operations of the NAO / ENAS cell space (ALGORITHM.md §1), DARTS style.

``OP_TABLE`` maps every op name of ``rnas.spaces.nao_cnn.OPS`` to a constructor
``(channels, stride) -> nn.Module``. Every op keeps the channel count; stride 2 halves the
spatial size, rounding up, so odd sizes work too. As in NAO, the pools carry no batch-norm
and a stride-2 identity is a factorized reduce. The two building blocks every cell of both
networks shares (``CellInputs``, ``reduction_layout``) live here as well.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """(ReLU, depthwise, pointwise, BN) applied twice; only the first depthwise conv strides."""

    def __init__(self, channels: int, kernel_size: int, stride: int):
        layers: list[nn.Module] = []
        for conv_stride in (stride, 1):
            layers += [
                nn.ReLU(),
                nn.Conv2d(channels, channels, kernel_size, conv_stride, padding=kernel_size // 2,
                          groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            ]
        super().__init__(*layers)

    def forward(self, x):
        import os
        from torch.utils.checkpoint import checkpoint
        for i in (0, 4):
            half = lambda t, i=i: self[i + 2](self[i + 1](self[i](t)))
            if torch.is_grad_enabled() and os.environ.get("CKPT") == "1":
                x = checkpoint(half, x, use_reentrant=False, preserve_rng_state=False)
            else:
                x = half(x)
            x = self[i + 3](x)
        return x


class FactorizedReduce(nn.Module):
    """Halve H and W without dropping pixels: 1x1 convs on the even and on the odd pixel grid.

    No ReLU inside (NAO); where NAO preceded it by a ReLU, the caller adds one.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out - c_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        # convs on the subsampled grids move a quarter of the data a stride-2 conv on x does
        even = self.conv_even(x[:, :, ::2, ::2])
        odd = self.conv_odd(x[:, :, 1::2, 1::2])
        # an odd size leaves the odd grid one row/column short: zero-pad it, as NAO does
        missing_h, missing_w = even.shape[2] - odd.shape[2], even.shape[3] - odd.shape[3]
        if missing_h or missing_w:
            odd = F.pad(odd, (0, missing_w, 0, missing_h))
        return self.bn(torch.cat([even, odd], dim=1))


OpConstructor = Callable[[int, int], nn.Module]

OP_TABLE: dict[str, OpConstructor] = {
    "sep_conv_3x3": lambda channels, stride: SepConv(channels, 3, stride),
    "sep_conv_5x5": lambda channels, stride: SepConv(channels, 5, stride),
    "avg_pool_3x3": lambda channels, stride: nn.AvgPool2d(3, stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda channels, stride: nn.MaxPool2d(3, stride, padding=1),
    "identity": lambda channels, stride: (nn.Identity() if stride == 1
                                          else FactorizedReduce(channels, channels)),
}


def op_constructors(op_names: tuple[str, ...]) -> list[OpConstructor]:
    """The constructors of a space's ops, in op-id order."""
    unknown = [name for name in op_names if name not in OP_TABLE]
    if unknown:
        raise ValueError(f"ops {unknown} have no module in rnas.ops.OP_TABLE (known: {sorted(OP_TABLE)})")
    return [OP_TABLE[name] for name in op_names]


def reduction_layout(cells_per_stage: int) -> list[bool]:
    """Which cells reduce: 3 stages of ``cells_per_stage`` normal cells, a reduction between."""
    normal = [False] * cells_per_stage
    return normal + [True] + normal + [True] + normal


class CellInputs(nn.Module):
    """Bring a cell's two inputs to ``channels`` channels at the previous cell's size.

    NAO's MaybeCalibrateSize: the input from two cells back is ReLU + factorized-reduced when
    the previous cell halved the size, otherwise 1x1-projected if its width differs; the
    previous cell's output is projected if its width differs. Inputs that fit pass as they are.
    """

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, prev_was_reduction: bool):
        super().__init__()
        if prev_was_reduction:
            self.prev_prev = nn.Sequential(nn.ReLU(), FactorizedReduce(c_prev_prev, channels))
        else:
            self.prev_prev = _project(c_prev_prev, channels)
        self.prev = _project(c_prev, channels)

    def forward(self, s0: Tensor, s1: Tensor) -> list[Tensor]:
        return [self.prev_prev(s0), self.prev(s1)]


def _project(c_in: int, c_out: int) -> nn.Module:
    return ReLUConvBN(c_in, c_out) if c_in != c_out else nn.Identity()


def use_batch_statistics(module: nn.Module) -> None:
    """Make every batch-norm in ``module`` normalise with the batch's own statistics, in eval
    mode too, and keep no running averages (which would mix the statistics of every
    architecture the supernet has run)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
