"""The candidate operations of the NAO / ENAS cell space (docs/algorithm.md §1), DARTS style.

``OP_TABLE`` maps every op name of ``rnas.spaces.nao_cnn.OPS`` to a constructor
``(channels, stride) -> nn.Module``. Every op keeps the channel count; stride 2 halves the
spatial size, rounding up, so odd sizes work too. As in NAO, the pools carry no batch-norm
and a stride-2 identity is a factorized reduce. The building blocks every cell of both
networks shares (``CellInputs``, ``reduction_layout``) live here as well.

Memory: training on a CPU is bound by activation memory as much as by arithmetic, so three
fused ops keep less for the backward pass and recompute something cheap there instead:
``relu_conv2d`` keeps a conv's input before its ReLU (which stays alive anyway),
``pointwise_batch_norm`` recomputes a 1x1 conv's output instead of keeping it for the
batch-norm, and ``MaxPool`` recomputes the argmax instead of keeping int64 indices (together
they cut what the supernet keeps by a third: 1.47 GB -> 1.01 GB for one architecture at batch 64).
``pixel_grids`` spares a factorized reduce's backward pass two full-size temporaries. Their
results and gradients are those of the plain ops (tests/test_networks_cnn.py checks it);
under autocast, or without gradients, the plain ops run.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# --- fused ops: the same results, less memory kept for backward --------------------------


def _lean(x: Tensor) -> bool:
    """Whether to take the memory-lean path: gradients wanted and no autocast (whose casts
    the lean backward passes do not replay)."""
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class _ReLUConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (stride, padding, groups)
        return F.conv2d(F.relu(x), weight, None, stride, padding, 1, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, groups = ctx.conv_args
        grad_relu, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_out, F.relu(x), weight, None, stride, padding, (1, 1), False, (0, 0), groups,
            (ctx.needs_input_grad[0], ctx.needs_input_grad[1], False))
        grad_x = None if grad_relu is None else torch.ops.aten.threshold_backward(grad_relu, x, 0)
        return grad_x, grad_weight, None, None, None


def relu_conv2d(x: Tensor, weight: Tensor, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0, groups: int = 1) -> Tensor:
    """``F.conv2d(F.relu(x), weight, ...)`` without a bias; keeps ``x``, not ``relu(x)``."""
    if not _lean(x):
        return F.conv2d(F.relu(x), weight, None, stride, padding, 1, groups)
    return _ReLUConv2d.apply(x, weight, _pair(stride), _pair(padding), groups)


class _PointwiseBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, relu_first: bool, weight: Tensor, bn_weight: Tensor | None,
                bn_bias: Tensor | None, running_mean: Tensor | None, running_var: Tensor | None,
                momentum: float, eps: float) -> Tensor:
        conv_out = F.conv2d(F.relu(x) if relu_first else x, weight)
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            conv_out, bn_weight, bn_bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, bn_weight, mean, invstd)
        ctx.relu_first, ctx.eps = relu_first, eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight, bn_weight, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        conv_in = F.relu(x) if ctx.relu_first else x
        grad_conv_out, grad_bn_weight, grad_bn_bias = torch.ops.aten.native_batch_norm_backward(
            grad_out, F.conv2d(conv_in, weight), bn_weight, None, None, mean, invstd, True, ctx.eps,
            [True, needs[3], needs[4]])
        grad_conv_in, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_conv_out, conv_in, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1,
            (needs[0], needs[2], False))
        grad_x = grad_conv_in
        if ctx.relu_first and grad_conv_in is not None:
            grad_x = torch.ops.aten.threshold_backward(grad_conv_in, x, 0)
        return grad_x, None, grad_weight, grad_bn_weight, grad_bn_bias, None, None, None, None


def pointwise_batch_norm(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu_first: bool = False) -> Tensor:
    """``bn(conv(relu(x) if relu_first else x))`` for a bias-free 1x1 ``conv``. In training it
    keeps only ``x`` for backward and recomputes the ReLU and the conv's output there."""
    if not (bn.training and _lean(x)):
        return bn(conv(F.relu(x) if relu_first else x))
    momentum = 0.0
    if bn.track_running_stats:  # as nn.BatchNorm2d.forward does in training
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / bn.num_batches_tracked.item() if bn.momentum is None else bn.momentum
    return _PointwiseBatchNorm.apply(x, relu_first, conv.weight, bn.weight, bn.bias, bn.running_mean,
                                     bn.running_var, momentum, bn.eps)


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.pool_args = (_pair(kernel_size), _pair(stride), _pair(padding))
        return F.max_pool2d(x, kernel_size, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        kernel_size, stride, padding = ctx.pool_args
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, kernel_size, stride, padding, (1, 1), False, indices)
        return grad_x, None, None, None


class MaxPool(nn.Module):
    """``nn.MaxPool2d(kernel_size, stride, kernel_size // 2)`` that keeps its input (a cell
    state, alive anyway) for backward instead of int64 argmax indices twice the output's size."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        if not _lean(x):
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        return _MaxPool2d.apply(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _PixelGrids(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, Tensor]:
        ctx.x_shape, ctx.memory_format = x.shape, _memory_format(x)
        return (x[:, :, ::2, ::2].contiguous(memory_format=ctx.memory_format),
                x[:, :, 1::2, 1::2].contiguous(memory_format=ctx.memory_format))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_even: Tensor, grad_odd: Tensor) -> Tensor:
        grad_x = torch.empty(ctx.x_shape, dtype=grad_even.dtype, device=grad_even.device,
                             memory_format=ctx.memory_format).zero_()
        grad_x[:, :, ::2, ::2] = grad_even
        grad_x[:, :, 1::2, 1::2] = grad_odd
        return grad_x


def pixel_grids(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x[:, :, ::2, ::2], x[:, :, 1::2, 1::2])`` as tensors of their own. Backward writes
    both gradients into one zeroed tensor, where autograd would zero-fill one per slice and
    add them (twice as fast for a factorized reduce's forward and backward)."""
    if not torch.is_grad_enabled():
        return x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]
    return _PixelGrids.apply(x)


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


# --- the ops ------------------------------------------------------------------------------


class ReLUConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` applied to ``relu(x)`` (through ``relu_conv2d``)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return relu_conv2d(x, self.weight, self.stride, self.padding, self.groups)


class ReLUConvBN(nn.Module):
    """ReLU, 1x1 conv, BN: projects a cell input to the cell's width."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return pointwise_batch_norm(x, self.conv, self.bn, relu_first=True)


class SepConv(nn.Module):
    """(ReLU, depthwise, pointwise, BN) applied twice; only the first depthwise conv strides."""

    def __init__(self, channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.depthwise1 = ReLUConv2d(channels, channels, kernel_size, stride, groups=channels)
        self.pointwise1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.depthwise2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                    groups=channels, bias=False)
        self.pointwise2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        # x is a cell state other branches read too: relu_conv2d leaves it as it is
        x = self.bn1(self.pointwise1(self.depthwise1(x)))
        # the batch-norm output is this op's own, and its backward does not need it: ReLU in place.
        # Recomputing the second pointwise conv's output in backward, not the first one's too, is
        # the balance measured on the benchmark supernet: each costs ~4% of a step, saves ~8% memory.
        return pointwise_batch_norm(self.depthwise2(x.relu_()), self.pointwise2, self.bn2)


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
        even, odd = pixel_grids(x)
        even, odd = self.conv_even(even), self.conv_odd(odd)
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
        raise ValueError(f"ops {unknown} have no module in rnas.networks.ops.OP_TABLE (known: {sorted(OP_TABLE)})")
    return [OP_TABLE[name] for name in op_names]


# --- building blocks of both networks -----------------------------------------------------


def sum_branches(x: Tensor, y: Tensor, x_input: Tensor, y_input: Tensor) -> Tensor:
    """A node's value ``x + y``, summed in place into a branch output that is the node's own:
    not the branch's input (an identity returns its input, a state other nodes read). No op
    keeps its output for backward, so autograd allows it."""
    if x is not x_input:
        return x.add_(y)
    if y is not y_input:
        return y.add_(x)
    return x + y


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
