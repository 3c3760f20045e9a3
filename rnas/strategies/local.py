"""Local search: propose the unseen neighbours of the best observed architecture.

A neighbour differs in one slot (any other legal value). Proposals are the unseen neighbours of
the best observed architecture, in random order; once all of them are observed (a local optimum
fully explored, or a better one found), the search continues around the next best observed, so
it climbs while it can and widens when it is stuck. Until ``initial_random`` architectures are
observed, and when every observed one has no unseen neighbour, proposals are random (White et
al. 2021, "Local search is state of the art for NAS benchmarks", run the same way on NB201).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rnas.config import require
from rnas.spaces.base import Arch, SearchSpace
from rnas.strategies.base import Observation, SearchStrategy


@dataclass(frozen=True)
class LocalConfig:
    #: architectures proposed per call
    batch_size: int = 1
    #: random architectures observed before the first neighbour is proposed
    initial_random: int = 1

    def check(self) -> None:
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.initial_random >= 1, "initial_random", "must be at least 1")


def neighbours(space: SearchSpace, arch: Arch) -> list[Arch]:
    """Every architecture one slot away from ``arch``, canonical and distinct, in slot order."""
    out: dict[Arch, None] = {}
    for pos, slot in enumerate(space.slots):
        for value in range(slot.n_choices):
            if value != arch[pos]:
                out[space.canonical(arch[:pos] + (value,) + arch[pos + 1:])] = None
    out.pop(space.canonical(arch), None)
    return list(out)


class LocalSearch(SearchStrategy):
    name = "local"
    Config = LocalConfig

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        taken = self.seen(history)
        proposals: list[Arch] = []
        if len(history) >= self.config.initial_random:
            for parent in sorted(history, key=lambda o: -o.score):  # stable: the earlier on ties
                fresh = [a for a in neighbours(self.space, parent.arch) if a not in taken]
                self.rng.shuffle(fresh)
                proposals += fresh[:n - len(proposals)]
                taken.update(fresh)
                if len(proposals) == n:
                    return proposals
        return proposals + self.space.sample_unique(n - len(proposals), self.rng, exclude=taken)


STRATEGY = LocalSearch
