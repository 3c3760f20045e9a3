"""RNAS: Model Reference Adaptive Search (MRAS) in the controller's latent space (ALGORITHM.md §4).

``mras_search`` is a vectorised, cross-entropy-style adaptive sampler over a diagonal Gaussian:
one batched objective call per iteration, elite weights ``S(H)^k / f(x; theta_k)`` in log space,
the covariance centred on the NEW mean, and MRAS's threshold/sample-size adaptation. The
published code's bugs (indicator returning H, dead density ratio and adaptation, Sigma around the
old mean, per-sample Python loops) are not reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor

from rnas.config import require
from rnas.controller import Controller
from rnas.strategies.base import LatentSearchConfig, LatentSearchStrategy


@dataclass
class MRASConfig:
    iterations: int = 50          # K
    samples: int = 100            # N, per iteration (grows by `growth` when gamma stalls)
    max_samples: int = 1000
    rho: float = 0.05             # elite fraction: gamma = (1 - rho) sample quantile
    r: float = 1.0                # S(h) = exp(r h); weights use S(H)^k
    eps: float = 1e-3             # gamma must rise by eps/2 to be accepted (adaptive mode)
    growth: float = 1.2           # alpha: sample-size factor when gamma stalls
    adaptive: bool = True         # MRAS proper: gamma acceptance + sample-size growth
    density_ratio: bool = False   # divide weights by the sampling density f(x; theta_k)
    smoothing: float = 0.7        # nu: theta <- nu * new + (1 - nu) * old
    variance_floor: float = 1e-4
    init_variance_scale: float = 1.0  # scales the initial variance (of the top-k encodings)
    mixture: float = 0.0          # fraction of each iteration's samples drawn from the initial Gaussian

    def check(self):
        for key in ("iterations", "samples", "max_samples"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.max_samples >= self.samples, "max_samples", "must be >= samples")
        require(0 < self.rho < 1, "rho", "must be in (0, 1)")
        require(self.growth >= 1, "growth", "must be >= 1")
        require(0 < self.smoothing <= 1, "smoothing", "must be in (0, 1]")
        require(self.variance_floor > 0, "variance_floor", "must be positive")
        require(0 <= self.mixture < 1, "mixture", "must be in [0, 1)")


@dataclass
class MRASResult:
    mean: Tensor                  # [D]
    variance: Tensor              # [D]
    trace: list[dict] = field(default_factory=list)

    def sample(self, n: int, generator: torch.Generator, sigma_scale: float = 1.0) -> Tensor:
        noise = torch.randn(n, self.mean.numel(), generator=generator, dtype=self.mean.dtype)
        return self.mean + noise.to(self.mean.device) * self.variance.sqrt() * sigma_scale


def _gaussian_log_density(x: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    return -0.5 * (((x - mean) ** 2 / variance) + variance.log() + math.log(2 * math.pi)).sum(dim=-1)


def mras_search(objective: Callable[[Tensor], Tensor], init: Tensor, cfg: MRASConfig,
                generator: torch.Generator,
                on_iteration: Callable[[dict], None] | None = None) -> MRASResult:
    """Maximise ``objective`` (batched: [N, D] -> [N]) starting from the points ``init`` [N0, D]."""
    init_mean = init.mean(dim=0)
    init_var = (init.var(dim=0, unbiased=False) * cfg.init_variance_scale).clamp_min(cfg.variance_floor)
    mean, var = init_mean.clone(), init_var.clone()
    x, drawn = init, False          # the first iteration scores the given points themselves
    n_samples, gamma = cfg.samples, -math.inf
    trace: list[dict] = []
    for k in range(1, cfg.iterations + 1):
        # one objective call scores the samples and the mean they were drawn around
        scored = objective(torch.cat([x, mean[None]]))
        h, h_of_mean = scored[:-1], scored[-1].item()
        candidate = torch.quantile(h, 1 - cfg.rho).item()
        if cfg.adaptive and k > 1 and candidate < gamma + cfg.eps / 2:
            n_samples = min(math.ceil(n_samples * cfg.growth), cfg.max_samples)
        else:
            gamma = candidate
        elite = h >= gamma
        if elite.any():
            log_w = k * cfg.r * h
            if cfg.density_ratio and drawn:
                log_w = log_w - _sampling_log_density(x, mean, var, init_mean, init_var, cfg.mixture)
            w = torch.softmax(log_w.masked_fill(~elite, -math.inf), dim=0)
            new_mean = w @ x
            new_var = w @ (x - new_mean) ** 2
            mean = cfg.smoothing * new_mean + (1 - cfg.smoothing) * mean
            var = (cfg.smoothing * new_var + (1 - cfg.smoothing) * var).clamp_min(cfg.variance_floor)
        row = {"iteration": k, "gamma": gamma, "n_samples": int(x.shape[0]),
               "elites": int(elite.sum()), "best": h.max().item(), "mean_h": h.mean().item(),
               "h_of_mean": h_of_mean, "max_sigma": var.max().sqrt().item()}
        trace.append(row)
        if on_iteration is not None:
            on_iteration(row)
        x = _draw(n_samples, mean, var, init_mean, init_var, cfg.mixture, generator)
        drawn = True
    return MRASResult(mean, var, trace)


def _draw(n: int, mean: Tensor, var: Tensor, init_mean: Tensor, init_var: Tensor, mixture: float,
          generator: torch.Generator) -> Tensor:
    noise = torch.randn(n, mean.numel(), generator=generator).to(mean)
    x = mean + noise * var.sqrt()
    if mixture > 0:
        explore = torch.rand(n, generator=generator).to(mean.device) < mixture
        x = torch.where(explore[:, None], init_mean + noise * init_var.sqrt(), x)
    return x


def _sampling_log_density(x: Tensor, mean: Tensor, var: Tensor, init_mean: Tensor, init_var: Tensor,
                          mixture: float) -> Tensor:
    log_f = _gaussian_log_density(x, mean, var)
    if mixture == 0:
        return log_f
    log_f0 = _gaussian_log_density(x, init_mean, init_var)
    return torch.logaddexp(log_f + math.log(1 - mixture), log_f0 + math.log(mixture))


def latent_objective(controller: Controller, shape: tuple[int, ...],
                     score_decoded: bool) -> Callable[[Tensor], Tensor]:
    """H for MRAS: flattened latent points [N, T * d] -> predicted performance [N], in one batch.

    ``score_decoded``: rate the architecture each point decodes to (re-encoded) instead of the point.
    """
    @torch.no_grad()
    def objective(x: Tensor) -> Tensor:
        points = x.view(-1, *shape)
        if score_decoded:
            points = controller.encode(controller.decode(points))
        return controller.predict(points)
    return objective


@dataclass
class RNASConfig(LatentSearchConfig):
    mras: MRASConfig = field(default_factory=MRASConfig)
    final_samples: int = 299      # M: decoded from the final distribution (besides its mean)
    max_draws: int = 20           # batches of M drawn at most while new architectures are short
    widen: float = 1.5            # each further batch is drawn with sigma scaled by this much more
    #: H(x) = predictor on the encoding of the architecture x decodes to, not on x itself (§4
    #: scores x): the predictor's maximum in the latent space can lie off the architectures,
    #: rated far higher than what it decodes to
    score_decoded: bool = False

    def check(self):
        super().check()
        for key in ("final_samples", "max_draws"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.widen >= 1, "widen", "must be >= 1")


class RNASStrategy(LatentSearchStrategy):
    name = "rnas"
    Config = RNASConfig

    def __init__(self, space, config: RNASConfig, seed: int = 0):
        super().__init__(space, config, seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_search: MRASResult | None = None

    def moves(self, latent: Tensor, n: int) -> Iterator[Tensor]:
        shape = latent.shape[1:]
        objective = latent_objective(self.controller, shape, self.config.score_decoded)
        result = mras_search(objective, latent.flatten(1), self.config.mras, self.generator)
        self.last_search = result
        yield result.mean.view(1, *shape)
        # The final distribution is often narrow: when its samples decode to too few new
        # architectures, widen it step by step around the same mean.
        for draw in range(self.config.max_draws):
            scale = self.config.widen ** draw
            yield result.sample(self.config.final_samples, self.generator, scale).view(-1, *shape)


STRATEGY = RNASStrategy
