"""The combined ranking (rnas.search.ranking) on hand-computed cases, and the tuning/reporting protocol
(rnas.judging.truth.Judging, reference_cells) that keeps settings off the reported numbers."""
from __future__ import annotations

import math
import random

import pytest
import torch

from rnas.config import ConfigError, from_dict
from rnas.judging.rank_stats import kendall_tau
from rnas.export import build_network
from rnas.networks.nb201 import NB201Config
from rnas.tasks import parse_params
from rnas.search.pool import ArchPool
from rnas.search.ranking import (RANKING, RankingConfig, add_ranking, cell_seed, combined_scores, rank_percentiles,
                                 signal_scores)
from rnas.search.rerank import candidates
from rnas.spaces.nb201 import NB201Space
from rnas.judging.truth import (FIRST_TUNING_SEED, MAX_REFERENCE_CELLS, Judging, TruthConfig, is_tuning_seed,
                        reference_cells)

SPACE = NB201Space()


def test_rank_percentiles_by_hand():
    # ranks 4, 1, 2.5, 2.5 (ties share their mean) -> (rank - 1) / 3
    assert rank_percentiles([3.0, 1.0, 2.0, 2.0]) == [1.0, 0.0, 0.5, 0.5]
    # -inf (a singular NASWOT kernel) and NaN (no value) rank lowest, tied with each other
    assert rank_percentiles([0.0, -math.inf, math.nan, 5.0]) == [2 / 3, 1 / 6, 1 / 6, 1.0]
    assert rank_percentiles([7.0]) == [0.5] and rank_percentiles([]) == []


def test_combined_scores_weight_each_members_percentiles():
    members = {"supernet": [1.0, 2.0, 3.0], "params": [30.0, 20.0, 10.0]}
    # percentiles [0, .5, 1] and [1, .5, 0]: with weights 3 and 1, (3 * [0, .5, 1] + [1, .5, 0]) / 4
    assert combined_scores(members, {"supernet": 3, "params": 1}) == [0.25, 0.5, 0.75]
    assert combined_scores(members, {"supernet": 1, "params": 1}) == [0.5, 0.5, 0.5]
    # a member of weight 0 does not rank
    assert combined_scores(members, {"supernet": 1, "params": 0}) == [0.0, 0.5, 1.0]


def test_combined_ranking_recovers_an_order_that_each_member_gets_wrong():
    truth = [0, 1, 2, 3, 4, 5]
    a = [1, 0, 2, 3, 5, 4]       # swaps the cells 0/1 and 4/5
    b = [0, 2, 1, 4, 3, 5]       # swaps 1/2 and 3/4: its errors are where a is right
    assert kendall_tau(a, truth) == kendall_tau(b, truth) == pytest.approx(11 / 15)
    # percentiles a: [.2, 0, .4, .6, 1, .8], b: [0, .4, .2, .8, .6, 1] -> means [.1, .2, .3, .7, .8, .9]
    combined = combined_scores({"a": a, "b": b}, {"a": 1, "b": 1})
    assert combined == pytest.approx([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert kendall_tau(combined, truth) == 1.0


def test_combined_scores_refuse_a_missing_member_or_unequal_lengths():
    with pytest.raises(ValueError, match="no values for"):
        combined_scores({"supernet": [1.0]}, {"supernet": 1, "naswot": 1})
    with pytest.raises(ValueError, match="different numbers"):
        combined_scores({"a": [1.0, 2.0], "b": [1.0]}, {"a": 1, "b": 1})


def test_add_ranking_writes_signal_columns_and_the_ranking_the_top_follows():
    archs = SPACE.sample_unique(3, random.Random(0))
    pool = ArchPool(SPACE, archs, [0.3, 0.2, 0.1])
    add_ranking(pool, {"params": [1.0, 2.0, 3.0]}, {"supernet": 1, "params": 3})
    assert pool.columns["signal_params"] == [1.0, 2.0, 3.0]
    assert pool.columns[RANKING] == [0.25, 0.5, 0.75]  # (1 * [1, .5, 0] + 3 * [0, .5, 1]) / 4
    assert pool.top(1, by=pool.columns[RANKING]).archs == [archs[2]]
    assert pool.top(1).archs == [archs[0]]  # by supernet score, as before
    assert candidates(pool, 2, by=pool.columns[RANKING]).archs == [archs[2], archs[1]]


def test_a_cells_signals_do_not_depend_on_the_other_cells_scored_with_it():
    child = NB201Config(cells_per_stage=1, channels=4)
    cells = [SPACE.to_str(a) for a in SPACE.sample_unique(3, random.Random(1))]
    images, labels = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10

    def scores(archs, seed=5):
        return signal_scores(lambda arch: build_network(arch, child, 10, 3, "nb201"), archs, images, labels,
                             ["snip", "params"], seed)

    forward, backward = scores(cells), scores(cells[::-1])
    assert forward["snip"] == backward["snip"][::-1] and forward["params"] == backward["params"][::-1]
    assert scores(cells[:1])["snip"] == forward["snip"][:1]
    assert scores(cells[:1], seed=6)["snip"] != forward["snip"][:1]  # the seed initialises the weights
    assert cell_seed(5, cells[0]) != cell_seed(5, cells[1])


@pytest.mark.parametrize("ranking, key", [
    ({"signals": ["bogus"]}, "search.ranking.signals"),
    ({"signals": ["params", "params"]}, "search.ranking.signals"),
    ({"signals": ["params"], "weights": {"naswot": 1}}, "search.ranking.weights.naswot"),
    ({"weights": {"bogus": 0}}, "search.ranking.weights.bogus"),
    ({"signals": ["params"], "weights": {"params": -1}}, "search.ranking.weights.params"),
    ({"weights": {"supernet": 0}}, "search.ranking.weights"),
    ({"batch_size": 1}, "search.ranking.batch_size"),
])
def test_bad_ranking_settings_name_their_key(ranking, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(RankingConfig, ranking, "search.ranking")


def test_a_zero_weight_on_a_signal_not_computed_is_accepted():
    assert from_dict(RankingConfig, {"weights": {"supernet": 1, "naswot": 0}}).signals == []


def test_signals_are_refused_for_the_language_task_and_bad_network_keys_before_any_work():
    with pytest.raises(ConfigError, match=r"search\.ranking\.signals: .*task 'language'"):
        parse_params({"task": "language", "space": "rnn", "retrain": {"train_on_valid": False},
                      "search": {"ranking": {"signals": ["params"]}}})
    with pytest.raises(ConfigError, match=r"search\.ranking\.child\.bogus"):
        parse_params({"search": {"ranking": {"child": {"bogus": 1}}}})


def test_tuning_seeds_are_judged_on_validation_and_reported_seeds_on_test():
    cfg = TruthConfig(select_col="valid_acc_200ep", report_col="test_acc_200ep")
    assert Judging.of(0, cfg) == Judging("report", "test_acc_200ep")
    assert Judging.of(FIRST_TUNING_SEED - 1, cfg).role == "report"
    assert Judging.of(FIRST_TUNING_SEED, cfg) == Judging("tune", "valid_acc_200ep")
    assert [is_tuning_seed(s) for s in (0, 4, 99, 100, 101)] == [False] * 3 + [True] * 2


def test_tuning_reference_cells_are_disjoint_from_every_reported_set():
    reported = reference_cells(SPACE, MAX_REFERENCE_CELLS, seed=0)
    tuning = reference_cells(SPACE, 200, seed=FIRST_TUNING_SEED)
    assert len(set(tuning)) == 200 and not set(tuning) & set(reported)
    assert reference_cells(SPACE, 200, seed=FIRST_TUNING_SEED + 7) == tuning  # one set for every tuning seed
    assert reference_cells(SPACE, 20, seed=3) == reported[:20]  # a reported run's cells: a prefix of the same draw
    with pytest.raises(ValueError, match="at most"):
        reference_cells(SPACE, MAX_REFERENCE_CELLS + 1)
    with pytest.raises(ConfigError, match=r"search\.reference_cells"):
        parse_params({"search": {"reference_cells": MAX_REFERENCE_CELLS + 1}})


def test_the_image_task_scores_cells_on_a_batch_of_the_training_split(tmp_path):
    from rnas.data.images import ImageBatches, load_split
    from rnas.data.prepare import DataConfig, prepare_dataset
    from rnas.tasks.image import ImageTask, signal_network

    prepare_dataset(DataConfig(dataset="digits", max_train=200), tmp_path)
    params = parse_params({"space": "nb201", "retrain": {"child": {"cells_per_stage": 1, "channels": 8}},
                           "search": {"ranking": {"signals": ["snip", "naswot"], "batch_size": 16,
                                                  "child": {"channels": 4}}}})
    assert signal_network(params).channels == 4 and signal_network(params).cells_per_stage == 1
    cells = [SPACE.to_str(a) for a in SPACE.sample_unique(2, random.Random(2))]
    got = ImageTask().cheap_signals(params, "nb201", tmp_path, cells, torch.device("cpu"), seed=3)

    train = load_split(tmp_path, "train")
    images, labels = next(iter(ImageBatches(train, 16, torch.device("cpu"), shuffle=True, seed=3)))
    expected = signal_scores(lambda arch: build_network(arch, signal_network(params), 10, 1, "nb201"),
                             cells, images, labels, ["snip", "naswot"], 3)
    assert got == expected
