"""A tabular oracle: look up a precomputed result per architecture (e.g. NAS-Bench-201).

Each query returns three numbers from columns chosen by name: the value a search may see and
select on (``select``, higher is better), the value reported for the architecture it finally
picks (``report``), and what the query would have cost to compute (``cost``, e.g. training
seconds; 0 when the table has no cost column).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import pandas as pd

from rnas.spaces.base import Arch, SearchSpace

ARCH_COLUMN = "arch_str"


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
            raise ValueError(f"{source}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
        for col in columns[1:]:
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.isna().any():
                row = int(values.isna().to_numpy().nonzero()[0][0])
                raise ValueError(f"{source}: column {col!r} has a missing or non-numeric value at row {row}")
        archs = []
        for row, text in enumerate(frame[ARCH_COLUMN]):
            try:
                archs.append(space.from_str(str(text)))
            except ValueError as e:
                raise ValueError(f"{source}: row {row}: {e}") from None
        return cls(space, archs, frame[select_col].tolist(), frame[report_col].tolist(),
                   frame[cost_col].tolist() if cost_col else None)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, space: SearchSpace, select_col: str, report_col: str,
                 cost_col: str | None = None) -> "TableOracle":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"benchmark table not found: {path}")
        return cls.from_frame(pd.read_csv(path), space, select_col, report_col, cost_col, source=str(path))

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: Arch) -> bool:
        return self.space.canonical(arch) in self._rows

    def query(self, arch: Arch) -> QueryResult:
        row = self._rows.get(self.space.canonical(arch))
        if row is None:
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
