"""The interface every search space implements.

An architecture (`Arch`) is a tuple of small integers, one per *slot*. Each slot has a
number of legal values and a token offset: the controller sees ``value + offset``, token 0
is SOS/EOS. Random sampling, mutation, validation, token conversion and the legal-token
mask for constrained decoding all follow from the slot table, so a space only declares its
slots, its canonical form and its string format.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

Arch = tuple[int, ...]


@dataclass(frozen=True)
class Slot:
    n_choices: int
    token_offset: int


@dataclass(frozen=True)
class CellGraph:
    """A drawable DAG of one cell: node names in topological order, labelled edges."""
    name: str
    inputs: tuple[str, ...]
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]  # (source, target, op label)
    output: str


class SearchSpace(ABC):
    name: ClassVar[str]
    #: consecutive tokens the controller's encoder concatenates into one step
    tokens_per_step: ClassVar[int] = 1

    def __init__(self, slots: Sequence[Slot]):
        self.slots = tuple(slots)
        self.seq_len = len(self.slots)
        self.vocab_size = 1 + max(s.token_offset + s.n_choices - 1 for s in self.slots)
        if self.seq_len % self.tokens_per_step:
            raise ValueError(f"{self.name}: seq_len {self.seq_len} not a multiple of tokens_per_step")
        self.n_steps = self.seq_len // self.tokens_per_step

    # --- to be provided by each space -------------------------------------------------
    @abstractmethod
    def canonical(self, arch: Arch) -> Arch:
        """Representative of the architecture's equivalence class (used for dedup)."""

    def to_str(self, arch: Arch) -> str:
        """Default string form: the values, space-separated (the published cells' format)."""
        return " ".join(map(str, arch))

    def from_str(self, text: str) -> Arch:
        try:
            values = [int(v) for v in text.replace(",", " ").split()]
        except ValueError as e:
            raise ValueError(f"{self.name}: not a list of integers: {text!r}") from e
        return self.validate(values)

    @abstractmethod
    def cell_graphs(self, arch: Arch) -> list[CellGraph]:
        """The architecture as one DAG per cell, for pictures."""

    def symmetric_variant(self, arch: Arch, rng: random.Random) -> Arch:
        """A random architecture equivalent to ``arch`` (data augmentation). Default: itself."""
        return arch

    # --- derived from the slot table --------------------------------------------------
    def validate(self, arch: Sequence[int]) -> Arch:
        arch = tuple(int(v) for v in arch)
        if len(arch) != self.seq_len:
            raise ValueError(f"{self.name}: expected {self.seq_len} values, got {len(arch)}")
        for pos, (v, slot) in enumerate(zip(arch, self.slots)):
            if not 0 <= v < slot.n_choices:
                raise ValueError(f"{self.name}: value {v} at position {pos} outside [0, {slot.n_choices})")
        return arch

    def is_valid(self, arch: Sequence[int]) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def random(self, rng: random.Random) -> Arch:
        return tuple(rng.randrange(s.n_choices) for s in self.slots)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Change one slot to a different legal value (slots with one choice are skipped)."""
        positions = [p for p, s in enumerate(self.slots) if s.n_choices > 1]
        pos = rng.choice(positions)
        new = rng.randrange(self.slots[pos].n_choices - 1)
        new += new >= arch[pos]
        return arch[:pos] + (new,) + arch[pos + 1:]

    def to_tokens(self, arch: Arch) -> list[int]:
        return [v + s.token_offset for v, s in zip(arch, self.slots)]

    def from_tokens(self, tokens: Sequence[int]) -> Arch:
        return self.validate([int(t) - s.token_offset for t, s in zip(tokens, self.slots)])

    def legal_token_mask(self) -> torch.Tensor:
        """Bool [seq_len, vocab_size]: which tokens the decoder may emit at each position."""
        mask = torch.zeros(self.seq_len, self.vocab_size, dtype=torch.bool)
        for pos, s in enumerate(self.slots):
            mask[pos, s.token_offset:s.token_offset + s.n_choices] = True
        return mask

    def sample_unique(self, n: int, rng: random.Random, exclude: set[Arch] = frozenset(),
                      max_tries: int | None = None) -> list[Arch]:
        """``n`` random architectures, distinct in canonical form and not in ``exclude``."""
        seen = set(exclude)
        out: list[Arch] = []
        tries = 0
        limit = max_tries if max_tries is not None else 100 * n + 1000
        while len(out) < n and tries < limit:
            tries += 1
            arch = self.canonical(self.random(rng))
            if arch not in seen:
                seen.add(arch)
                out.append(arch)
        return out
