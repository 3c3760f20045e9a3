"""Regularized (aging) evolution, as run on NAS-Bench-201 (Real et al. 2019; Dong & Yang 2020).

The population is not kept as state: it is read off the history. Until ``population``
architectures have been observed, proposals are random; after that the population is the last ``population`` observations in
history order (the oldest ones have aged out), and each child is a one-slot mutation of the
best of ``tournament`` members drawn at random, with replacement, as in the reference code.
Given the same history and the same RNG state, it proposes the same architectures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rnas.config import require
from rnas.spaces.base import Arch
from rnas.strategies.base import Observation, SearchStrategy


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 10
    #: members drawn per tournament; the best one is the parent
    tournament: int = 3
    #: architectures proposed per call
    batch_size: int = 1
    #: mutations tried per child before falling back to a random unseen architecture
    max_mutation_tries: int = 50

    def check(self) -> None:
        require(self.population >= 1, "population", "must be at least 1")
        require(1 <= self.tournament <= self.population, "tournament", "must be between 1 and population")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.max_mutation_tries >= 1, "max_mutation_tries", "must be at least 1")


class RegularizedEvolution(SearchStrategy):
    name = "evolution"
    Config = EvolutionConfig

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        taken = self.seen(history)
        missing = self.config.population - len(history)
        if missing > 0:  # children only once the first population has been observed
            return self.space.sample_unique(min(n, missing), self.rng, exclude=taken)
        population = list(history[-self.config.population:])
        proposals: list[Arch] = []
        while len(proposals) < n:
            child = self._child(population, taken)
            if child is None:
                break
            taken.add(child)
            proposals.append(child)
        return proposals

    def _child(self, population: list[Observation], taken: set[Arch]) -> Arch | None:
        """A mutation of the tournament winner not yet taken; a random new one if none is found."""
        contestants = [self.rng.choice(population) for _ in range(self.config.tournament)]
        parent = max(contestants, key=lambda o: o.score)
        for _ in range(self.config.max_mutation_tries):
            child = self.space.canonical(self.space.mutate(parent.arch, self.rng))
            if child not in taken:
                return child
        fallback = self.space.sample_unique(1, self.rng, exclude=taken)
        return fallback[0] if fallback else None


STRATEGY = RegularizedEvolution
