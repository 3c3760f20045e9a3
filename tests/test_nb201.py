"""NAS-Bench-201 space, table oracle, random search and regularized evolution."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from rnas.config import ConfigError
from rnas.judging.oracle import TableOracle
from rnas.spaces import get_space
from rnas.spaces.nb201 import BEST_CIFAR10_CELL, OPS, RESNET_CELL, NB201Space
from rnas.strategies import make_strategy
from rnas.strategies.base import Observation

REAL_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "cifar10.csv"
ALL_ARCHS = list(itertools.product(range(len(OPS)), repeat=6))


@pytest.fixture
def space() -> NB201Space:
    return NB201Space()


def hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


# --- space --------------------------------------------------------------------------------
def test_found_by_name():
    space = get_space("nb201")
    assert isinstance(space, NB201Space)
    assert (space.seq_len, space.vocab_size, space.tokens_per_step, space.n_steps) == (6, 6, 1, 6)


def test_resnet_cell_round_trip(space):
    arch = space.from_str(RESNET_CELL)
    # edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
    assert arch == (3, 0, 3, 1, 0, 1)
    assert space.to_str(arch) == RESNET_CELL
    assert space.to_tokens(arch) == [4, 1, 4, 2, 1, 2]
    assert space.from_tokens(space.to_tokens(arch)) == arch
    assert space.from_str(BEST_CIFAR10_CELL) == (3, 3, 3, 1, 3, 2)


def test_all_15625_cells_have_distinct_strings_that_round_trip(space):
    strings = [space.to_str(a) for a in ALL_ARCHS]
    assert len(set(strings)) == len(ALL_ARCHS) == 15_625
    assert all(space.from_str(s) == a for s, a in zip(strings, ALL_ARCHS))
    assert all(space.canonical(a) == a for a in ALL_ARCHS)


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "expected 3 nodes"),
    ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|skip_connect~2|", "node 2 needs 2 edges"),
    ("|conv_5x5~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", "unknown op 'conv_5x5'"),
    ("|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", "edge 0->1"),
    ("|nor_conv_3x3|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", "edge 0->1"),
    ("nor_conv_3x3~0+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", "node 1 must look like"),
])
def test_from_str_errors_say_what_is_wrong(space, text, message):
    with pytest.raises(ValueError, match=message):
        space.from_str(text)


def test_legal_token_mask_decodes_any_logits_to_a_valid_cell(space):
    mask = space.legal_token_mask()
    assert mask.shape == (6, 6)
    assert not mask[:, 0].any() and mask[:, 1:].all()  # token 0 is SOS/EOS, never an op
    logits = torch.randn(500, 6, 6, generator=torch.Generator().manual_seed(0))
    tokens = logits.masked_fill(~mask, -torch.inf).argmax(-1)
    archs = {space.from_tokens(row.tolist()) for row in tokens}
    assert len(archs) > 400 and all(space.is_valid(a) for a in archs)
    with pytest.raises(ValueError):
        space.from_tokens([0, 1, 1, 1, 1, 1])


def test_cell_graph_leaves_out_none_edges(space):
    graph, = space.cell_graphs(space.from_str(RESNET_CELL))
    assert graph.inputs == ("0",) and graph.output == "3"
    assert set(graph.edges) == {("0", "1", "nor_conv_3x3"), ("1", "2", "nor_conv_3x3"),
                                ("0", "3", "skip_connect"), ("2", "3", "skip_connect")}


# --- oracle --------------------------------------------------------------------------------
def synthetic_table(space: NB201Space, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """``rows`` distinct random cells; the best row by valid and by test is the last one."""
    rng = random.Random(seed)
    archs = space.sample_unique(rows, rng)
    valid = [rng.uniform(50, 80) for _ in archs]
    test = [v + rng.uniform(0, 5) for v in valid]
    valid[-1], test[-1] = 90.0, 95.0
    return pd.DataFrame({"arch_str": [space.to_str(a) for a in archs], "valid": valid, "test": test,
                         "seconds": [rng.uniform(10, 20) for _ in archs]})


def test_oracle_reads_the_columns_it_is_told(space, tmp_path):
    frame = synthetic_table(space)
    frame.to_csv(tmp_path / "t.csv", index=False)
    oracle = TableOracle.from_csv(tmp_path / "t.csv", space, "valid", "test", "seconds")
    assert len(oracle) == 200
    for row in frame.sample(20, random_state=0).itertuples():
        assert oracle.query(space.from_str(row.arch_str)) == pytest.approx((row.valid, row.test, row.seconds))
    assert oracle.best_report == oracle.report_of_best_select == 95.0
    swapped = TableOracle.from_csv(tmp_path / "t.csv", space, "test", "valid")
    assert swapped.query(space.from_str(frame.arch_str[0])).cost == 0.0


def test_oracle_errors_name_the_problem(space, tmp_path):
    frame = synthetic_table(space, rows=20)
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TableOracle.from_csv(tmp_path / "missing.csv", space, "valid", "test")
    with pytest.raises(ValueError, match="no column 'valid_acc_12ep'"):
        TableOracle.from_csv(tmp_path / "t.csv", space, "valid_acc_12ep", "test")
    with pytest.raises(ValueError, match="no column 'secs'"):
        TableOracle.from_csv(tmp_path / "t.csv", space, "valid", "test", "secs")
    oracle = TableOracle.from_frame(frame, space, "valid", "test")
    absent = next(a for a in ALL_ARCHS if a not in oracle)
    with pytest.raises(KeyError, match="not in the table"):
        oracle.query(absent)
    with pytest.raises(ValueError, match="appears twice"):
        TableOracle.from_frame(pd.concat([frame, frame.head(1)]), space, "valid", "test")
    garbled = frame.copy()
    garbled.loc[5, "arch_str"] = "|nor_conv_3x3~0|"
    with pytest.raises(ValueError, match="row 5: nb201: expected 3 nodes"):
        TableOracle.from_frame(garbled, space, "valid", "test")
    broken = frame.astype({"test": object})
    broken.loc[3, "test"] = "n/a"
    with pytest.raises(ValueError, match="column 'test' has a missing or non-numeric value at row 3"):
        TableOracle.from_frame(broken, space, "valid", "test")


@pytest.mark.skipif(not REAL_TABLE.exists(), reason="the shared NAS-Bench-201 table is not here")
def test_real_table_has_every_cell_once(space):
    oracle = TableOracle.from_csv(REAL_TABLE, space, "valid_acc_12ep", "test_acc_200ep", "train_seconds_12ep")
    assert len(oracle) == 15_625
    assert oracle.query(space.from_str(RESNET_CELL)).report == pytest.approx(93.97, abs=0.005)
    assert oracle.best_report == pytest.approx(94.37, abs=0.005)


# --- strategies ----------------------------------------------------------------------------
def observe(archs, score=lambda a: float(sum(a))) -> list[Observation]:
    return [Observation(a, score(a)) for a in archs]


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_proposals_are_new_distinct_and_deterministic(space, name):
    history = observe(space.sample_unique(30, random.Random(1)))
    first = make_strategy(name, space, {"batch_size": 8}, seed=3).propose(history, 8)
    again = make_strategy(name, space, {"batch_size": 8}, seed=3).propose(history, 8)
    other = make_strategy(name, space, {"batch_size": 8}, seed=4).propose(history, 8)
    assert first == again != other
    assert len(first) == len(set(first)) == 8
    assert not set(first) & {o.arch for o in history}


def test_evolution_starts_with_a_random_population(space):
    evolution = make_strategy("evolution", space, {"population": 10}, seed=0)
    first = evolution.propose([], 4)
    assert len(first) == 4
    # 7 observed: only the 3 missing members of the first population are proposed, still random
    history = observe(space.sample_unique(7, random.Random(2)))
    assert len(evolution.propose(history, 5)) == 3


def test_evolution_mutates_one_slot_of_a_member_of_the_latest_population(space):
    history = observe(space.sample_unique(40, random.Random(5)))
    evolution = make_strategy("evolution", space, {"population": 10, "tournament": 3}, seed=0)
    population = {o.arch for o in history[-10:]}
    for child in evolution.propose(history, 50):
        assert any(hamming(child, parent) == 1 for parent in population)
    # population 1: the only parent is the most recent observation
    newest_only = make_strategy("evolution", space, {"population": 1, "tournament": 1}, seed=0)
    assert all(hamming(c, history[-1].arch) == 1 for c in newest_only.propose(history, 10))


def test_evolution_picks_the_tournament_winner(space):
    # drawn with replacement, a tournament of 10 from 10 holds the best member 65% of the time,
    # a tournament of 1 holds it 10% of the time: the winner, not a random member, is the parent
    history = observe(space.sample_unique(10, random.Random(6)))
    best = max(history, key=lambda o: o.score).arch

    def children_of_best(tournament: int) -> int:
        return sum(hamming(child, best) == 1
                   for seed in range(5)
                   for child in make_strategy("evolution", space, {"tournament": tournament}, seed=seed)
                   .propose(history, 20))

    assert children_of_best(10) >= 45 and children_of_best(1) <= 25


def test_evolution_falls_back_to_a_random_cell_when_every_mutation_was_seen(space):
    parent = (3, 0, 3, 1, 0, 1)
    neighbours = [parent[:i] + (v,) + parent[i + 1:] for i in range(6) for v in range(5) if v != parent[i]]
    history = observe(neighbours + [parent])
    evolution = make_strategy("evolution", space, {"population": 1, "tournament": 1}, seed=0)
    child, = evolution.propose(history, 1)
    assert child not in {o.arch for o in history}


def test_strategy_options_are_validated(space):
    with pytest.raises(ConfigError, match="strategies.evolution.tournament"):
        make_strategy("evolution", space, {"population": 3, "tournament": 4}, key="strategies.evolution")
    with pytest.raises(ConfigError, match="unknown parameter strategies.random.size"):
        make_strategy("random", space, {"size": 3}, key="strategies.random")
