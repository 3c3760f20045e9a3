"""ArchPool: a table of architectures with their scores, deduplicated on canonical form."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from rnas.artifacts import atomic_path, read_csv
from rnas.errors import ArtifactError
from rnas.spaces.base import Arch, SearchSpace
from rnas.strategies.base import Observation


#: scores (higher is better: an accuracy, or a loss in nats negated) whose spread, max - min, is below
#: this tell no architectures apart: a supernet that scores a pool so is blind
BLIND_SPREAD = 1e-6


@dataclass
class ArchPool:
    space: SearchSpace
    archs: list[Arch] = field(default_factory=list)
    #: higher is better; NaN for an architecture not scored yet
    scores: list[float] = field(default_factory=list)
    #: further per-architecture columns (e.g. ``params_m``, ``round``)
    columns: dict[str, list] = field(default_factory=dict)

    def __post_init__(self):
        self.archs = [self.space.canonical(self.space.validate(a)) for a in self.archs]
        if not self.scores:
            self.scores = [math.nan] * len(self.archs)
        if len(set(self.archs)) != len(self.archs):
            raise ValueError("ArchPool: duplicate architectures (canonical form)")
        for name, values in self.columns.items():
            if len(values) != len(self.archs):
                raise ValueError(f"ArchPool: column {name!r} has {len(values)} rows, pool has {len(self.archs)}")

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: Arch) -> bool:
        return self.space.canonical(arch) in set(self.archs)

    def observations(self) -> list[Observation]:
        return [Observation(a, s) for a, s in zip(self.archs, self.scores) if not math.isnan(s)]

    def blind_reason(self) -> str | None:
        """Why the scores of the scored architectures rank none above another; None when they do."""
        scored = [s for s in self.scores if not math.isnan(s)]
        spread = max(scored) - min(scored) if scored else 0.0
        if spread >= BLIND_SPREAD:
            return None
        return (f"the supernet scores all {len(scored)} cells of the pool alike "
                f"(spread of the scores {spread:.3g} < {BLIND_SPREAD:g})")

    def order(self, by: Sequence[float] | None = None) -> list[int]:
        """Row indices, best score first (unscored last); ``by``: other values per row to order by."""
        values = self.scores if by is None else list(by)
        return sorted(range(len(self)), key=lambda i: (math.isnan(values[i]), -values[i]
                                                      if not math.isnan(values[i]) else 0.0))

    def subset(self, rows: Sequence[int]) -> "ArchPool":
        return ArchPool(self.space, [self.archs[i] for i in rows], [self.scores[i] for i in rows],
                        {k: [v[i] for i in rows] for k, v in self.columns.items()})

    def top(self, k: int, by: Sequence[float] | None = None) -> "ArchPool":
        return self.subset(self.order(by)[:k])

    def extend(self, archs: Sequence[Arch], scores: Sequence[float] | None = None,
               **columns: Sequence) -> "ArchPool":
        """A new pool with ``archs`` appended (those already present are skipped)."""
        have = set(self.archs)
        keep = []
        for i, a in enumerate(archs):
            c = self.space.canonical(a)
            if c not in have:
                have.add(c)
                keep.append(i)
        scores = list(scores) if scores is not None else [math.nan] * len(archs)
        cols = {}
        for name in dict.fromkeys([*self.columns, *columns]):  # ordered: the CSV's columns stay in place
            old = self.columns.get(name, [None] * len(self))
            new = list(columns.get(name, [None] * len(archs)))
            cols[name] = old + [new[i] for i in keep]
        return ArchPool(self.space, self.archs + [archs[i] for i in keep],
                        self.scores + [scores[i] for i in keep], cols)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"arch": [self.space.to_str(a) for a in self.archs], "score": self.scores})
        for name, values in self.columns.items():
            frame[name] = values
        return frame

    def to_csv(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)

    @classmethod
    def from_frame(cls, space: SearchSpace, frame: pd.DataFrame) -> "ArchPool":
        archs = [space.from_str(s) for s in frame["arch"]]
        scores = [float(s) for s in frame["score"]] if "score" in frame else []
        columns = {c: frame[c].tolist() for c in frame.columns if c not in ("arch", "score")}
        return cls(space, archs, scores, columns)

    @classmethod
    def from_csv(cls, space: SearchSpace, path: str | os.PathLike) -> "ArchPool":
        if not os.path.exists(path):
            raise FileNotFoundError(f"architecture pool not found: {path}")
        frame = read_csv(path, columns=("arch", "score"))
        try:
            return cls.from_frame(space, frame)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{path}: {e}; rerun the stage that writes it") from None
