"""A tabular oracle: look up a precomputed result per architecture (e.g. NAS-Bench-201).

Each query returns three numbers from columns chosen by name: the value a search may see and
select on (``select``, higher is better), the value reported for the architecture it finally
picks (``report``), and what the query would have cost to compute (``cost``, e.g. training
seconds; 0 when the table has no cost column).
"""
from __future__ import annotations

import math
import os
import random
from typing import NamedTuple

import pandas as pd

from rnas.errors import DataError
from rnas.spaces.base import Arch, SearchSpace

ARCH_COLUMN = "arch_str"
#: mutations tried for one that stays in a subset table before a random row is taken instead
MUTATION_TRIES = 50


class QueryResult(NamedTuple):
    select: float
    report: float
    cost: float


class TableOracle:
    """One row per architecture, keyed by the space's canonical form (so any space can use it)."""

    def __init__(self, space: SearchSpace, archs: list[Arch], select: list[float], report: list[float],
                 cost: list[float] | None = None):
        lengths = {len(select), len(report)} | ({len(cost)} if cost is not None else set())
        if lengths != {len(archs)}:
            raise ValueError("TableOracle: columns differ in length")
        self.space = space
        self.archs = [space.canonical(space.validate(a)) for a in archs]
        self._rows: dict[Arch, int] = {}
        for row, arch in enumerate(self.archs):
            if arch in self._rows:
                raise ValueError(f"TableOracle: {space.to_str(arch)!r} appears twice (rows "
                                 f"{self._rows[arch]} and {row})")
            self._rows[arch] = row
        self.select = [float(v) for v in select]
        self.report = [float(v) for v in report]
        self.cost = [float(v) for v in cost] if cost is not None else [0.0] * len(archs)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, space: SearchSpace, select_col: str, report_col: str,
                   cost_col: str | None = None, source: str = "table") -> "TableOracle":
        columns = [ARCH_COLUMN, select_col, report_col] + ([cost_col] if cost_col else [])
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
        if frame.empty:
            raise DataError(f"{source}: the table has a header but no rows")
        for col in columns[1:]:
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.isna().any():
                row = int(values.isna().to_numpy().nonzero()[0][0])
                raise DataError(f"{source}: column {col!r} has a missing or non-numeric value at row {row}")
            bad = ~values.apply(math.isfinite) | ((values < 0) if col == cost_col else False)
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                rule = "finite and >= 0 (a cost)" if col == cost_col else "finite"
                raise DataError(f"{source}: column {col!r} has {values.iloc[row]} at row {row}; values must be {rule}")
        archs = []
        for row, text in enumerate(frame[ARCH_COLUMN]):
            try:
                archs.append(space.from_str(str(text)))
            except ValueError as e:
                raise DataError(f"{source}: row {row}: {e}") from None
        return cls(space, archs, frame[select_col].tolist(), frame[report_col].tolist(),
                   frame[cost_col].tolist() if cost_col else None)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, space: SearchSpace, select_col: str, report_col: str,
                 cost_col: str | None = None) -> "TableOracle":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"benchmark table not found: {path}")
        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as e:  # empty file, not CSV (ParserError is a ValueError)
            raise DataError(f"{path}: not a readable CSV table ({' '.join(str(e).split())[:160]})") from None
        return cls.from_frame(frame, space, select_col, report_col, cost_col, source=str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace, select_col: str, report_col: str,
             cost_col: str | None = None, subset: bool = False) -> "TableOracle":
        """``from_csv`` for a search: the table must hold every architecture of ``space``, since a
        strategy may propose any; with ``subset`` it may hold fewer, and the strategies get the space
        restricted to its rows (``TableRows``)."""
        oracle = cls.from_csv(path, space, select_col, report_col, cost_col)
        size = math.prod(slot.n_choices for slot in space.slots)
        if subset:
            oracle.space = TableRows(space, oracle.archs, source=str(path))
        elif len(oracle) < size:
            raise DataError(f"{path}: {len(oracle)} rows, but the {space.name} space has {size} architectures "
                            "that a search may propose; pass --subset-table to search only the table's rows")
        return oracle

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: Arch) -> bool:
        return self.space.canonical(arch) in self._rows

    def query(self, arch: Arch) -> QueryResult:
        row = self._rows.get(self.space.canonical(arch))
        if row is None:
            if isinstance(self.space, TableRows):
                raise DataError(f"{self.space.source}: {self.space.to_str(arch)} is not in the subset table; "
                                "there only strategies that draw and mutate architectures (random, evolution) "
                                "stay within its rows")
            raise KeyError(f"architecture not in the table: {self.space.to_str(arch)}")
        return QueryResult(self.select[row], self.report[row], self.cost[row])

    @property
    def best_report(self) -> float:
        """The highest report value in the table: what a perfect search could reach."""
        return max(self.report)

    @property
    def report_of_best_select(self) -> float:
        """The report value of the architecture with the highest select value (first on ties)."""
        return self.report[max(range(len(self)), key=self.select.__getitem__)]


class TableRows:
    """A search space restricted to a table's rows (subset-table mode): random draws and mutations
    give rows of the table; everything else is the space's own."""

    def __init__(self, space: SearchSpace, archs: list[Arch], source: str):
        self.base, self.rows, self.source = space, list(archs), source
        self._in_table = set(self.rows)

    def __getattr__(self, name: str):
        return getattr(self.base, name)

    def random(self, rng: random.Random) -> Arch:
        return rng.choice(self.rows)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        for _ in range(MUTATION_TRIES):
            child = self.base.canonical(self.base.mutate(arch, rng))
            if child in self._in_table:
                return child
        return self.random(rng)

    def sample_unique(self, n: int, rng: random.Random, exclude: set[Arch] = frozenset(),
                      max_tries: int | None = None) -> list[Arch]:
        return SearchSpace.sample_unique(self, n, rng, exclude, max_tries)
