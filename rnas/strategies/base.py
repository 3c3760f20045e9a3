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
from rnas.controller import (ControllerConfig, ControllerTrainConfig, build_controller, normalise_targets,
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

    def seen(self, history: Sequence[Observation]) -> set[Arch]:
        return {self.space.canonical(o.arch) for o in history}


@dataclass
class EmbeddingConfig:
    """Options shared by the strategies that search in the controller's latent space."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: ControllerTrainConfig = field(default_factory=ControllerTrainConfig)
    top_k: int = 100              # moves start from the encodings of the top-k observed
    batch_size: int = 10          # architectures proposed per call in a query-by-query search
    initial_random: int = 10      # propose random architectures until this many are observed
    #: 0: propose the first n new architectures the moves decode to (the reference). c > 0:
    #: decode until max(n, c) new ones are found, propose the n the predictor rates highest
    candidates: int = 0

    def check(self):
        for key in ("top_k", "batch_size", "initial_random"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.candidates >= 0, "candidates", "must be >= 0")


class EmbeddingStrategy(SearchStrategy):
    """A strategy that fits the controller to what it observed and moves in its latent space.

    Subclasses implement ``moves(latent, n)``: candidate latent points, best first, from the
    encodings of the top architectures; decoding and deduplication are shared here.
    """

    def __init__(self, space: SearchSpace, config, seed: int = 0):
        super().__init__(space, config, seed)
        self.controller = build_controller(space, config.controller, seed)
        self.fits = 0
        self.last_fit: dict = {}
        #: how many of the last call's proposals came from the moves (the rest: random fill)
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
        """Moves in the embedding once enough is observed; random architectures fill any shortfall
        (a collapsed search distribution), so a proposal is never empty while the space is not."""
        proposed = []
        if len(history) >= self.config.initial_random:
            if self.fitted_on != tuple(history):
                self.fit(history)
            proposed = self.generate(history, n)
        self.last_generated = len(proposed)
        return proposed + self.space.sample_unique(n - len(proposed), self.rng,
                                                   exclude=self.seen(history) | set(proposed))

    def generate(self, history: Sequence[Observation], n: int) -> list[Arch]:
        """Up to ``n`` new architectures from the latent neighbourhood of the top ``top_k``: the
        first ones the moves decode to, or the ``n`` best rated of the first ``candidates``."""
        top = sorted(history, key=lambda o: -o.score)[:self.config.top_k]
        with torch.no_grad():
            latent = self.controller.encode(self.controller.tokens([o.arch for o in top]))
        found = self._decode_new(latent, max(n, self.config.candidates), self.seen(history))
        if len(found) <= n:
            return found
        # rate what was decoded, not the latent point it came from: the two can disagree
        with torch.no_grad():
            predicted = self.controller.predict(self.controller.encode(self.controller.tokens(found)))
        return [found[i] for i in predicted.argsort(descending=True)[:n].tolist()]

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
