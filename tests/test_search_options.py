"""Options of the embedding strategies that make them work with few observations (NAS-Bench-201),
and the benchmark's seed offset."""
from __future__ import annotations

import itertools
import random
import statistics

import pandas as pd
import pytest
import torch

from rnas.judging.benchmark import parse_args
from rnas.judging.table_search import BenchmarkConfig, Budget, TableSpec, run_benchmark
from rnas.config import ConfigError, from_dict
from rnas.search.controller import (ControllerConfig, ControllerTrainConfig, build_controller, evaluate_controller,
                                    normalise_targets, random_tokens, train_controller)
from rnas.spaces import get_space
from rnas.strategies import Observation, make_strategy
from rnas.strategies.rnas import latent_objective

SMALL_CONTROLLER = {"token_embedding": 16, "hidden": 32, "mlp_hidden": 64}


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


def test_rank_targets_spread_evenly_whatever_the_scores():
    # one broken architecture squeezes min-max targets of the others together; ranks do not care
    assert normalise_targets([10.0, 90.0, 91.0, 92.0]) == pytest.approx([0.0, 0.976, 0.988, 1.0], abs=1e-3)
    assert normalise_targets([10.0, 90.0, 91.0, 92.0], "rank") == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert normalise_targets([1.0, 2.0, 2.0, 3.0], "rank") == [0.0, 0.5, 0.5, 1.0]
    assert normalise_targets([7.0], "rank") == [0.5]
    with pytest.raises(ConfigError, match="train.targets"):
        from_dict(ControllerTrainConfig, {"targets": "zscore"}, "train")


@pytest.mark.parametrize("name", ["nb201", "nao_cnn"])
def test_random_tokens_are_legal_cover_every_choice_and_are_seeded(name):
    space = get_space(name)
    tokens = random_tokens(space, 3000, torch.Generator().manual_seed(0))
    legal = space.legal_token_mask()
    assert legal.gather(1, tokens.T).all()
    for position, slot in enumerate(space.slots):
        assert tokens[:, position].unique().numel() == slot.n_choices
    assert torch.equal(tokens, random_tokens(space, 3000, torch.Generator().manual_seed(0)))


@pytest.mark.trained
def test_unlabelled_architectures_teach_the_decoder_to_generalise(space, seed, bound):
    archs = space.sample_unique(130, random.Random(seed))
    observed, unseen = archs[:30], archs[30:]
    targets = normalise_targets([float(sum(a)) for a in observed])

    def unseen_reconstruction(unlabelled: int) -> float:
        controller = build_controller(space, ControllerConfig(**SMALL_CONTROLLER), seed=seed)
        cfg = ControllerTrainConfig(lr=3e-3, unlabelled=unlabelled)
        train_controller(controller, observed, targets, cfg, epochs=150, seed=seed)
        return evaluate_controller(controller, unseen, [0.0] * len(unseen))["reconstruction_arch_acc"]

    # without them the decoder memorises the 30 it saw and maps the others onto them
    bound("unseen cells rebuilt, 100 unlabelled a batch", unseen_reconstruction(100), ">", 0.4)
    bound("unseen cells rebuilt, none unlabelled", unseen_reconstruction(0), "<", 0.2)


def test_candidates_are_the_ones_the_predictor_rates_highest(space):
    history = [Observation(a, float(sum(a))) for a in space.sample_unique(30, random.Random(1))]
    options = {"controller": SMALL_CONTROLLER, "train": {"epochs": 30, "lr": 3e-3, "unlabelled": 100},
               "top_k": 10, "mras": {"iterations": 3}, "final_samples": 50}
    # the same seed and history: the same controller and the same MRAS draws
    plain = make_strategy("rnas", space, options, seed=0)
    plain.fit(history)
    found = plain.generate(history, 20)
    ranked = make_strategy("rnas", space, {**options, "candidates": 20}, seed=0)
    ranked.fit(history)
    chosen = ranked.generate(history, 5)
    assert len(found) == 20 and len(chosen) == 5 and set(chosen) <= set(found)
    assert chosen != found[:5]
    controller = ranked.controller
    with torch.no_grad():
        predicted = dict(zip(found, controller.predict(controller.encode(controller.tokens(found))).tolist()))
    assert min(predicted[a] for a in chosen) >= max(predicted[a] for a in found if a not in chosen)


def test_latent_objective_scores_the_point_or_what_it_decodes_to(space):
    controller = build_controller(space, ControllerConfig(**SMALL_CONTROLLER), seed=0)
    controller.eval()
    shape = controller.latent_shape
    x = torch.randn(50, shape[0] * shape[1], generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        on_point = controller.predict(x.view(-1, *shape))
        decoded = controller.decode(x.view(-1, *shape))
        on_decoded = controller.predict(controller.encode(decoded))
    assert torch.equal(latent_objective(controller, shape, score_decoded=False)(x), on_point)
    assert torch.equal(latent_objective(controller, shape, score_decoded=True)(x), on_decoded)
    assert not torch.allclose(on_point, on_decoded)
    # points that decode to the same architecture score the same
    same = [i for i in range(50) if torch.equal(decoded[i], decoded[0])]
    assert len(set(on_decoded[same].tolist())) == 1


def linear_table(path) -> TableSpec:
    space = get_space("nb201")
    archs = list(itertools.product(range(5), repeat=6))
    pd.DataFrame({"arch_str": [space.to_str(a) for a in archs], "valid": [float(sum(a)) for a in archs],
                  "test": [float(sum(a)) + 0.5 for a in archs]}).to_csv(path, index=False)
    return TableSpec("nb201", str(path), "valid", "test")


def test_seed_offset_runs_the_later_seeds(tmp_path):
    table = linear_table(tmp_path / "table.csv")
    config = dict(table=table, budget=Budget(queries=5), strategies=["random"])
    offset = run_benchmark(BenchmarkConfig(**config, seeds=2, seed_offset=3))
    first_five = run_benchmark(BenchmarkConfig(**config, seeds=5))
    assert [r.seed for r in offset] == [3, 4]
    assert [r.queries for r in offset] == [r.queries for r in first_five[3:]]
    assert first_five[0].queries != first_five[3].queries


def test_seed_offset_on_the_command_line(tmp_path):
    table = linear_table(tmp_path / "table.csv")
    args = ["nb201", "--table", table.path, "--select-col", "valid", "--report-col", "test",
            "--budget-queries", "5", "--strategies", "random", "--seeds", "2", "--out", str(tmp_path / "out")]
    assert parse_args(args)[0].seed_offset == 0
    assert parse_args(args + ["--seed-offset", "1000"])[0].seed_offset == 1000
    with pytest.raises(SystemExit):
        parse_args(args + ["--seed-offset", "-1"])


@pytest.mark.trained
def test_predictor_filter_fits_like_the_embedding_strategies_and_proposes_its_top_rated(space, seed, bound):
    history = [Observation(a, float(sum(a))) for a in space.sample_unique(40, random.Random(2 + seed))]
    options = {"controller": SMALL_CONTROLLER, "train": {"epochs": 30, "lr": 3e-3, "unlabelled": 50},
               "candidates": 60}
    predictor = make_strategy("predictor", space, options, seed=seed)
    rnas = make_strategy("rnas", space, {**options, "top_k": 10}, seed=seed)
    predictor.fit(history)
    rnas.fit(history)
    assert all(torch.equal(p, q) for p, q in zip(predictor.controller.parameters(), rnas.controller.parameters()))
    proposed = predictor.generate(history, 8)
    # the same seed draws the same random candidates: the proposals are their 8 best rated
    twin = make_strategy("predictor", space, options, seed=seed)
    twin.controller.load_state_dict(predictor.controller.state_dict())
    pool = twin.candidates(history, 60)
    assert len(pool) == 60 and not set(pool) & {o.arch for o in history}
    controller = predictor.controller
    with torch.no_grad():
        rated = controller.predict(controller.encode(controller.tokens(pool))).tolist()
    top = sorted(range(60), key=lambda i: -rated[i])[:8]
    assert proposed == [pool[i] for i in top]
    # the predictor learned the objective: what it picks beats what it was offered
    bound("mean op sum of the picked - of the offered", statistics.mean(map(sum, proposed)) - statistics.mean(map(sum, pool)),
          ">", 1)


def test_predictor_filter_needs_candidates():
    with pytest.raises(ConfigError, match="candidates"):
        make_strategy("predictor", get_space("nb201"), {"candidates": 0})


def test_local_search_proposes_unseen_neighbours_of_the_best_then_of_the_next_best(space):
    best, second = (0, 0, 0, 0, 0, 0), (4, 4, 4, 4, 4, 0)
    neighbours_of_best = {best[:p] + (v,) + best[p + 1:] for p in range(6) for v in range(1, 5)}
    history = [Observation(second, 1.0), Observation(best, 2.0)]
    local = make_strategy("local", space, {}, seed=0)
    first = local.propose(history, 10)
    assert len(first) == 10 and set(first) <= neighbours_of_best
    # all 24 neighbours of the best observed (and worse): it moves on to the next best
    history += [Observation(a, 0.0) for a in neighbours_of_best]
    after = local.propose(history, 30)
    next_door = {second[:p] + (v,) + second[p + 1:] for p in range(6) for v in range(5) if v != second[p]}
    assert set(after[:24]) == next_door - {o.arch for o in history}
    assert len(after) == 30 and len(set(after)) == 30
    assert not set(after) & {o.arch for o in history}


def test_local_search_starts_random_and_climbs_a_linear_table(tmp_path):
    table = linear_table(tmp_path / "table.csv")   # select = sum of the 6 ops: one peak, (4,) * 6
    results = run_benchmark(BenchmarkConfig(table=table, budget=Budget(queries=100),
                                            strategies=["local", "random"], seeds=3))
    local, rand = results[:3], results[3:]
    assert [r.final_report for r in local] == [24.5] * 3
    assert max(r.final_report for r in rand) < 24.5
