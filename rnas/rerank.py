"""Re-ranking the search's best cells by a short stand-alone training (docs/algorithm.md §5, "Finish").

A weight-sharing supernet ranks cells coarsely: its top holds good and ordinary cells alike. Each
of the top few is trained from scratch for a few epochs and the one with the best validation score
wins. ``rerank`` keeps what it has measured in ``done`` (arch string -> record), so that an
interrupted run resumes after its last finished cell and later runs reuse the measurements.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from rnas.artifacts import read_json, write_json
from rnas.pool import ArchPool
from rnas.ranking import RANKING
from rnas.spaces import SearchSpace

#: arch string -> the record of its short training's delivered epoch (``validation_score``: higher is better)
Measure = Callable[[str], dict[str, Any]]


def candidates(pool: ArchPool, top: int, min_distance: int = 1, by: Sequence[float] | None = None) -> ArchPool:
    """The pool's best ``top`` cells by supernet score (or by the values ``by``: the search's combined
    ranking), in that order, each differing from every better-ranked candidate in at least
    ``min_distance`` slots (1: the plain top). A supernet scores a cell and
    its near copies alike, and a search concentrates its pool around the supernet's favourite, so
    the plain top can be one family of cells; a distance spreads the trainings over several."""
    chosen: list[int] = []
    for i in pool.order(by):
        if len(chosen) == top:
            break
        if all(sum(a != b for a, b in zip(pool.archs[i], pool.archs[j])) >= min_distance for j in chosen):
            chosen.append(i)
    return pool.subset(chosen)


def rerank(space: SearchSpace, candidates: ArchPool, measure: Measure, done: dict[str, dict[str, Any]],
           on_measured: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """One row per candidate, in the order given (``search_rank``): its supernet score, its combined
    ranking where the pool has one, and what ``measure`` found.

    Cells already in ``done`` are not measured again (``reused``); ``on_measured`` gets ``done``
    after each new measurement.
    """
    rows = []
    for rank, (arch, score) in enumerate(zip(candidates.archs, candidates.scores), start=1):
        key = space.to_str(arch)
        reused = key in done
        if not reused:
            print(f"[rerank] candidate {rank}/{len(candidates)}: training {key}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            done[key] = {**measure(key), "seconds": time.perf_counter() - start}
            if on_measured is not None:
                on_measured(done)
        ranking = {RANKING: candidates.columns[RANKING][rank - 1]} if RANKING in candidates.columns else {}
        rows.append({"search_rank": rank, "arch": key, "supernet_score": score, **ranking, **done[key],
                     "reused": reused})
    return rows


def winner(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best validation score; between equals, the one the search ranked higher."""
    return max(rows, key=lambda row: (row["validation_score"], -row["search_rank"]))


def outcome(rows: list[dict[str, Any]], best: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pick (the search's ``best`` with the winner's cell and scores, or ``best`` itself when
    nothing was re-ranked) and the metrics of the re-ranking."""
    if rows:
        chosen = winner(rows)
        best = {**best, "arch": chosen["arch"], "score": chosen["supernet_score"],
                "validation_score": chosen["validation_score"], "search_rank": chosen["search_rank"]}
    reused = sum(row["reused"] for row in rows)
    metrics = {"candidates": len(rows), "search_rank": best.get("search_rank", 1), "trained": len(rows) - reused,
               **({"validation_score": best["validation_score"]} if rows else {})}
    return best, metrics


def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """The rows as a CSV file, with its header even when there are none."""
    pd.DataFrame(rows, columns=None if rows else ["search_rank", "arch", "supernet_score", "validation_score"]
                 ).to_csv(path, index=False)


def summary(rows: list[dict[str, Any]], best: dict[str, Any], epochs: int) -> str:
    """The log line of a re-ranking."""
    if not rows:
        return f"rerank.top is 0: the search's pick goes to retrain: {best['arch']}"
    reused = sum(row["reused"] for row in rows)
    return (f"{len(rows)} cells trained {epochs} epochs ({reused} measured by an earlier run); the winner, search "
            f"rank {best['search_rank']}, validation score {best['validation_score']:.4f}: {best['arch']}")


class MeasurementStore:
    """Measurements (arch string -> record) in one JSON file under the fingerprint of what shapes them:
    ``load`` returns them only for the same fingerprint, so another configuration measures anew."""

    def __init__(self, path: str | os.PathLike, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint

    def load(self) -> dict[str, dict[str, Any]]:
        state = read_json(self.path) if self.path.exists() else {}
        return dict(state.get("measured", {})) if state.get("fingerprint") == self.fingerprint else {}

    def save(self, measured: dict[str, dict[str, Any]]) -> None:
        write_json(self.path, {"fingerprint": self.fingerprint, "measured": measured})
