"""The zero-cost signals (rnas.search.signals) against numbers worked out by hand on tiny networks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnas.networks.nb201 import NB201Config
from rnas.networks.nb201 import NetworkNB201
from rnas.networks.ops import ReLUConv2d
from rnas.search.signals import SIGNALS, flops, grad_norm, naswot, params, score_networks, snip, synflow
from rnas.spaces.nb201 import BEST_CIFAR10_CELL, NB201Space

W1 = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]
W2 = [[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]
# hidden pre-activations W1 x: [1, 2, -1], [2, 1, 1], [0, 1, -1] -> ReLU codes 110, 111, 010
# (the 0 is off: a unit is on only when positive)
X = [[1.0, 2.0], [2.0, 1.0], [0.0, 1.0]]
# codes agree on 2 (110/111), 2 (110/010), 1 (111/010) of 3 units: K = [[3,2,2],[2,3,1],[2,1,3]], det 8
LOG_DET = math.log(8)


def linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


def mlp(*middle: nn.Module) -> nn.Sequential:
    """Linear(W1) - ``middle`` - ReLU - Linear(W2), no biases."""
    return nn.Sequential(linear(W1), *middle, nn.ReLU(), linear(W2))


class Apply(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def nb201(channels: int = 4, dropout: float = 0.0) -> NetworkNB201:
    space = NB201Space()
    child = NB201Config(cells_per_stage=1, channels=channels, classifier_dropout=dropout)
    return NetworkNB201(space, space.from_str(BEST_CIFAR10_CELL), child, num_classes=10)


def tiny_conv_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def test_params_and_flops_of_a_tiny_conv_net_by_formula():
    net = tiny_conv_net()
    # conv 3*4*9 + 4 bias, BN 4 + 4, grouped conv 4 * (4/2) * 9, linear 4*10 + 10
    assert params(net) == 112 + 8 + 72 + 50
    net[0].bias.requires_grad_(False)
    assert params(net) == 108 + 8 + 72 + 50  # frozen parameters do not count
    # per image of 8x8: conv 4*8*8 outputs x 3*9, grouped stride-2 conv 4*4*4 outputs x 2*9, linear 10 x 4
    assert flops(net, torch.randn(2, 3, 8, 8)) == 256 * 27 + 64 * 18 + 10 * 4


def test_a_wider_network_has_more_params_and_flops():
    images = torch.randn(2, 3, 8, 8)
    narrow, wide = nb201(channels=4), nb201(channels=8)
    assert params(wide) > params(narrow)
    assert flops(wide, images) > flops(narrow, images)


def test_synflow_by_hand():
    # |W1| @ ones = [1, 1, 2] (all positive: the ReLU passes them), column sums of |W2| = [1, 2, 1],
    # so R = 1 + 2 + 2 = 5. For a bias-free chain each layer's sum of |w * dR/dw| is R: 2 layers, 10.
    # (Without the absolute values: 6.)
    assert synflow(mlp(), torch.randn(4, 2)) == 10.0


def test_synflow_bypasses_batch_norm():
    norm = nn.BatchNorm1d(3)
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    with torch.no_grad():
        norm.weight.fill_(3.0)
    # an eval-mode batch norm would rescale and shift; a training-mode one fails on one image
    assert synflow(mlp(norm), torch.randn(4, 2)) == 10.0


def test_synflow_does_not_overflow():
    # five layers of weight 1e10: R = 1e50 (inf in float32), and each layer contributes R
    chain = nn.Sequential(*(linear([[-1e10]]) for _ in range(5)))
    assert synflow(chain, torch.randn(1, 1)) == pytest.approx(5e50, rel=1e-12)


def test_naswot_by_hand():
    assert naswot(mlp(), torch.tensor(X)) == pytest.approx(LOG_DET, rel=1e-12)


def test_naswot_of_identical_codes_is_minus_infinity():
    # two images with the same codes: two equal rows of K
    assert naswot(mlp(), torch.tensor([X[0], X[0], X[1]])) == -math.inf


@pytest.mark.parametrize("relu", [
    nn.ReLU(), nn.ReLU(inplace=True), Apply(F.relu), Apply(lambda x: x.relu()), Apply(lambda x: x.relu_()),
], ids=["module", "module_inplace", "functional", "method", "method_inplace"])
def test_naswot_sees_every_form_of_relu(relu):
    net = nn.Sequential(linear(W1), relu, linear(W2))
    assert naswot(net, torch.tensor(X)) == pytest.approx(LOG_DET, rel=1e-12)


def test_naswot_sees_the_relu_fused_into_the_projects_convs():
    # ReLUConv2d applies F.relu to its input inside its forward: the codes are those of W1 x
    net = nn.Sequential(ReLUConv2d(3, 2, 1))
    images = (torch.tensor(X) @ torch.tensor(W1).T).view(3, 3, 1, 1)
    assert naswot(net, images) == pytest.approx(LOG_DET, rel=1e-12)


# x = [1, 2], label 0: hidden [1, 2, -1] -> ReLU [1, 2, 0], logits W2 h = [3, 2].
# dL/dlogits = softmax - onehot = [-s, s] with s = 1 - sigmoid(1) = 1 / (1 + e).
# dL/dW2 = [-s, s] x h = [[-s, -2s, 0], [s, 2s, 0]]; dL/dh = W2^T [-s, s] = [-s, 0, -s], masked by the
# ReLU -> [-s, 0, 0]; dL/dW1 = [-s, 0, 0] x x = [[-s, -2s], [0, 0], [0, 0]].
S = 1 / (1 + math.e)
ONE_IMAGE, LABEL = torch.tensor([X[0]]), torch.tensor([0])


def test_grad_norm_by_hand():
    # per layer: sqrt(s^2 (1 + 4 + 1 + 4)) + sqrt(s^2 (1 + 4))
    assert grad_norm(mlp(), ONE_IMAGE, LABEL) == pytest.approx((math.sqrt(10) + math.sqrt(5)) * S, rel=1e-6)


def test_snip_by_hand():
    # |w * grad|: W2 gives s + 2s + 2s, W1 gives s (without the absolute values: -2s)
    assert snip(mlp(), ONE_IMAGE, LABEL) == pytest.approx(6 * S, rel=1e-6)


@pytest.mark.parametrize("signal", [grad_norm, snip])
def test_gradient_signals_ignore_the_gradients_a_network_holds(signal):
    net = mlp()
    net(torch.ones(1, 2)).sum().backward()
    assert signal(net, ONE_IMAGE, LABEL) == pytest.approx(signal(mlp(), ONE_IMAGE, LABEL), rel=1e-6)


@pytest.mark.parametrize("signal", [grad_norm, snip])
def test_gradient_signals_take_the_batch_mean(signal):
    # two copies of the image: the mean loss has the one image's gradient (a summed loss, twice it)
    assert signal(mlp(), ONE_IMAGE.repeat(2, 1), LABEL.repeat(2)) == pytest.approx(
        signal(mlp(), ONE_IMAGE, LABEL), rel=1e-6)


@pytest.mark.parametrize("name", ["naswot", "grad_norm", "snip"])
def test_batch_norm_uses_the_batch_statistics(name):
    torch.manual_seed(0)
    net, images, labels = tiny_conv_net(), torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    before = SIGNALS[name](net, images, labels)
    net[1].running_mean.fill_(5.0)
    net[1].running_var.fill_(9.0)
    assert SIGNALS[name](net, images, labels) == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_signal_leaves_the_network_as_it_was_and_draws_no_random_numbers(name):
    torch.manual_seed(0)
    net = nb201(dropout=0.5)  # dropout would make a signal random if left on
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(net(images)[0], labels).backward()  # gradients and batch-norm averages to keep
    net.cells[0].eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.grad.clone() for p in net.parameters()]
    modes = [m.training for m in net.modules()]

    score = SIGNALS[name](net, images, labels)
    torch.manual_seed(1)
    assert SIGNALS[name](net, images, labels) == score
    assert math.isfinite(score)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads))
    assert [m.training for m in net.modules()] == modes


def test_score_networks_scores_each_network_in_order():
    networks = (mlp(norm) for norm in (nn.Identity(), nn.Identity()))
    assert score_networks(networks, torch.tensor(X), torch.tensor([0, 1, 0]), ["params", "naswot"]) == [
        {"params": 12.0, "naswot": pytest.approx(LOG_DET)}] * 2
    with pytest.raises(ValueError, match="unknown signals"):
        score_networks([mlp()], torch.tensor(X), torch.tensor([0, 1, 0]), ["zen"])
