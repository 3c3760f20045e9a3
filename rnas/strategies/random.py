"""Random search: uniform architectures, distinct and not observed before."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rnas.config import require
from rnas.spaces.base import Arch
from rnas.strategies.base import Observation, SearchStrategy


@dataclass(frozen=True)
class RandomConfig:
    #: architectures proposed per call
    batch_size: int = 1
    #: random draws allowed per proposed architecture before giving up (a nearly exhausted space)
    max_tries_per_arch: int = 1000

    def check(self) -> None:
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.max_tries_per_arch >= 1, "max_tries_per_arch", "must be at least 1")


class RandomSearch(SearchStrategy):
    name = "random"
    Config = RandomConfig

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        return self.space.sample_unique(n, self.rng, exclude=self.seen(history),
                                        max_tries=n * self.config.max_tries_per_arch)


STRATEGY = RandomSearch
