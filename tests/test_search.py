"""The search rounds (rnas.search.rounds) without DVC: a stand-in supernet whose score is known per cell."""
from __future__ import annotations

import math
import random
import statistics

from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING, RankingConfig
from rnas.search.rounds import (FRESH_CELLS_SEED_OFFSET, RoundsConfig, fresh_cells_rng, rank_final_pool, rank_pools,
                                rescore, screen, search_rounds)
from rnas.spaces.nb201 import NB201Space
from rnas.strategies import make_strategy
from rnas.strategies.base import Observation, SearchStrategy

SPACE = NB201Space()


class CountingSupernet:
    """Scores a cell by its number of 3x3 convolutions plus the epochs trained so far (so a rescore
    after training changes every score); records what it was asked."""

    def __init__(self):
        self.epochs, self.scored, self.trained = 0, [], []

    def score(self, archs, label="score"):
        self.scored.append(list(archs))
        return [float(SPACE.to_str(a).count("nor_conv_3x3") + self.epochs) for a in archs]

    def train_epochs(self, archs, n_epochs, on_epoch=None, label="supernet"):
        self.trained.append((list(archs), n_epochs))
        for _ in range(n_epochs):
            self.epochs += 1
            if on_epoch is not None:
                on_epoch({"epoch": self.epochs, "loss": 1.0})
        return []


class TracedStrategy(SearchStrategy):
    """Proposes the random cells with the most 3x3 convolutions; its trace names the call."""
    name, Config = "traced", dict

    def __init__(self):
        super().__init__(SPACE, {}, seed=0)
        self.calls = 0

    def propose(self, history, n):
        self.calls += 1
        seen = self.seen(history)
        cells = SPACE.sample_unique(50, self.rng, exclude=seen)
        return sorted(cells, key=lambda a: -SPACE.to_str(a).count("nor_conv_3x3"))[:n]

    def trace(self):
        return [{"iteration": 0, "call": self.calls}]


def warm_pool(n: int = 20, seed: int = 0) -> ArchPool:
    supernet = CountingSupernet()
    archs = SPACE.sample_unique(n, random.Random(seed))
    return ArchPool(SPACE, archs, supernet.score(archs), {"round": [0] * n})


def run(strategy, epochs_per_round=2, rounds=3, pool_size=20):
    supernet, rounds_seen, epochs_seen = CountingSupernet(), [], []
    record = search_rounds(supernet, strategy, warm_pool(pool_size), RoundsConfig(rounds, 6, 4, epochs_per_round,
                                                                                  pool_size),
                           random.Random(1), on_round=rounds_seen.append, on_epoch=epochs_seen.append)
    return supernet, record, rounds_seen, epochs_seen


def test_rounds_keep_the_pool_size_and_say_where_each_cell_came_from():
    supernet, record, rounds_seen, epochs_seen = run(TracedStrategy())
    assert len(record.pools) == 3 and all(len(pool) == 20 for pool in record.pools)
    for round_, pool in enumerate(record.pools, start=1):
        new = [o for o, r in zip(pool.columns["origin"], pool.columns["round"]) if r == round_]
        assert new.count("proposed") == 6 and new.count("random") == 4
    # each round's pool is what the supernet trained on, for epochs_per_round epochs
    assert [(archs, n) for archs, n in supernet.trained] == [(pool.archs, 2) for pool in record.pools]
    assert [r["epoch"] for r in epochs_seen] == [1, 2, 3, 4, 5, 6]
    # a summary per round, and one for the final pool; the final pool scored by the final supernet
    assert [r["round"] for r in rounds_seen] == [1, 2, 3] and [r["round"] for r in record.rounds] == [1, 2, 3, 4]


def test_the_final_pool_is_scored_by_the_trained_supernet():
    supernet, record, _, _ = run(TracedStrategy())
    assert record.pool.scores == [SPACE.to_str(a).count("nor_conv_3x3") + 6.0 for a in record.pool.archs]
    # round 2's summary: the pool of round 1 rescored after 2 epochs, its newcomers by origin
    pool = record.pools[0]
    scores = [SPACE.to_str(a).count("nor_conv_3x3") + 2.0 for a in pool.archs]
    summary = record.rounds[1]
    assert summary["best"] == max(scores) and summary["median"] == statistics.median(scores)
    for origin, n in (("proposed", 6), ("random", 4)):
        new = [s for s, o, r in zip(scores, pool.columns["origin"], pool.columns["round"]) if o == origin and r == 1]
        assert len(new) == n and math.isclose(summary[f"{origin}_mean"], sum(new) / n)


def test_the_strategys_trace_is_collected_per_round():
    _, record, _, _ = run(TracedStrategy())
    assert record.trace == [{"round": r, "iteration": 0, "call": r} for r in (1, 2, 3)]
    _, record, _, _ = run(make_strategy("random", SPACE, {}, seed=0))
    assert record.trace == []


def test_an_untrained_supernet_scores_only_the_new_cells():
    pool = warm_pool(5).extend(SPACE.sample_unique(3, random.Random(9), exclude=set(warm_pool(5).archs)))
    supernet = CountingSupernet()
    scores = rescore(supernet, pool, "x", trained=False)
    assert supernet.scored == [pool.archs[5:]] and scores[:5] == pool.scores[:5]
    assert not any(math.isnan(s) for s in scores)
    rescore(supernet, pool, "x", trained=True)
    assert supernet.scored[-1] == pool.archs


def test_screen_adds_fresh_scored_cells():
    pool = warm_pool(10)
    pool.columns["origin"] = ["seed"] * 10
    screened = screen(CountingSupernet(), pool, 5, random.Random(3), round_=4)
    assert len(screened) == 15 and screened.archs[:10] == pool.archs
    assert screened.columns["origin"][10:] == ["screened"] * 5 and screened.columns["round"][10:] == [4] * 5
    assert screen(CountingSupernet(), pool, 0, random.Random(3), round_=4) is pool


def test_rank_pools_computes_each_distinct_cell_once():
    a, b = warm_pool(6), warm_pool(6)  # the same cells: each must be computed once
    calls = []

    def signals(archs):
        calls.append(archs)
        return {"params": [float(SPACE.to_str(SPACE.from_str(s)).count("conv")) for s in archs]}

    rank_pools([a, b], signals, ["params"], {"supernet": 0, "params": 1})
    assert len(calls) == 1 and len(calls[0]) == 6
    assert a.columns["signal_params"] == b.columns["signal_params"]
    order = a.order(a.columns[RANKING])
    assert [a.columns["signal_params"][i] for i in order] == sorted(a.columns["signal_params"], reverse=True)
    # no signals named: none computed, the ranking is the supernet's
    rank_pools([a], lambda archs: calls.append(archs), [], {"supernet": 1})
    assert len(calls) == 1 and a.order(a.columns[RANKING]) == a.order()


def test_fresh_cells_come_from_their_own_stream():
    assert FRESH_CELLS_SEED_OFFSET != 0
    assert fresh_cells_rng(5).random() == random.Random(5 + FRESH_CELLS_SEED_OFFSET).random()


def test_rnas_trace_is_that_of_the_last_proposal():
    strategy = make_strategy("rnas", SPACE, {"initial_random": 10, "top_k": 5, "final_samples": 20,
                                             "mras": {"iterations": 2, "samples": 10},
                                             "train": {"epochs": 2, "refit_epochs": 1}}, seed=0)
    history = [Observation(a, float(i)) for i, a in enumerate(SPACE.sample_unique(12, random.Random(0)))]
    strategy.propose(history, 3)
    assert [row["iteration"] for row in strategy.trace()] == [1, 2]
    strategy.propose(history[:5], 3)  # fewer than initial_random observed: random cells, no MRAS
    assert strategy.trace() == []


def test_the_final_ranking_scores_reference_and_screened_cells_and_picks_the_top():
    pool = warm_pool(8)
    pool.columns["origin"] = ["seed"] * 8
    reference = SPACE.sample_unique(5, random.Random(42))
    supernet = CountingSupernet()
    ranking = RankingConfig(signals=["params"], weights={"supernet": 0, "params": 1}, screen=3)
    ranked = rank_final_pool(supernet, pool, reference, ranking,
                             lambda archs: {"params": [float(a.count("conv")) for a in archs]},
                             random.Random(0), round_=2, top=4)
    assert ranked.reference.archs == [SPACE.canonical(a) for a in reference]
    assert ranked.reference.scores == supernet.score(ranked.reference.archs)
    assert len(ranked.pool) == 11 and ranked.pool.columns["origin"][8:] == ["screened"] * 3
    # the top follows the ranking (params alone here), not the supernet
    convs = [SPACE.to_str(a).count("conv") for a in ranked.top.archs]
    assert len(ranked.top) == 4 and convs == sorted(convs, reverse=True)
    assert min(convs) >= sorted((SPACE.to_str(a).count("conv") for a in ranked.pool.archs), reverse=True)[3]
