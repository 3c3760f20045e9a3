"""The NAS-Bench-201 supernet and final network: shapes, the table's parameter counts, weight sharing."""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from rnas.export import build_network
from rnas.networks import NB201Config, count_parameters
from rnas.networks.nb201 import NetworkNB201, SupernetNB201
from rnas.spaces.nb201 import BEST_CIFAR10_CELL, EDGES, OPS, RESNET_CELL, NB201Space

REAL_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "cifar10.csv"
NB201_CHILD = NB201Config(cells_per_stage=5, channels=16)
# num_params of the table (rows of ../shared/data/nb201/cifar10.csv): the official networks at C=16, N=5
TABLE_PARAMS = {
    RESNET_CELL: 559_386,
    BEST_CIFAR10_CELL: 1_073_466,
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|": 129_306,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|": 802_426,
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": 73_306,
}


@pytest.fixture
def space() -> NB201Space:
    return NB201Space()


@pytest.mark.parametrize("cell, expected", sorted(TABLE_PARAMS.items()))
def test_final_network_has_the_tables_parameter_count(space, cell, expected):
    network = build_network(cell, NB201_CHILD, num_classes=10, space="nb201")
    assert isinstance(network, NetworkNB201)
    assert count_parameters(network) == sum(p.numel() for p in network.parameters()) == expected


@pytest.mark.skipif(not REAL_TABLE.exists(), reason="needs ../shared/data/nb201/cifar10.csv")
def test_parameter_counts_match_the_real_table_on_random_rows(space):
    table = pd.read_csv(REAL_TABLE).sample(12, random_state=0)
    for text, expected in zip(table["arch_str"], table["num_params"]):
        assert count_parameters(NetworkNB201(space, space.from_str(text), NB201_CHILD, 10)) == expected, text


def test_shapes_on_small_and_odd_inputs(space):
    arch = space.from_str(BEST_CIFAR10_CELL)
    supernet = SupernetNB201(space, NB201Config(cells_per_stage=1, channels=4), 7, in_channels=1)
    child = NetworkNB201(space, arch, NB201Config(cells_per_stage=2, channels=4),
                         7, in_channels=1)
    for size in (8, 11, 32):
        x = torch.randn(3, 1, size, size)
        assert supernet(x, arch).shape == (3, 7)
        logits, aux = child(x)
        assert logits.shape == (3, 7) and aux is None
    # a cell whose output node receives only `none` outputs zeros, and the network still classifies
    dead = space.from_str("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert supernet(torch.randn(2, 1, 8, 8), dead).shape == (2, 7)


def path_parameters(supernet: SupernetNB201, arch) -> set[str]:
    """Names of the parameters ``arch`` uses: the skeleton's, and its op on each edge of every cell."""
    ops = {f"edges.{e}.{op}." for e, op in enumerate(arch)}
    return {name for name, _ in supernet.named_parameters()
            if ".edges." not in name or any(f in name for f in ops)}


def test_a_step_on_one_path_changes_exactly_that_paths_weights(space):
    torch.manual_seed(0)
    supernet = SupernetNB201(space, NB201Config(cells_per_stage=2, channels=4), 10)
    arch = space.from_str(BEST_CIFAR10_CELL)  # parameters on every edge but 0->3 (skip)
    before = {name: p.detach().clone() for name, p in supernet.named_parameters()}
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(supernet(torch.randn(8, 3, 16, 16), arch), torch.arange(8)).backward()
    optimizer.step()
    changed = {name for name, p in supernet.named_parameters() if not torch.equal(p, before[name])}
    assert changed == path_parameters(supernet, arch)
    assert any(".edges.0.3." in name for name in changed) and not any(".edges.0.2." in name for name in changed)


def test_paths_share_their_modules_and_the_final_network_is_a_path(space):
    """Two architectures with the same op on an edge run the same module; the final network's weights
    are named as its path's in the supernet, so loaded from it, it computes what the supernet does."""
    torch.manual_seed(0)
    supernet = SupernetNB201(space, NB201Config(cells_per_stage=2, channels=4), 10)
    a, b = space.from_str(RESNET_CELL), space.from_str(BEST_CIFAR10_CELL)
    assert a[0] == b[0] == OPS.index("nor_conv_3x3")
    conv = supernet.cells[0].edges[0][str(a[0])]
    used = []
    handle = conv.register_forward_hook(lambda module, inputs, output: used.append(module))
    x = torch.randn(4, 3, 16, 16)
    supernet(x, a), supernet(x, b)
    handle.remove()
    assert used == [conv, conv]
    rng = random.Random(0)
    for arch in [a, b] + [space.random(rng) for _ in range(5)]:
        child = NetworkNB201(space, arch, NB201Config(cells_per_stage=2, channels=4), 10)
        missing, unexpected = child.load_state_dict(supernet.state_dict(), strict=False)
        assert all("running" in k or "num_batches" in k for k in missing)  # only the child's BN buffers
        assert {k for k in supernet.state_dict() if k not in unexpected} == path_parameters(supernet, arch)
        child.train()  # batch statistics, as the supernet always uses
        with torch.no_grad():
            torch.testing.assert_close(child(x)[0], supernet(x, arch))
    assert len(EDGES) == 6


@pytest.mark.parametrize("space_name", ["nb201", "nao_cnn"])
def test_fair_paths_take_every_value_of_every_slot(space_name):
    from rnas.spaces import get_space
    from rnas.training.supernet import fair_paths
    space = get_space(space_name)
    rng = random.Random(0)
    paths = fair_paths(space, rng)
    assert len(paths) == max(slot.n_choices for slot in space.slots)
    assert all(space.is_valid(p) for p in paths)
    for position, slot in enumerate(space.slots):
        assert {p[position] for p in paths} == set(range(slot.n_choices))
    assert fair_paths(space, rng) != paths  # a fresh draw per batch


def test_fair_sampling_runs_every_op_of_every_edge_once_per_step(space):
    from rnas.data.images import ImageBatches
    from rnas.training.supernet import SupernetTrainConfig, SupernetTrainer
    from tests.synthetic import brightness_split
    torch.manual_seed(0)
    supernet = SupernetNB201(space, NB201Config(cells_per_stage=1, channels=4), 4,
                             in_channels=1)
    runs = {}
    for name, module in supernet.named_modules():
        if ".edges." in name and name.count(".") == 4:  # cells.<i>.edges.<e>.<op>
            runs[name] = 0
            module.register_forward_hook(lambda m, i, o, name=name: runs.__setitem__(name, runs[name] + 1))
    assert len(runs) == 3 * len(EDGES) * (len(OPS) - 1)  # `none` has no module
    cfg = SupernetTrainConfig(epochs=1, batch_size=16, path_sampling="fair")
    trainer = SupernetTrainer(supernet, cfg, torch.device("cpu"), total_epochs=1, seed=0)
    batches = ImageBatches(brightness_split(16), 16, torch.device("cpu"), shuffle=True)
    record, = trainer.train_epochs([space.random(random.Random(0))], 1, batches)  # one batch, one step
    assert set(runs.values()) == {1}
    assert record["n_archs"] == 1 and 0 <= record["accuracy"] <= 1
