import random
import statistics

import pytest
import torch

from rnas.config import ConfigError, from_dict
from rnas.spaces import get_space
from rnas.strategies import Observation, available_strategies, make_strategy
from rnas.strategies.rnas import MRASConfig, mras_search


def sphere(target, scale=200.0):
    """A bounded objective in (0, 1], like the predictor's sigmoid, peaked at ``target``."""
    def objective(x):
        return torch.exp(-((x - target) ** 2).sum(dim=1) / scale)
    return objective


@pytest.mark.parametrize("options", [{}, {"adaptive": False}, {"density_ratio": True}, {"mixture": 0.1}])
def test_mras_raises_a_known_objective(options):
    gen = torch.Generator().manual_seed(0)
    target = torch.full((16,), 2.0)
    init = torch.randn(50, 16, generator=gen)
    cfg = MRASConfig(iterations=40, samples=100, **options)
    result = mras_search(sphere(target), init, cfg, gen)
    start = ((init - target) ** 2).sum(dim=1).min().item()   # ~47: the best starting point
    end = ((result.mean - target) ** 2).sum().item()
    assert end < start / 3
    assert result.trace[-1]["h_of_mean"] > sphere(target)(init).max().item() + 0.1
    gammas = [row["gamma"] for row in result.trace]
    assert gammas == sorted(gammas) if options.get("adaptive", True) else gammas[-1] > gammas[0]


def test_mras_is_deterministic_for_a_seed():
    init = torch.randn(30, 8, generator=torch.Generator().manual_seed(1))
    runs = [mras_search(sphere(torch.ones(8)), init, MRASConfig(iterations=10),
                        torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)]
    assert torch.equal(runs[0].mean, runs[1].mean)
    assert runs[0].trace == runs[1].trace
    assert not torch.equal(runs[0].mean, runs[2].mean)


def test_mras_calls_the_objective_once_per_iteration():
    calls = []

    def objective(x):
        calls.append(x.shape[0])
        return -x.pow(2).sum(dim=1)

    mras_search(objective, torch.randn(20, 4), MRASConfig(iterations=7, samples=20), torch.Generator())
    assert len(calls) == 7


def test_mras_grows_the_sample_size_when_gamma_stalls():
    # a flat objective never raises gamma: MRAS proper grows N each iteration up to the cap
    flat = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    cfg = MRASConfig(iterations=6, samples=10, max_samples=20, growth=1.5)
    result = mras_search(flat, torch.randn(10, 3), cfg, torch.Generator().manual_seed(0))
    # iteration k is drawn with the size decided after iteration k - 1
    assert [r["n_samples"] for r in result.trace] == [10, 10, 15, 20, 20, 20]


def test_variance_is_centred_on_the_new_mean():
    # one iteration, full smoothing, all samples elite with equal weights (r = 0):
    # the new variance must be the plain population variance around the new mean
    x = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    cfg = MRASConfig(iterations=1, samples=4, rho=0.99, r=0.0, smoothing=1.0, variance_floor=1e-9)
    result = mras_search(lambda z: torch.zeros(z.shape[0]), x, cfg, torch.Generator())
    assert result.mean.item() == pytest.approx(3.0)
    assert result.variance.item() == pytest.approx(5.0)


def test_mras_config_validation():
    with pytest.raises(ConfigError, match="rho"):
        from_dict(MRASConfig, {"rho": 1.5}, "mras")
    with pytest.raises(ConfigError, match="max_samples"):
        from_dict(MRASConfig, {"samples": 50, "max_samples": 10}, "mras")


def test_embedding_strategies_improve_a_synthetic_objective():
    torch.set_num_threads(1)
    assert {"rnas", "nao"} <= set(available_strategies())
    space = get_space("nao_cnn")
    archs = space.sample_unique(150, random.Random(0))
    score = lambda a: sum(a[i] == 0 for i in range(1, 40, 2)) / 20  # noqa: E731
    history = [Observation(a, score(a)) for a in archs]
    top = statistics.mean(sorted(map(score, archs))[-30:])
    small = {"controller": {"token_embedding": 16, "hidden": 32, "mlp_hidden": 64},
             "train": {"epochs": 40, "batch_size": 50, "lr": 3e-3}, "top_k": 30}
    for name, extra in (("rnas", {"mras": {"iterations": 15}, "final_samples": 100}), ("nao", {})):
        strategy = make_strategy(name, space, {**small, **extra}, seed=0)
        new = strategy.propose(history, 30)
        assert len(new) == 30 and len(set(new)) == 30
        assert not set(new) & {space.canonical(a) for a in archs}
        assert all(space.is_valid(a) for a in new)
        assert statistics.mean(map(score, new)) > top, name


def test_unknown_strategy_option_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown parameter search\.rnas\.mras\.iterationz"):
        make_strategy("rnas", get_space("nao_cnn"), {"mras": {"iterationz": 3}}, key="search.rnas")


def test_embedding_strategies_start_random_and_never_come_back_empty():
    space = get_space("nao_cnn")
    options = {"controller": {"token_embedding": 8, "hidden": 16, "mlp_hidden": 16},
               "train": {"epochs": 2}, "initial_random": 5, "top_k": 3}
    for name in ("rnas", "nao"):
        strategy = make_strategy(name, space, {**options, **({"mras": {"iterations": 2}} if name == "rnas" else {})})
        first = strategy.propose([], 5)
        assert len(first) == 5 and strategy.fits == 0          # random start: nothing to fit yet
        history = [Observation(a, 1.0) for a in first]       # constant scores: nothing to climb
        assert len(strategy.propose(history, 40)) == 40 and strategy.fits == 1
