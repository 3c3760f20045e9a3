"""Zero-cost signals: scores of an untrained network that rank architectures without training them.

Each signal takes a built image classifier (``forward(images)`` returns the logits, or a tuple whose
first element is the logits) and one batch, and returns a float where higher means "predicted
better". None changes the network it is given: each works on a ``copy.deepcopy`` (weights, buffers
such as batch-norm running averages, gradients and training mode stay as they were) with dropout
off, and none draws random numbers, so a signal depends only on the network's weights and the batch.

- ``params``: trainable parameters.
- ``flops``: multiply-accumulates of one image's forward pass in eval mode: half the FLOPs that
  ``rnas.networks.flops_per_image`` (torch's ``FlopCounterMode``, evaluate's ``mflops``) counts, i.e.
  those of convolutions and matrix products (batch norm, pooling, activations and additions are not
  counted).
- ``synflow`` (Tanaka et al., NeurIPS 2020; as a NAS proxy, Abdelfattah et al., ICLR 2021 "Zero-Cost
  Proxies"): every parameter replaced by its absolute value, every batch norm bypassed (the paper's
  ``synflow``, not ``synflow_bn``), one all-ones image in float64 (a product over dozens of layers:
  NB201's networks reach 1e44, past float32's range); R = the sum of the logits, score = sum of
  |w * dR/dw|.
- ``naswot`` (Mellor et al., ICML 2021): each image's binary code is whether each unit of every ReLU
  output is positive; K[i, j] counts the units where the codes of images i and j agree (units
  minus Hamming distance); score = log |det K| (-inf when K is singular, e.g. all codes equal).
- ``grad_norm`` and ``snip`` (Abdelfattah et al.): one backward pass of the batch's mean
  cross-entropy; grad_norm = the sum of each layer's gradient L2 norm (the paper's code; one norm of
  all the gradients together ranked NB201 cells worse: Spearman 0.43 against 0.59 on
  benchmarks/signals_nb201.py's 200 cells at seed 0), snip = sum of |w * grad|.

The gradient signals (synflow, grad_norm, snip) sum over the weights of every ``nn.Conv2d`` and
``nn.Linear``, as the zero-cost paper's code does: biases and batch-norm scales are left out.
naswot, grad_norm and snip normalise with the batch's own statistics (batch norm in training mode),
as both papers score a freshly built network in training mode.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rnas.networks import flops_per_image, main_logits

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: every way a forward pass may apply a ReLU: ``rnas.networks.ops`` fuses most of them into its convs, where
#: no ``nn.ReLU`` module (and so no module hook) sees them
RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_})

Signal = Callable[[nn.Module, Tensor, Tensor], float]


def params(net: nn.Module) -> float:
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))


def flops(net: nn.Module, images: Tensor) -> float:
    """Multiply-accumulates of the forward pass of ``images[0]`` (see the module docstring)."""
    return flops_per_image(_copy(net, batch_statistics=False), images) / 2


def synflow(net: nn.Module, images: Tensor) -> float:
    """Synaptic flow of ``net`` on one all-ones image of ``images``' shape (only the shape is used)."""
    net = _copy(net, batch_statistics=False)
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, BATCH_NORMS):
                setattr(module, name, nn.Identity())
    # eval again, the new modules too: rnas.networks.ops.pointwise_batch_norm takes an Identity in training
    # mode for a batch norm to fuse
    net.eval().double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)
    main_logits(net(ones)).sum().backward()
    return sum((w * w.grad).abs().sum().item() for w in _weights(net) if w.grad is not None)


class _ActivationKernel(TorchFunctionMode):
    """Sums the NASWOT kernel over every ReLU applied while the mode is on."""

    def __init__(self, batch_size: int, device: torch.device):
        super().__init__()
        self.kernel = torch.zeros(batch_size, batch_size, dtype=torch.float64, device=device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in RELUS:
            # codes as +-1: agreements - disagreements = s @ s.T, so agreements = (units + s @ s.T) / 2.
            # One product, not two; float32 sums integers exactly up to 2**24 units per image.
            s = (out > 0).flatten(1).float() * 2 - 1
            self.kernel += ((s @ s.T).double() + s.shape[1]) / 2
        return out


def naswot(net: nn.Module, images: Tensor) -> float:
    net = _copy(net, batch_statistics=True)
    with torch.no_grad(), _ActivationKernel(len(images), images.device) as activations:
        net(images)
    return torch.linalg.slogdet(activations.kernel).logabsdet.item()


def grad_norm(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    grads = _loss_gradients(net, images, labels)
    return sum(g.norm().item() for _, g in grads)


def snip(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    return sum((w * g).abs().sum().item() for w, g in _loss_gradients(net, images, labels))


SIGNALS: dict[str, Signal] = {
    "params": lambda net, images, labels: params(net),
    "flops": lambda net, images, labels: flops(net, images),
    "synflow": lambda net, images, labels: synflow(net, images),
    "naswot": lambda net, images, labels: naswot(net, images),
    "grad_norm": grad_norm,
    "snip": snip,
}


def score_networks(networks: Iterable[nn.Module], images: Tensor, labels: Tensor,
                   names: Sequence[str] = tuple(SIGNALS)) -> list[dict[str, float]]:
    """The signals ``names`` of each network, in order. ``networks`` may be a generator, so that
    only one network need be built at a time."""
    unknown = [name for name in names if name not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signals {unknown}; known: {', '.join(SIGNALS)}")
    return [{name: SIGNALS[name](net, images, labels) for name in names} for net in networks]


def _copy(net: nn.Module, batch_statistics: bool) -> nn.Module:
    """A copy in eval mode (dropout off), its batch norms in training mode if ``batch_statistics``."""
    net = copy.deepcopy(net).eval()  # (a deep copy's parameters hold no gradients)
    for module in net.modules():
        if isinstance(module, BATCH_NORMS):
            module.train(batch_statistics)
    return net


def _loss_gradients(net: nn.Module, images: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(weight, gradient) pairs of the batch's mean cross-entropy, batch norm on batch statistics."""
    net = _copy(net, batch_statistics=True)
    F.cross_entropy(main_logits(net(images)), labels).backward()
    return [(w.detach(), w.grad) for w in _weights(net) if w.grad is not None]


def _weights(net: nn.Module) -> list[Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

