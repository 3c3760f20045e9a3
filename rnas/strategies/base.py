"""The interface every search strategy implements: propose from what has been observed.

Scores are always "higher is better"; a caller optimising a loss passes ``-loss``.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Sequence

import torch

from rnas.config import require
from rnas.search.controller import (ControllerConfig, ControllerTrainConfig, build_controller, normalise_targets,
                                    train_controller)
from rnas.spaces.base import Arch, SearchSpace


@dataclass(frozen=True)
class Observation:
    arch: Arch
    score: float


class SearchStrategy(ABC):
    name: ClassVar[str]
    #: the options dataclass this strategy takes (validated by ``rnas.config.from_dict``)
    Config: ClassVar[type]

    def __init__(self, space: SearchSpace, config, seed: int = 0):
        self.space, self.config, self.seed = space, config, seed
        self.rng = random.Random(seed)

    @abstractmethod
    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """Up to ``n`` architectures, canonical, distinct, none already in ``history``."""

    def trace(self) -> list[dict]:
        """One row per iteration of the inner search that the last ``propose`` ran (RNAS: MRAS's
        iterations); empty for a strategy without one."""
        return []

    def seen(self, history: Sequence[Observation]) -> set[Arch]:
        return {self.space.canonical(o.arch) for o in history}


@dataclass
class EmbeddingConfig:
    """Options shared by the strategies that fit the controller to what they observed."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: ControllerTrainConfig = field(default_factory=ControllerTrainConfig)
    batch_size: int = 10          # architectures proposed per call in a query-by-query search
    initial_random: int = 10      # propose random architectures until this many are observed
    #: 0: propose the first n new candidates (for a latent search: the first n its moves decode
    #: to, the reference). c > 0: find max(n, c) new candidates, propose the n the predictor rates highest
    candidates: int = 0

    def check(self):
        for key in ("batch_size", "initial_random"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.candidates >= 0, "candidates", "must be >= 0")


@dataclass
class LatentSearchConfig(EmbeddingConfig):
    """Options of the strategies that move in the controller's latent space."""
    top_k: int = 100              # moves start from the encodings of the top-k observed

    def check(self):
        super().check()
        require(self.top_k > 0, "top_k", "must be positive")


class EmbeddingStrategy(SearchStrategy):
    """A strategy that fits the controller (encoder - predictor - decoder) to what it observed.

    Subclasses implement ``candidates(history, n)``: up to ``n`` new architectures; with
    ``config.candidates`` set, the predictor picks the best rated of them.
    """

    def __init__(self, space: SearchSpace, config, seed: int = 0):
        super().__init__(space, config, seed)
        self.controller = build_controller(space, config.controller, seed)
        self.fits = 0
        self.last_fit: dict = {}
        #: how many of the last call's proposals came from the strategy (the rest: random fill)
        self.last_generated = 0
        self.fitted_on: tuple[Observation, ...] | None = None

    def fit(self, history: Sequence[Observation]) -> dict:
        epochs = self.config.train.epochs if self.fits == 0 else self.config.train.refit_epochs
        self.last_fit = train_controller(self.controller, [o.arch for o in history],
                                         normalise_targets([o.score for o in history], self.config.train.targets),
                                         self.config.train, epochs, seed=self.seed + self.fits)
        self.fits += 1
        self.fitted_on = tuple(history)
        return self.last_fit

    def adopt(self, state_dict: dict, history: Sequence[Observation]) -> None:
        """Take a controller already fitted on ``history`` (e.g. by the pipeline's embed stage)."""
        self.controller.load_state_dict(state_dict)
        self.controller.eval()
        self.fits = max(self.fits, 1)
        self.fitted_on = tuple(history)

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """The strategy's candidates once enough is observed; random architectures fill any
        shortfall (a collapsed search distribution), so a proposal is never empty while the space is not."""
        proposed = []
        if len(history) >= self.config.initial_random:
            if self.fitted_on != tuple(history):
                self.fit(history)
            proposed = self.generate(history, n)
        self.last_generated = len(proposed)
        return proposed + self.space.sample_unique(n - len(proposed), self.rng,
                                                   exclude=self.seen(history) | set(proposed))

    def generate(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """Up to ``n`` new architectures: the first candidates, or the ``n`` best rated of the first
        ``config.candidates``."""
        found = self.candidates(history, max(n, self.config.candidates))
        return found if len(found) <= n else self.best_rated(found, n)

    @torch.no_grad()
    def best_rated(self, archs: Sequence[Arch], n: int) -> list[Arch]:
        """The ``n`` of ``archs`` the predictor rates highest (on their encodings), best first."""
        predicted = self.controller.predict(self.controller.encode(self.controller.tokens(archs)))
        return [archs[i] for i in predicted.argsort(descending=True)[:n].tolist()]

    @abstractmethod
    def candidates(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """Up to ``n`` distinct canonical architectures not in ``history``, most promising first."""


class LatentSearchStrategy(EmbeddingStrategy):
    """Candidates decoded from moves in the latent space, starting at the top ``top_k``'s encodings.

    Subclasses implement ``moves(latent, n)``; decoding and deduplication are shared here.
    """

    def candidates(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """The first ``n`` new architectures the moves from the top ``top_k`` decode to."""
        top = sorted(history, key=lambda o: -o.score)[:self.config.top_k]
        with torch.no_grad():
            latent = self.controller.encode(self.controller.tokens([o.arch for o in top]))
        return self._decode_new(latent, n, self.seen(history))

    def _decode_new(self, latent: torch.Tensor, n: int, exclude: set[Arch]) -> list[Arch]:
        """The first ``n`` distinct architectures not in ``exclude`` that the moves decode to."""
        exclude = set(exclude)
        out: list[Arch] = []
        for candidates in self.moves(latent, n):
            for arch in self.controller.decode_archs(candidates):
                arch = self.space.canonical(arch)
                if arch not in exclude:
                    exclude.add(arch)
                    out.append(arch)
                    if len(out) == n:
                        return out
        return out

    @abstractmethod
    def moves(self, latent: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
        """Yield batches of latent points [B, T, d] to decode, most promising first."""
