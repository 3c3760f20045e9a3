"""The predictor filter: random unseen architectures ranked by the controller's predictor.

The ablation baseline for the embedding strategies: the same controller, fitted on the same
observations in the same way, but no move in the latent space. Each call draws
``candidates`` random architectures not yet observed and proposes the ``n`` the predictor rates
highest. What an embedding strategy gains over this comes from its latent search, not from
the predictor alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rnas.config import require
from rnas.spaces.base import Arch
from rnas.strategies.base import EmbeddingConfig, EmbeddingStrategy, Observation


@dataclass
class PredictorConfig(EmbeddingConfig):
    candidates: int = 100         # random unseen architectures rated per call

    def check(self):
        super().check()
        require(self.candidates > 0, "candidates", "must be positive (0 would be random search)")


class PredictorFilter(EmbeddingStrategy):
    name = "predictor"
    Config = PredictorConfig

    def candidates(self, history: Sequence[Observation], n: int) -> list[Arch]:
        return self.space.sample_unique(n, self.rng, exclude=self.seen(history))


STRATEGY = PredictorFilter
