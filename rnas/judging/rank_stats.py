"""How well one ordering agrees with another, and whether two sets of results differ: the statistics
that judge a ranking (a supernet's, a predictor's, a signal's) and compare strategies over seeds."""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties handled); NaN for fewer than two points or a constant input."""
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    if len(a) < 2:
        return math.nan
    da = torch.sign(a[:, None] - a[None, :])
    db = torch.sign(b[:, None] - b[None, :])
    concordance = (da * db).sum().item()
    norm = math.sqrt((da != 0).sum().item() * (db != 0).sum().item())
    return concordance / norm if norm else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties get their mean rank)."""
    rx, ry = pd.Series(x, dtype=float).rank(), pd.Series(y, dtype=float).rank()
    return float(rx.corr(ry)) if len(rx) > 1 else math.nan


def precision_at_top(scores: Sequence[float], truth: Sequence[float], fraction: float = 0.1) -> float:
    """Share of the top ``fraction`` by score that are also in the top ``fraction`` by truth, expected
    over random tie-breaking: a tie at the cut-off shares the remaining places, so a ranking that ties
    everything scores what a random one does on average (``fraction``), whatever the order of the cells."""
    k = max(1, round(len(scores) * fraction))
    return sum(p * q for p, q in zip(top_membership(scores, k), top_membership(truth, k))) / k


def top_membership(values: Sequence[float], k: int) -> list[float]:
    """Each value's chance to be among the ``k`` largest when ties are broken at random (NaN: lowest)."""
    values = [-math.inf if math.isnan(v) else v for v in values]
    cut = sorted(values, reverse=True)[k - 1]
    above, tied = sum(v > cut for v in values), sum(v == cut for v in values)
    return [1.0 if v > cut else (k - above) / tied if v == cut else 0.0 for v in values]


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy import stats  # imported here: it costs every stage process about a second, and few need it

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
