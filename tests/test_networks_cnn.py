"""The CNN ops, the weight-sharing supernet and the final network, on tiny inputs."""
from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnas.config import ConfigError, from_dict
from rnas.networks import ChildConfig, NetworkCIFAR, SupernetCIFAR, SupernetConfig, count_parameters
from rnas.networks.ops import (OP_TABLE, MaxPool, SepConv, pixel_grids, pointwise_batch_norm, relu_conv2d,
                      use_batch_statistics)
from rnas.spaces.nao_cnn import NAONET_B_36, NAONET_WS, OPS, NAOCellSpace

SPACE = NAOCellSpace()
TINY_SUPERNET = SupernetConfig(cells_per_stage=1, channels=4)
TINY_CHILD = ChildConfig(cells_per_stage=1, channels=4, classifier_dropout=0.0)


def single_op_cell(op: int, reads_input: int) -> tuple[int, ...]:
    """Every branch uses ``op``; cell input ``reads_input`` and nodes are read, the other input
    is a loose end (factorized-reduced in a reduction cell)."""
    i = reads_input
    return (i, op, i, op,  2, op, 2, op,  3, op, i, op,  4, op, 3, op,  5, op, 2, op)


def single_op_archs() -> list[tuple[int, ...]]:
    """Per op and per cell input: an architecture whose normal and reduction cells use only that
    op, on a cell input (stride 2 in the reduction cell) and on intermediate nodes."""
    return [single_op_cell(op, i) * 2 for op in range(len(OPS)) for i in (0, 1)]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tensors here are tiny: intra-op threads would only add synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_supernet() -> SupernetCIFAR:
    return SupernetCIFAR(SPACE, TINY_SUPERNET, num_classes=5)


@pytest.fixture
def supernet(tiny_supernet) -> SupernetCIFAR:
    """The module's tiny supernet (built once: it has thousands of modules), without gradients."""
    tiny_supernet.zero_grad(set_to_none=True)
    return tiny_supernet.train()


def images(batch: int = 2, channels: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("size", [8, 7])
def test_ops_keep_channels_and_halve_size_rounding_up(name, size):
    x = torch.randn(2, 6, size, size)
    assert OP_TABLE[name](6, 1)(x).shape == (2, 6, size, size)
    assert OP_TABLE[name](6, 2)(x).shape == (2, 6, (size + 1) // 2, (size + 1) // 2)


FUSED_OPS = ["relu_conv2d", "max_pool", "pixel_grids", "pointwise_batch_norm", "relu_pointwise_batch_norm",
             "pointwise_batch_norm_batch_statistics"]


def fused_and_plain(name: str):
    """(a fused op, the plain ops it stands for, the module holding their parameters)."""
    if name == "relu_conv2d":
        conv = nn.Conv2d(4, 4, 3, 2, 1, groups=4, bias=False).double()
        return lambda x: relu_conv2d(x, conv.weight, 2, 1, 4), lambda x: conv(F.relu(x)), conv
    if name == "max_pool":
        pool = MaxPool(3, 2)
        return pool, lambda x: F.max_pool2d(x, 3, 2, 1), pool
    if name == "pixel_grids":
        def flat(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
            return torch.cat([even.flatten(1), odd.flatten(1)], 1)
        return (lambda x: flat(*pixel_grids(x)), lambda x: flat(x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]),
                nn.Identity())
    relu_first = name.startswith("relu")
    block = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6)).double()
    if name.endswith("batch_statistics"):
        use_batch_statistics(block)
    conv, bn = block
    return (lambda x: pointwise_batch_norm(x, conv, bn, relu_first),
            lambda x: bn(conv(F.relu(x) if relu_first else x)), block)


def outputs_and_grads(fn, x: torch.Tensor, module: nn.Module) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = fn(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return [out.detach(), x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("name", FUSED_OPS)
def test_fused_ops_give_the_plain_ops_results_and_gradients(name, memory_format):
    torch.manual_seed(0)
    fused, plain, module = fused_and_plain(name)
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64).contiguous(memory_format=memory_format)
    initial_state = copy.deepcopy(module.state_dict())
    expected = outputs_and_grads(plain, x, module)
    expected_state = copy.deepcopy(module.state_dict())
    module.load_state_dict(initial_state)
    got = outputs_and_grads(fused, x, module)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    for key, value in module.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(value, expected_state[key])


def saved_activation_bytes(fn, x: torch.Tensor) -> int:
    """Bytes of the activation-sized tensors ``fn`` keeps for its backward pass."""
    storages = {}

    def pack(t):
        if t.numel() >= x.numel():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


def test_sep_conv_keeps_five_activations_for_backward():
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    op = SepConv(8, 3, 1)
    # its input, both depthwise outputs, the first pointwise output and the first batch-norm's
    # output; the first ReLU's output and the second pointwise output are recomputed in backward
    assert saved_activation_bytes(op, x) == 5 * x.numel() * x.element_size()


def test_fused_ops_run_the_plain_ops_under_autocast():
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SepConv(8, 5, 2)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8, 4, 4)
    out.float().sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("arch", single_op_archs())
def test_supernet_forward_backward_every_op(arch, supernet):
    model = supernet
    logits = model(images(), arch)
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def path_prefixes(model: SupernetCIFAR, arch) -> set[str]:
    """Module names on ``arch``'s path among the per-choice modules (candidates, combine slices,
    reductions of loose-end inputs)."""
    prefixes = set()
    normal, reduce = SPACE.cells(arch)
    for c, cell in enumerate(model.cells):
        cell_arch = reduce if cell.reduction else normal
        for n, (x_in, x_op, y_in, y_op) in enumerate(SPACE.nodes(cell_arch)):
            prefixes |= {f"cells.{c}.nodes.{n}.0.candidates.{x_in}.{x_op}.",
                         f"cells.{c}.nodes.{n}.1.candidates.{y_in}.{y_op}."}
        for i in SPACE.loose_ends(cell_arch):
            prefixes |= {f"cells.{c}.combine.weights.{i}", f"cells.{c}.reduce_loose_inputs.{i}."}
    return prefixes


@pytest.mark.parametrize("seed", [0, 1])
def test_supernet_touches_only_the_path_of_the_arch(seed, supernet):
    arch = SPACE.random(random.Random(seed))
    model = supernet
    model(images(), arch).sum().backward()
    on_path = path_prefixes(model, arch)
    per_choice = ("candidates", "combine.weights", "reduce_loose_inputs")
    checked = 0
    for name, p in model.named_parameters():
        if any(part in name for part in per_choice):
            checked += 1
            assert (p.grad is not None) == any(name.startswith(prefix) for prefix in on_path), name
        else:  # stem, cell inputs, combine batch-norm, classifier: always on the path
            assert p.grad is not None, name
    assert checked > 100


def test_supernet_output_shape_for_random_archs_and_sizes():
    model = SupernetCIFAR(SPACE, SupernetConfig(cells_per_stage=2, channels=4), num_classes=7, in_channels=1)
    rng = random.Random(0)
    for size in (8, 9, 16):
        arch = SPACE.random(rng)
        assert model(images(channels=1, size=size), arch).shape == (2, 7)


def test_supernet_batch_norm_uses_batch_statistics_in_eval_mode(supernet):
    model = supernet
    arch = SPACE.from_str(NAONET_WS)
    x = images(batch=4)
    train_logits = model.train()(x, arch)
    with torch.no_grad():
        eval_logits = model.eval()(x, arch)
        half_batch = model(x[:2], arch)
    torch.testing.assert_close(eval_logits, train_logits.detach())
    assert not torch.allclose(half_batch, eval_logits[:2])  # statistics depend on the batch
    assert not any("running" in key for key in model.state_dict())


def test_supernet_channels_last_gives_the_same_logits():
    model = SupernetCIFAR(SPACE, TINY_SUPERNET, num_classes=5)
    arch = SPACE.from_str(NAONET_B_36)
    x = images()
    expected = model(x, arch)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last), arch), expected,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", single_op_archs())
def test_child_forward_backward_every_op(arch):
    model = NetworkCIFAR(SPACE, arch, TINY_CHILD, num_classes=5)
    model.drop_path_prob = 0.2
    logits, aux_logits = model(images())
    assert logits.shape == aux_logits.shape == (2, 5)
    labels = torch.tensor([0, 1])
    (F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux_logits, labels)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    logits, aux_logits = model(images())
    assert logits.shape == (2, 5) and aux_logits is None


def test_child_without_auxiliary_head_on_8x8_grayscale():
    cfg = ChildConfig(cells_per_stage=2, channels=4, auxiliary=False)
    model = NetworkCIFAR(SPACE, SPACE.from_str(NAONET_WS), cfg, num_classes=10, in_channels=1)
    logits, aux_logits = model(images(channels=1))
    assert logits.shape == (2, 10) and aux_logits is None
    assert count_parameters(model) == count_parameters(model, include_auxiliary=True)


def test_drop_path_changes_the_output_in_train_mode_only():
    torch.manual_seed(0)
    model = NetworkCIFAR(SPACE, SPACE.from_str(NAONET_B_36), TINY_CHILD, num_classes=5)
    x = images(batch=8)
    with torch.no_grad():
        model.drop_path_prob = 0.0
        reference = model(x)[0]
        torch.testing.assert_close(model(x)[0], reference)  # train mode is otherwise deterministic
        model.drop_path_prob = 0.5
        assert not torch.allclose(model(x)[0], reference)
        model.eval()
        reference = model(x)[0]
        model.drop_path_prob = 0.0
        torch.testing.assert_close(model(x)[0], reference)


# Published cells at 6 cells per stage, 36 channels, 10 classes (auxiliary head excluded).
# NAONet-WS is reported at 2.5M; the NAO PyTorch port builds cells without the fixed 1x1
# preprocessing of DARTS, which these counts follow.
PUBLISHED_PARAMETERS = {NAONET_WS: 2_708_038, NAONET_B_36: 2_921_302}


@pytest.mark.parametrize("arch_str", PUBLISHED_PARAMETERS)
def test_parameter_count_of_published_cells(arch_str):
    model = NetworkCIFAR(SPACE, SPACE.from_str(arch_str), ChildConfig(), num_classes=10)
    n = count_parameters(model)
    assert 2_000_000 <= n <= 3_500_000
    assert n == PUBLISHED_PARAMETERS[arch_str]
    assert count_parameters(model, include_auxiliary=True) > n


def test_configs_are_validated():
    with pytest.raises(ConfigError, match="supernet.channels"):
        from_dict(SupernetConfig, {"channels": 0}, "supernet")
    with pytest.raises(ConfigError, match="classifier_dropout"):
        from_dict(ChildConfig, {"classifier_dropout": 1.0}, "child")
    with pytest.raises(ConfigError, match="cells_per_stage"):
        NetworkCIFAR(SPACE, SPACE.from_str(NAONET_WS), ChildConfig(cells_per_stage=0), num_classes=10)
