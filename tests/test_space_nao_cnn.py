import random

import pytest

from rnas.spaces import available_spaces, get_space
from rnas.spaces.nao_cnn import NAONET_B_36, NAONET_WS


@pytest.fixture(scope="module")
def space():
    return get_space("nao_cnn")


def test_registry_lists_space_and_rejects_unknown():
    assert "nao_cnn" in available_spaces()
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        get_space("nope")


def test_token_layout_matches_reference(space):
    assert (space.seq_len, space.vocab_size, space.n_steps) == (40, 12, 20)
    mask = space.legal_token_mask()
    # node 2's input slots: nodes 0..1 -> tokens 1..2; op slots: tokens 7..11; node 6: tokens 1..6
    assert mask[0].nonzero().flatten().tolist() == [1, 2]
    assert mask[1].nonzero().flatten().tolist() == [7, 8, 9, 10, 11]
    assert mask[16].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6]
    assert not mask[:, 0].any()


@pytest.mark.parametrize("text", [NAONET_WS, NAONET_B_36])
def test_published_cells_round_trip(space, text):
    arch = space.from_str(text)
    assert space.to_str(arch) == text
    assert space.from_tokens(space.to_tokens(arch)) == arch
    assert space.from_str(space.to_str(space.canonical(arch))) == space.canonical(arch)


def test_loose_ends_of_naonet_ws(space):
    normal, reduction = space.cells(space.from_str(NAONET_WS))
    assert space.loose_ends(normal) == [3, 4, 5, 6]
    assert space.loose_ends(reduction) == [3, 4, 5, 6]  # only nodes 0-2 are read


def test_random_architectures_are_valid_and_cover_all_choices(space):
    rng = random.Random(0)
    archs = [space.random(rng) for _ in range(500)]
    assert all(space.is_valid(a) for a in archs)
    for pos, slot in enumerate(space.slots):
        assert {a[pos] for a in archs} == set(range(slot.n_choices))


def test_invalid_architectures_are_rejected(space):
    arch = list(space.from_str(NAONET_WS))
    arch[0] = 2  # node 2 cannot read node 2
    with pytest.raises(ValueError, match="position 0"):
        space.validate(arch)
    with pytest.raises(ValueError, match="expected 40"):
        space.validate(arch[:-1])
    with pytest.raises(ValueError, match="not a list of integers"):
        space.from_str("0 1 a")


def test_canonical_form_identifies_branch_swaps(space):
    rng = random.Random(1)
    for _ in range(200):
        arch = space.random(rng)
        variant = space.symmetric_variant(arch, rng)
        assert space.canonical(variant) == space.canonical(arch)
        assert space.canonical(space.canonical(arch)) == space.canonical(arch)
    a, b = space.random(rng), space.random(rng)
    assert space.canonical(a) != space.canonical(b) or sorted(a) == sorted(b)


def test_sample_unique_dedups_on_canonical_form(space):
    archs = space.sample_unique(300, random.Random(2))
    assert len(archs) == 300 == len({space.canonical(a) for a in archs})
    again = space.sample_unique(50, random.Random(2), exclude=set(archs))
    assert not set(again) & set(archs)


def test_mutate_changes_exactly_one_slot(space):
    rng = random.Random(3)
    for _ in range(100):
        arch = space.random(rng)
        child = space.mutate(arch, rng)
        assert space.is_valid(child)
        assert sum(x != y for x, y in zip(arch, child)) == 1


def test_cell_graphs_describe_both_cells(space):
    normal, reduction = space.cell_graphs(space.from_str(NAONET_WS))
    assert (normal.name, reduction.name) == ("normal", "reduction")
    assert len([e for e in normal.edges if e[2] != "concat"]) == 10
    assert {e[0] for e in normal.edges if e[2] == "concat"} == {"3", "4", "5", "6"}
