"""Fitting the controller to a scored pool (rnas.search.embedding), without the embed stage."""
from __future__ import annotations

import math
import random

import pytest

from rnas.search.controller import ControllerConfig, ControllerTrainConfig, build_controller, normalise_targets
from rnas.search.embedding import fit_embedding, holdout_split, in_score_units, tau_caveat
from rnas.search.pool import ArchPool
from rnas.spaces.nb201 import NB201Space

SPACE = NB201Space()


def test_holdout_split_is_a_fixed_partition():
    fit, held = holdout_split(20, 0.25, seed=3)
    assert len(held) == 5 and sorted(fit + held) == list(range(20))
    assert (fit, held) == holdout_split(20, 0.25, seed=3) and held != holdout_split(20, 0.25, seed=4)[1]
    assert len(holdout_split(5, 0.1, seed=0)[1]) == 2  # at least two cells, or a tau means nothing
    assert holdout_split(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])


def test_predicted_targets_go_back_to_score_units():
    scores = [-2.0, -1.0, -1.5, 0.0]
    assert in_score_units(normalise_targets(scores), scores) == pytest.approx(scores)
    assert in_score_units([0.5], scores) == [-1.0]


def test_a_tau_on_scores_that_tell_nothing_apart_is_nan_with_the_reason():
    archs = SPACE.sample_unique(4, random.Random(0))
    blind = ArchPool(SPACE, archs, [0.5] * 4)
    caveat = tau_caveat(blind, [0.5, 0.5])
    assert math.isnan(caveat["kendall_tau"]) and "scores all 4 cells" in caveat["kendall_tau_reason"]
    scored = ArchPool(SPACE, archs, [0.1, 0.2, 0.3, 0.4])
    assert tau_caveat(scored, [0.1, 0.2]) == {}
    assert tau_caveat(scored, [0.3, 0.3])["kendall_tau_reason"] == "the held-out cells' scores are all equal"


def test_fit_embedding_judges_the_held_out_cells():
    archs = SPACE.sample_unique(12, random.Random(1))
    pool = ArchPool(SPACE, archs, [float(SPACE.to_str(a).count("conv")) for a in archs])
    controller = build_controller(SPACE, ControllerConfig(token_embedding=8, hidden=16, mlp_layers=1, mlp_hidden=16,
                                                          dropout=0.0), seed=0)
    fit = fit_embedding(controller, pool, ControllerTrainConfig(epochs=2, batch_size=4), 0.25, seed=0)
    held = holdout_split(12, 0.25, seed=0)[1]
    assert fit.metrics["held_out"] == 3 and list(fit.holdout["arch"]) == [SPACE.to_str(archs[i]) for i in held]
    assert list(fit.holdout["measured"]) == [pool.scores[i] for i in held]
    assert fit.latent.shape[0] == 12 and -1 <= fit.metrics["kendall_tau"] <= 1
