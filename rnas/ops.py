"""The candidate operations of the NAO / ENAS cell space (ALGORITHM.md §1), DARTS style.

``OP_TABLE`` maps every op name of ``rnas.spaces.nao_cnn.OPS`` to a constructor
``(channels, stride) -> nn.Module``. Every op keeps the channel count; stride 2 halves the
spatial size, rounding up, so odd sizes work too. As in NAO, the pools carry no batch-norm
and a stride-2 identity is a factorized reduce. The two building blocks every cell of both
networks shares (``CellInputs``, ``reduction_layout``) live here as well.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ReLUConv2d(torch.autograd.Function):
    """conv2d(relu(x)) that keeps x, not relu(x), for the backward pass and recomputes the
    ReLU there: x is a cell state or a batch-norm output that stays alive anyway, so this
    saves one activation per call for the price of one elementwise pass."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (stride, padding, groups)
        return F.conv2d(F.relu(x), weight, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, groups = ctx.conv_args
        grad_relu, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_out, F.relu(x), weight, None, stride, padding, (1, 1), False, (0, 0), groups,
            (ctx.needs_input_grad[0], ctx.needs_input_grad[1], False))
        grad_x = torch.ops.aten.threshold_backward(grad_relu, x, 0) if grad_relu is not None else None
        return grad_x, grad_weight, None, None, None


def relu_conv2d(x: Tensor, weight: Tensor, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0, groups: int = 1) -> Tensor:
    """``F.conv2d(F.relu(x), weight, ...)`` (no bias) that stores no ReLU output for backward."""
    if not torch.is_grad_enabled():
        return F.conv2d(F.relu(x), weight, None, stride, padding, 1, groups)
    return _ReLUConv2d.apply(x, weight, _pair(stride), _pair(padding), groups)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class ReLUConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` applied to ``relu(x)``, through ``relu_conv2d``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return relu_conv2d(x, self.weight, self.stride, self.padding, self.groups)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1):
        super().__init__(ReLUConv2d(c_in, c_out, kernel_size, stride), nn.BatchNorm2d(c_out))


class SepConv(nn.Sequential):
    """(ReLU, depthwise, pointwise, BN) applied twice; only the first depthwise conv strides."""

    def __init__(self, channels: int, kernel_size: int, stride: int):
        layers: list[nn.Module] = []
        for conv_stride in (stride, 1):
            layers += [
                ReLUConv2d(channels, channels, kernel_size, conv_stride, groups=channels),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            ]
        super().__init__(*layers)


class _MaxPool2d(torch.autograd.Function):
    """max_pool2d that recomputes the argmax in backward from the input (a cell state, alive
    anyway) instead of keeping the forward pass's int64 indices, twice the output's size."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.pool_args = (kernel_size, stride, padding)
        return F.max_pool2d(x, kernel_size, stride, padding)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        kernel_size, stride, padding = (_pair(v) for v in ctx.pool_args)
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, kernel_size, stride, padding, (1, 1), False, indices)
        return grad_x, None, None, None


class MaxPool(nn.Module):
    """``nn.MaxPool2d`` through ``_MaxPool2d``: less memory for one more pooling pass."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        return _MaxPool2d.apply(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class FactorizedReduce(nn.Module):
    """Halve H and W without dropping pixels: 1x1 convs on the even and on the odd pixel grid.

    As in NAO, a ReLU comes first only where the reduce preprocesses a cell input.
    """

    def __init__(self, c_in: int, c_out: int, relu_first: bool = False):
        super().__init__()
        conv = ReLUConv2d if relu_first else partial(nn.Conv2d, bias=False)
        self.conv_even = conv(c_in, c_out // 2, 1)
        self.conv_odd = conv(c_in, c_out - c_out // 2, 1)
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
    "max_pool_3x3": lambda channels, stride: MaxPool(3, stride),
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
            self.prev_prev = FactorizedReduce(c_prev_prev, channels, relu_first=True)
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
