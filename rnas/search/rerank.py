"""Re-ranking the search's best cells by a short stand-alone training (docs/algorithm.md §5, "Finish").

A weight-sharing supernet ranks cells coarsely: its top holds good and ordinary cells alike. Each
of the top few is trained from scratch for a few epochs and the one with the best validation score
wins. ``rerank`` keeps each measurement in a ``MeasurementStore`` as soon as it is made, so that an
interrupted run resumes after its last finished cell and later runs reuse the measurements; with
several ranks (processes, GPUs, machines) each trains its share of the cells and rank 0 gathers them.
With ``repeats`` > 1 each cell is trained that many times from different seeds and ranked by the mean.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from rnas.artifacts import read_json, write_json
from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING
from rnas.spaces import SearchSpace

#: (arch string, repeat) -> the record of that short training's delivered epoch (``validation_score``:
#: higher is better)
Measure = Callable[[str, int], dict[str, Any]]
#: repeat r of a candidate trains with the run's seed + r * REPEAT_SEED_STEP
REPEAT_SEED_STEP = 1000


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


def rerank(space: SearchSpace, candidates: ArchPool, measure: Measure, store: MeasurementStore,
           shard: tuple[int, int] = (0, 1), poll_seconds: float = 2.0, repeats: int = 1) -> list[dict[str, Any]] | None:
    """Measure this process's share of the candidates' trainings (``repeats`` per candidate, each from
    its own seed; ``shard``: this process's rank and the number of ranks), then, on rank 0, wait for the
    other ranks' and return one row per candidate in the order given (``search_rank``): its supernet
    score, its combined ranking where the pool has one, what ``measure`` found (``mean_record`` of its
    repeats), and whether an earlier run had measured it all (``reused``). Other ranks return None.

    A training's result does not depend on which rank measures it, so the rows are the same for any
    number of ranks, and a run interrupted with one number of ranks resumes with another."""
    keys = [space.to_str(arch) for arch in candidates.archs]
    trainings = [(key, repeat) for key in keys for repeat in range(repeats)]
    earlier = store.load()
    measure_share(trainings, measure, store, shard, earlier)
    if shard[0] != 0:
        return None
    measured = wait_for(store, [training_key(*t) for t in trainings], poll_seconds)
    rows = []
    for rank, (key, score) in enumerate(zip(keys, candidates.scores), start=1):
        ranking = {RANKING: candidates.columns[RANKING][rank - 1]} if RANKING in candidates.columns else {}
        own = [training_key(key, repeat) for repeat in range(repeats)]
        rows.append({"search_rank": rank, "arch": key, "supernet_score": score, **ranking,
                     **mean_record([measured[k] for k in own]), "reused": all(k in earlier for k in own)})
    return rows


def training_key(arch: str, repeat: int) -> str:
    """The store's key of a candidate's ``repeat``-th training: the cell itself for the first, so that
    one training per candidate is stored as it always was, and a run with more repeats reuses it."""
    return arch if repeat == 0 else f"{arch}#{repeat}"


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of a candidate's ``repeat``-th training in a run of ``seed``."""
    return seed + repeat * REPEAT_SEED_STEP


def mean_record(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A candidate's measurement from its repeats' records: one record as it is; of several, the mean of
    each value (``validation_score`` too: the mean ranks), the total ``seconds``, and each repeat's
    ``validation_score_<r>``. Averaging repeats trades trainings for less seed noise in the ranking."""
    if len(records) == 1:
        return dict(records[0])
    mean = {key: sum(r[key] for r in records) / len(records) for key in records[0] if key != "seconds"}
    per_repeat = {f"validation_score_{r}": record["validation_score"] for r, record in enumerate(records)}
    return {**mean, **per_repeat, "seconds": sum(r.get("seconds", 0.0) for r in records)}


def measure_share(trainings: Sequence[tuple[str, int]], measure: Measure, store: MeasurementStore,
                  shard: tuple[int, int], done: dict[str, dict[str, Any]]) -> None:
    """Measure the trainings ``trainings[rank::ranks]`` (cell, repeat) not in ``done`` (what ``store``
    held), saving each to ``store`` as it is done. The share is taken from all the trainings, not from
    those left, so that ranks that start at different moments still split them the same way."""
    rank, ranks = shard
    for i, (arch, repeat) in enumerate(trainings):
        key = training_key(arch, repeat)
        if i % ranks != rank or key in done:
            continue
        where = f" on rank {rank}/{ranks}" if ranks > 1 else ""
        which = f" (repeat {repeat + 1})" if repeat else ""
        print(f"[rerank] {i + 1}/{len(trainings)}{where}: training {arch}{which}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        store.save(key, {**measure(arch, repeat), "seconds": time.perf_counter() - start})


def wait_for(store: MeasurementStore, keys: Sequence[str], poll_seconds: float) -> dict[str, dict[str, Any]]:
    """The measurements of every cell of ``keys``, once ``store`` holds them all (other ranks write the
    rest; a rank that fails stops the whole job, so this never waits for a dead one)."""
    announced = False
    while True:
        measured = store.load()
        missing = [key for key in keys if key not in measured]
        if not missing:
            return measured
        if not announced:
            print(f"[rerank] waiting for {len(missing)} cells that other ranks train", file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll_seconds)


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


def summary(best: dict[str, Any], metrics: dict[str, Any], epochs: int) -> str:
    """The log line of a re-ranking, from its ``outcome``."""
    if not metrics["candidates"]:
        return f"rerank.top is 0: the search's pick goes to retrain: {best['arch']}"
    reused = metrics["candidates"] - metrics["trained"]
    return (f"{metrics['candidates']} cells trained {epochs} epochs ({reused} measured by an earlier run); the "
            f"winner, search rank {best['search_rank']}, validation score {best['validation_score']:.4f}: "
            f"{best['arch']}")


class MeasurementStore:
    """Measurements in a folder, one JSON file per training (``{fingerprint, arch, record}``, ``arch``
    its ``training_key``), so that ranks write theirs side by side: ``load`` returns those of this
    store's fingerprint (key -> record), and a file of another configuration is ignored (and replaced
    when its training is measured again)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def load(self) -> dict[str, dict[str, Any]]:
        entries = (read_json(path) for path in sorted(self.folder.glob("*.json")))
        return {e["arch"]: e["record"] for e in entries if e.get("fingerprint") == self.fingerprint}

    def save(self, arch: str, record: dict[str, Any]) -> None:
        write_json(self.folder / f"{cell_id(arch)}.json", {"fingerprint": self.fingerprint, "arch": arch,
                                                            "record": record})


def cell_id(arch: str) -> str:
    """A file name for a training's measurement and checkpoint (of its ``training_key``)."""
    return hashlib.sha256(arch.encode()).hexdigest()[:20]
