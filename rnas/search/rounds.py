"""The pipeline's search (docs/algorithm.md §5) as plain functions: no DVC, no stage context.

``search_rounds`` runs the rounds on a trained supernet: score the pool, let the strategy propose
``n_new`` cells (RNAS: MRAS in the embedding), keep the best of the old pool, add ``n_random`` fresh
random cells, and train the supernet on the new pool. ``rank_final_pool`` then scores the final pool
(and screened random cells, and the reference cells) with the supernet and the cheap signals, and
orders them by the combined ranking (rnas.search.ranking). The supernet and the signals come in as
arguments, so tests drive the loop with stand-ins.
"""
from __future__ import annotations

import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import pandas as pd

from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING, RankingConfig, add_ranking
from rnas.spaces.base import Arch
from rnas.strategies.base import SearchStrategy

#: the fresh random cells of every round (and the screened ones) come from their own stream, seeded
#: one past the search seed: the strategy's own generator takes the search seed itself, and the two
#: must not draw the same cells
FRESH_CELLS_SEED_OFFSET = 1

RecordCallback = Callable[[dict], None]


class ScoringSupernet(Protocol):
    def score(self, archs: Sequence[Arch], label: str = ...) -> list[float]: ...

    def train_epochs(self, archs: Sequence[Arch], n_epochs: int, on_epoch=None, label: str = ...) -> list[dict]: ...


@dataclass(frozen=True)
class RoundsConfig:
    rounds: int
    n_new: int
    n_random: int
    epochs_per_round: int
    pool_size: int


@dataclass
class SearchRecord:
    """What the rounds leave: the final pool (scored by the final supernet), the pool each round
    trained on, one summary row per round (and one for the final pool), the strategy's trace."""
    pool: ArchPool
    pools: list[ArchPool] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)


def fresh_cells_rng(seed: int) -> random.Random:
    return random.Random(seed + FRESH_CELLS_SEED_OFFSET)


def summarise(round_: int, pool: ArchPool) -> dict:
    """Scores of the pool, and of last round's newcomers by origin: are proposals beating random?"""
    row = {"round": round_, "best": max(pool.scores), "median": statistics.median(pool.scores)}
    for origin in ("proposed", "random"):
        scores = [s for s, o, r in zip(pool.scores, pool.columns["origin"], pool.columns["round"])
                  if o == origin and r == round_ - 1]
        row[f"{origin}_mean"] = statistics.mean(scores) if scores else float("nan")
    return row


def rescore(supernet: ScoringSupernet, pool: ArchPool, label: str, trained: bool) -> list[float]:
    """The pool's scores by the supernet. One that has not ``trained`` since the pool was scored would
    give the scored cells the same scores again (same weights, same validation batches), so then only
    the cells without a score are scored."""
    rows = range(len(pool)) if trained else [i for i, score in enumerate(pool.scores) if math.isnan(score)]
    scores = list(pool.scores)
    if rows:
        for i, score in zip(rows, supernet.score([pool.archs[i] for i in rows], label=label)):
            scores[i] = score
    return scores


def search_rounds(supernet: ScoringSupernet, strategy: SearchStrategy, pool: ArchPool, cfg: RoundsConfig,
                  rng: random.Random, on_round: RecordCallback, on_epoch: RecordCallback,
                  name: str = "search") -> SearchRecord:
    """``cfg.rounds`` rounds from ``pool`` (the scored warmup pool); ``rng`` draws the fresh cells.
    ``on_round`` gets each round's summary row (``summarise``), ``on_epoch`` each supernet epoch's record."""
    record = SearchRecord(pool)
    pool.columns.setdefault("origin", ["seed"] * len(pool))
    pool.columns.setdefault("round", [0] * len(pool))
    trained = cfg.epochs_per_round > 0
    for round_ in range(1, cfg.rounds + 1):
        print(f"[{name}] round {round_}/{cfg.rounds}", file=sys.stderr, flush=True)
        if round_ > 1:
            pool.scores = rescore(supernet, pool, f"round {round_}", trained)
        record.rounds.append(summarise(round_, pool))
        on_round(record.rounds[-1])
        proposed = strategy.propose(pool.observations(), cfg.n_new)
        record.trace += [{"round": round_, **row} for row in strategy.trace()]
        fresh = pool.space.sample_unique(cfg.n_random, rng, exclude=set(pool.archs) | set(proposed))
        kept = pool.top(cfg.pool_size - len(proposed) - len(fresh))
        pool = kept.extend(proposed + fresh, round=[round_] * (len(proposed) + len(fresh)),
                           origin=["proposed"] * len(proposed) + ["random"] * len(fresh))
        print(f"[round {round_}] {len(proposed)} proposed by {strategy.name}, {len(fresh)} random, "
              f"{len(kept)} kept", file=sys.stderr, flush=True)
        supernet.train_epochs(pool.archs, cfg.epochs_per_round, label=f"round {round_}", on_epoch=on_epoch)
        record.pools.append(pool)
    pool.scores = rescore(supernet, pool, "final", trained)
    record.pool = pool
    record.rounds.append(summarise(cfg.rounds + 1, pool))
    return record


def screen(supernet: ScoringSupernet, pool: ArchPool, n: int, rng: random.Random, round_: int) -> ArchPool:
    """``pool`` with ``n`` fresh random cells scored by the supernet appended (origin "screened")."""
    if not n:
        return pool
    screened = pool.space.sample_unique(n, rng, exclude=set(pool.archs))
    return pool.extend(screened, supernet.score(screened, label="screened cells"),
                       round=[round_] * len(screened), origin=["screened"] * len(screened))


@dataclass
class RankedPools:
    pool: ArchPool       # the final pool with the screened cells, signals and ranking
    reference: ArchPool  # the reference cells, scored the same way
    top: ArchPool        # the pool's best ``top`` by the ranking, best first


def rank_final_pool(supernet: ScoringSupernet, pool: ArchPool, reference: Sequence[Arch], ranking: RankingConfig,
                    signals: Callable[[list[str]], dict[str, list[float]]], rng: random.Random, round_: int,
                    top: int) -> RankedPools:
    """Score the ``reference`` cells, add ``ranking.screen`` screened cells to ``pool``, and give both the
    signals and the combined ranking; ``signals(archs)`` computes ``ranking.signals`` for space strings."""
    reference = ArchPool(pool.space, list(reference))
    if len(reference):
        reference.scores = supernet.score(reference.archs, label="reference cells")
    pool = screen(supernet, pool, ranking.screen, rng, round_)
    rank_pools([pool, reference], signals, ranking.signals, ranking.weights)
    return RankedPools(pool, reference, pool.top(top, by=pool.columns[RANKING]))


def search_metrics(ranked: RankedPools, record: SearchRecord,
                   report: Callable[[dict[str, float]], dict[str, float]]) -> dict[str, float]:
    """The search's summary: the top's best and mean score and the final round's median (``*_score``),
    and what ``report`` makes of the best and the median (their perplexities, for the language task)."""
    final = {"best": ranked.top.scores[0], "top_mean": statistics.mean(ranked.top.scores),
             "final_median": record.rounds[-1]["median"]}
    return {f"{k}_score": v for k, v in final.items()} | report({k: final[k] for k in ("best", "final_median")})


def write_search(out: Path, record: SearchRecord, ranked: RankedPools, trace_columns: Sequence[str]) -> None:
    """Into the folder ``out``: each round's pool, the final pool, the top, the reference cells, the
    per-round summaries and the strategy's trace."""
    for round_, round_pool in enumerate(record.pools, start=1):
        round_pool.to_csv(out / f"pool_round{round_}.csv")
    for name, table in (("pool_final", ranked.pool), ("top", ranked.top), ("reference", ranked.reference)):
        table.to_csv(out / f"{name}.csv")
    pd.DataFrame(record.rounds).to_csv(out / "rounds.csv", index=False)
    pd.DataFrame(record.trace, columns=["round", *trace_columns]).to_csv(out / "mras_trace.csv", index=False)


def rank_pools(pools: Sequence[ArchPool], signals: Callable[[list[str]], dict[str, list[float]]],
               names: Sequence[str], weights: dict[str, float]) -> None:
    """Add the signals ``names`` and the combined ranking (rnas.search.ranking.add_ranking) to each pool.
    ``signals(archs)`` computes them for space strings, called once for all pools' distinct cells."""
    archs = list(dict.fromkeys(pool.space.to_str(a) for pool in pools for a in pool.archs))
    values = signals(archs) if names and archs else {}
    row = {arch: i for i, arch in enumerate(archs)}
    for pool in pools:
        add_ranking(pool, {name: [values[name][row[pool.space.to_str(a)]] for a in pool.archs]
                           for name in names} if values else {}, weights)
