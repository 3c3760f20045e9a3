"""One ranking of cells from several kinds of evidence: the supernet's score and cheap signals.

The supernet and the zero-cost signals (``rnas.search.signals``) are all noisy evidence about the same
cells, and each errs differently: a weight-sharing supernet over-ranks small cells that its
uniform path sampling trains most, a parameter count cannot tell two cells of one size apart.
``combined_scores`` is a weighted rank ensemble: each member's values become rank percentiles
within the set of cells being ranked (0 the worst, 1 the best, ties sharing their mean rank), and
a cell's combined score is the weighted mean of its percentiles. Ranks, not values, so that
members on any scale (nats, log-determinants, parameter counts) count as their weights say.

``signal_scores`` computes the signals of cells on one batch, each cell's network initialised from
a seed of its own (the search's seed and the cell's string), so a cell scores the same whatever set
it is scored in.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from rnas.config import require
from rnas.search.pool import ArchPool
from rnas.search.signals import SIGNALS, score_networks

#: the member that is the supernet's own score
SUPERNET = "supernet"
#: a pool's column of combined scores; a signal's column is ``SIGNAL_PREFIX + name``
RANKING, SIGNAL_PREFIX = "ranking", "signal_"


@dataclass
class RankingConfig:
    """``search.ranking``: which cheap signals the search computes and how its ranking combines them."""
    #: zero-cost signals (rnas.search.signals: params, flops, synflow, naswot, grad_norm, snip) computed for
    #: the final pool and the reference cells, on one batch of the search data's training split
    signals: list[str] = field(default_factory=list)
    #: the ranking's members (``supernet`` and any of ``signals``) and their weights; a signal of weight
    #: 0 (or not named) does not rank, but is judged when computed
    weights: dict[str, float] = field(default_factory=lambda: {SUPERNET: 1.0, **dict.fromkeys(SIGNALS, 0.0)})
    #: images in the signals' batch
    batch_size: int = 64
    #: the signals' network: ``retrain.child`` with these keys replaced (e.g. ``{channels: 16}``)
    child: dict = field(default_factory=dict)
    #: fresh random cells that the final supernet and the signals score after the search, added to the
    #: final pool (origin ``screened``): the top is then ranked among them too
    screen: int = 0

    def check(self) -> None:
        for name in self.signals:
            require(name in SIGNALS, "signals", f"{name!r} is not a signal; known: {', '.join(SIGNALS)}")
        require(len(set(self.signals)) == len(self.signals), "signals", "names a signal twice")
        for name, weight in self.weights.items():
            require(name == SUPERNET or name in SIGNALS, f"weights.{name}",
                    f"is neither {SUPERNET!r} nor a signal ({', '.join(SIGNALS)})")
            require(isinstance(weight, (int, float)) and weight >= 0, f"weights.{name}", "must be a number >= 0")
            require(weight == 0 or name == SUPERNET or name in self.signals, f"weights.{name}",
                    f"ranks by a signal that is not computed: add it to search.ranking.signals "
                    f"({', '.join(self.signals) or 'none'}) or give it weight 0")
        require(sum(self.weights.values()) > 0, "weights", "at least one member needs a positive weight")
        require(self.batch_size >= 2, "batch_size", "must be at least 2 (naswot compares images)")
        require(self.screen >= 0, "screen", "must be >= 0")


def rank_percentiles(values: Sequence[float]) -> list[float]:
    """Each value's rank among ``values`` scaled to [0, 1] (1: the highest), ties at their mean rank.
    -inf (a singular NASWOT kernel) and NaN (a signal that could not be computed) rank lowest, tied
    with each other. One value gets 0.5."""
    series = pd.Series(values, dtype=float).fillna(-math.inf)
    if len(series) == 1:
        return [0.5]
    return ((series.rank(method="average") - 1) / (len(series) - 1)).tolist()


def combined_scores(members: Mapping[str, Sequence[float]], weights: Mapping[str, float]) -> list[float]:
    """The weighted mean, over the members of positive weight, of each cell's rank percentile;
    ``members`` maps each name to its values for the same cells (higher is better)."""
    ranked = {name: w for name, w in weights.items() if w > 0}
    missing = [name for name in ranked if name not in members]
    if missing or not ranked:
        raise ValueError(f"combined ranking: no values for {missing}" if missing else "combined ranking: no members")
    lengths = {len(members[name]) for name in ranked}
    if len(lengths) != 1:
        raise ValueError(f"combined ranking: members rank different numbers of cells {sorted(lengths)}")
    total = sum(ranked.values())
    percentiles = {name: rank_percentiles(members[name]) for name in ranked}
    return [sum(w * percentiles[name][i] for name, w in ranked.items()) / total for i in range(lengths.pop())]


def add_ranking(pool: ArchPool, signals: Mapping[str, Sequence[float]], weights: Mapping[str, float]) -> None:
    """Give ``pool`` a column per signal and the ``RANKING`` column: the combined score of its supernet
    scores (``pool.scores``) and ``signals`` (name -> values of the pool's cells)."""
    for name, values in signals.items():
        pool.columns[SIGNAL_PREFIX + name] = list(values)
    pool.columns[RANKING] = combined_scores({SUPERNET: pool.scores, **signals}, weights)


def cell_seed(seed: int, arch: str) -> int:
    """The seed that initialises ``arch``'s network: the same in every set of cells it is scored in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{arch}".encode()).digest()[:7], "big")


def signal_scores(build: Callable[[str], nn.Module], archs: Sequence[str], images: Tensor, labels: Tensor,
                  names: Sequence[str], seed: int,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """The signals ``names`` of each cell of ``archs`` (space strings), its network made by ``build``
    after seeding torch with ``cell_seed(seed, arch)``; ``progress(done, total)`` after each cell."""
    def networks():
        for done, arch in enumerate(archs):
            torch.manual_seed(cell_seed(seed, arch))
            yield build(arch)
            if progress is not None:
                progress(done + 1, len(archs))
    rows = score_networks(networks(), images, labels, names)
    return {name: [row[name] for row in rows] for name in names}

