"""The interface every search strategy implements: propose from what has been observed.

Scores are always "higher is better"; a caller optimising a loss passes ``-loss``.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

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
