import math
import random
import statistics

import pytest
import torch

from rnas.config import ConfigError, from_dict
from rnas.search.controller import normalise_targets
from rnas.spaces import get_space
from rnas.strategies import Observation, available_strategies, make_strategy
from rnas.strategies.rnas import MRASConfig, effective_sample_size, mras_search, temper


def sphere(target, scale=200.0):
    """A bounded objective in (0, 1], like the predictor's sigmoid, peaked at ``target``."""
    def objective(x):
        return torch.exp(-((x - target) ** 2).sum(dim=1) / scale)
    return objective


@pytest.mark.trained
@pytest.mark.parametrize("options", [{}, {"adaptive": False}, {"weighting": "ce"}, {"mixture": 0.3}])
def test_mras_raises_a_known_objective(options, seed, bound):
    gen = torch.Generator().manual_seed(seed)
    target = torch.full((16,), 2.0)
    init = torch.randn(50, 16, generator=gen)
    cfg = MRASConfig(iterations=40, samples=100, **options)
    result = mras_search(sphere(target), init, cfg, gen)
    start = ((init - target) ** 2).sum(dim=1).min().item()   # ~47: the best starting point
    end = ((result.mean - target) ** 2).sum().item()
    bound("distance to the peak / best start", end / start, "<", 1 / 3)
    bound("objective at the mean - best start", result.trace[-1]["h_of_mean"] - sphere(target)(init).max().item(),
          ">", 0.1)
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
    # one iteration, full smoothing, all samples elite with equal weights (ce):
    # the new variance must be the plain population variance around the new mean
    x = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    cfg = MRASConfig(weighting="ce", iterations=1, samples=4, rho=0.99, smoothing=1.0, variance_floor=1e-9)
    result = mras_search(lambda z: torch.zeros(z.shape[0]), x, cfg, torch.Generator())
    assert result.mean.item() == pytest.approx(3.0)
    assert result.variance.item() == pytest.approx(5.0)


def test_one_mras_iteration_against_a_hand_computation():
    # five starting points, H(x) = x: gamma = the median 2, elites 2, 3, 4 with ranks 0, 1/2, 1;
    # iteration k = 1, r = 1: weights e^0, e^0.5, e^1 (no density ratio: the points were given)
    x = torch.tensor([[0.0, 10.0], [1.0, 10.0], [2.0, 13.0], [3.0, 11.0], [4.0, 12.0]], dtype=torch.float64)
    cfg = MRASConfig(iterations=1, rho=0.5, r=1.0, ess_min=0.1, smoothing=0.6, variance_floor=1e-9)
    result = mras_search(lambda z: z[:, 0], x, cfg, torch.Generator())
    w = [math.exp(0.0), math.exp(0.5), math.exp(1.0)]
    w = [v / sum(w) for v in w]
    elites = [[2.0, 13.0], [3.0, 11.0], [4.0, 12.0]]
    new_mean = [sum(wi * e[j] for wi, e in zip(w, elites)) for j in range(2)]
    new_var = [sum(wi * (e[j] - new_mean[j]) ** 2 for wi, e in zip(w, elites)) for j in range(2)]
    old_mean, old_var = [2.0, 11.2], [2.0, 1.36]   # of the five points
    assert result.mean.tolist() == pytest.approx([0.6 * n + 0.4 * o for n, o in zip(new_mean, old_mean)])
    assert result.variance.tolist() == pytest.approx([0.6 * n + 0.4 * o for n, o in zip(new_var, old_var)])
    row = result.trace[0]
    assert (row["gamma"], row["elites"], row["temperature"]) == (2.0, 3, 1.0)
    assert row["ess"] == pytest.approx(1 / sum(v * v for v in w))


def log_normal(x, mean, var):
    return sum(-0.5 * ((xi - m) ** 2 / v + math.log(2 * math.pi * v)) for xi, m, v in zip(x, mean, var))


def test_second_iteration_weights_carry_the_bounded_density_ratio():
    # iteration 2 scores points drawn from f~ = (1 - lam) f(theta_1) + lam f(theta_0); each elite's
    # weight is S(u)^2 f(x; theta_0) / f~(x), computed here by hand from the points it scored
    init = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    seen = []

    def objective(z):
        seen.append(z[:-1].clone())
        return z[:, 0] + z[:, 1]

    cfg = MRASConfig(iterations=2, samples=12, rho=0.3, r=0.5, ess_min=1e-6, mixture=0.25, smoothing=1.0,
                     variance_floor=1e-9)
    result = mras_search(objective, init, cfg, torch.Generator().manual_seed(3))
    # iteration 1: H = 0, 3, 3, 6; gamma = 0.7 quantile = 3.9: the one elite (3, 3) takes all the
    # weight, so theta_1 = ((3, 3), variance floor): draws from f(theta_1) sit on (3, 3)
    mean0, var0 = [1.5, 1.5], [1.25, 1.25]
    mean1, var1 = [3.0, 3.0], [1e-9, 1e-9]
    points = seen[1].tolist()
    h = [a + b for a, b in points]
    gamma = result.trace[1]["gamma"]
    assert gamma == pytest.approx(torch.quantile(torch.tensor(h, dtype=torch.float64), 0.7).item())
    elites = [(p, v) for p, v in zip(points, h) if v >= gamma]
    assert len(elites) == result.trace[1]["elites"] == 4
    log_w = []
    for p, v in elites:
        u = sum((v > o) + 0.5 * (v == o) for _, o in elites if o is not v) / (len(elites) - 1)
        log_f0, log_f1 = log_normal(p, mean0, var0), log_normal(p, mean1, var1)
        a, b = math.log(0.75) + log_f1, math.log(0.25) + log_f0
        log_mix = max(a, b) + math.log1p(math.exp(-abs(a - b)))
        log_w.append(2 * 0.5 * u + log_f0 - log_mix)
    w = [math.exp(v - max(log_w)) for v in log_w]
    w = [v / sum(w) for v in w]
    expected = [sum(wi * p[j] for wi, (p, _) in zip(w, elites)) for j in range(2)]
    assert result.mean.tolist() == pytest.approx(expected, rel=1e-9)
    assert result.trace[1]["temperature"] == 1.0


def test_tempering_keeps_the_ess_at_its_floor_and_no_higher_than_needed():
    log_w = torch.tensor([0.0, 1.0, 2.0, 3.0, 40.0], dtype=torch.float64)   # one sample would take all
    assert effective_sample_size(log_w) < 1.5
    tau = temper(log_w, 0.5)
    assert effective_sample_size(tau * log_w) == pytest.approx(2.5, rel=1e-6)
    assert temper(torch.tensor([0.0, 0.1, 0.2]), 0.5) == 1.0            # well conditioned: left as it is
    assert effective_sample_size(torch.zeros(4)) == pytest.approx(4.0)


def test_mras_weights_neither_collapse_nor_stay_uniform_in_a_high_dimensional_latent():
    # D = 384 (the NB201 latent): the density ratio alone would put all weight on one sample
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(100, 384, generator=gen, dtype=torch.float64)
    target = torch.full((384,), 0.5, dtype=torch.float64)
    result = mras_search(sphere(target, scale=2000.0), init, MRASConfig(iterations=15), gen)
    for row in result.trace[1:]:
        assert 1.5 < row["ess"] <= 0.5 * row["elites"] + 1e-6 or row["elites"] < 3
    assert min(row["max_sigma"] for row in result.trace) > 10 * math.sqrt(1e-4)


def test_threshold_and_sample_size_rule_step_by_step():
    # scripted H per iteration (N = 10 draws, rho = 0.2: gamma = the 0.8 quantile), eps = 0.2
    script = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],        # 1: gamma 7.2 accepted (the first)
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9.2],      # 2: 0.8 quantile 7.24 < 7.2 + 0.1: keep 7.2, N -> 15
        [0] * 11 + [7, 9, 9, 9],               # 3: 15 draws; 0.8 quantile 7.4 >= 7.3: gamma 7.4, N stays 15
        [7.45] * 15,                           # 4: 7.45 < 7.5: keep 7.4, N -> 23 (ceil 22.5), 15 elites
        [0.0] * 23,                            # 5: nothing reaches 7.4: no elite, N -> 25 (the cap)
    ]
    calls = []

    def objective(z):
        h = torch.tensor(script[len(calls)], dtype=z.dtype)
        calls.append(z.shape[0] - 1)
        return torch.cat([h, h[:1]])

    cfg = MRASConfig(iterations=5, samples=10, max_samples=25, rho=0.2, eps=0.2, growth=1.5)
    trace = mras_search(objective, torch.randn(10, 3), cfg, torch.Generator().manual_seed(0)).trace
    assert calls == [10, 10, 15, 15, 23]
    assert [row["gamma"] for row in trace] == pytest.approx([7.2, 7.2, 7.4, 7.4, 7.4])
    assert [row["elites"] for row in trace] == [2, 2, 3, 15, 0]
    assert math.isnan(trace[4]["ess"])


def test_mras_config_validation():
    with pytest.raises(ConfigError, match="rho"):
        from_dict(MRASConfig, {"rho": 1.5}, "mras")
    with pytest.raises(ConfigError, match="max_samples"):
        from_dict(MRASConfig, {"samples": 50, "max_samples": 10}, "mras")


@pytest.mark.trained
def test_embedding_strategies_improve_a_synthetic_objective(seed, bound):
    assert {"rnas", "nao"} <= set(available_strategies())
    space = get_space("nao_cnn")
    archs = space.sample_unique(150, random.Random(seed))
    score = lambda a: sum(a[i] == 0 for i in range(1, 40, 2)) / 20  # noqa: E731
    history = [Observation(a, score(a)) for a in archs]
    top = statistics.mean(sorted(map(score, archs))[-30:])
    small = {"controller": {"token_embedding": 16, "hidden": 32, "mlp_hidden": 64},
             "train": {"epochs": 40, "batch_size": 50, "lr": 3e-3}, "top_k": 30}
    for name, extra in (("rnas", {"mras": {"iterations": 15}, "final_samples": 100}), ("nao", {})):
        strategy = make_strategy(name, space, {**small, **extra}, seed=seed)
        new = strategy.propose(history, 30)
        assert len(new) == 30 and len(set(new)) == 30
        assert not set(new) & {space.canonical(a) for a in archs}
        assert all(space.is_valid(a) for a in new)
        bound(f"{name}: mean score of the proposals - mean of the pool's top 30", statistics.mean(map(score, new)) - top,
              ">", 0)


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


def test_nao_step_moves_uphill_on_a_known_predictor():
    # predictor H(z) = sum(c * z): its gradient is c, so the moves are z + i * step * c
    strategy = make_strategy("nao", get_space("nb201"), {"controller": {"token_embedding": 8, "hidden": 4},
                                                       "step": 0.5, "max_steps": 3})
    c = torch.arange(24, dtype=torch.float32).view(6, 4) / 24 - 0.5
    strategy.controller.predict = lambda z: (z * c).sum(dim=(1, 2))
    latent = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    moves = list(strategy.moves(latent, 1))
    assert len(moves) == 3
    for i, moved in enumerate(moves, start=1):
        assert torch.allclose(moved, latent + i * 0.5 * c)
    heights = [strategy.controller.predict(m) for m in [latent] + moves]
    assert all((b > a).all() for a, b in zip(heights, heights[1:]))


def test_embedding_strategies_never_propose_a_branch_swap_of_an_observed_cell():
    # a decoder that returns a branch-swapped twin of an observed cell must not have it proposed
    space = get_space("nao_cnn")
    observed = space.sample_unique(12, random.Random(0))
    twins = [space.symmetric_variant(a, random.Random(i)) for i, a in enumerate(observed)]
    assert any(t != space.canonical(t) for t in twins)
    fresh = space.sample_unique(3, random.Random(9), exclude={space.canonical(a) for a in observed})
    strategy = make_strategy("nao", space, {"controller": {"token_embedding": 8, "hidden": 8, "mlp_hidden": 8},
                                            "max_steps": 1, "top_k": 12}, seed=0)
    strategy.controller.decode_archs = lambda latent: twins + fresh
    found = strategy.candidates([Observation(a, 0.0) for a in observed], 10)
    assert found == [space.canonical(a) for a in fresh]


def test_a_loss_is_searched_downhill():
    # the language task measures a validation loss: the strategies must see -loss, so the
    # architecture with the lowest loss gets the highest target
    from rnas.tasks import get_task
    from rnas.tasks.base import Supernet

    class Losses:
        def score(self, archs, data, label="score"):
            return [4.0, 2.5, 3.0]

    from rnas.config import from_dict
    from rnas.tasks.image import ImageParams

    def scored(task: str, score_by: str = "accuracy") -> list[float]:
        params = from_dict(ImageParams, {"warmup": {"train": {"score_by": score_by}}})
        return Supernet(Losses(), None, None, get_task(task).objective(params)).score([(0,), (1,), (2,)])

    assert scored("language") == [-4.0, -2.5, -3.0]
    assert normalise_targets(scored("language")) == [0.0, 1.0, 2 / 3]
    assert scored("image") == [4.0, 2.5, 3.0]   # an accuracy is kept as it is
    assert scored("image", "loss") == [-4.0, -2.5, -3.0]
