"""Judging a search against ground truth: a table of every cell's true accuracy (NAS-Bench-201).

The search never reads the table (only the evaluate stage opens it). With it, a run reports the
found cell's true accuracy and its percentile in the whole space, and how well the supernet, the
cheap signals, the combined ranking and the predictor rank cells: Kendall tau, Spearman's rho and
precision at the top 10% between their scores and the true accuracies (``ranking``).

The protocol that keeps tuning off the reported numbers (``Judging``): a run whose seed is a tuning
seed (``FIRST_TUNING_SEED`` and up) is judged against the table's select column (validation) on the
tuning reference cells; any other seed against the report column (test) on the reported reference
cells. The two sets of cells are disjoint, so nothing tuned on one set of cells, seeds and column is
ever reported on it.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from rnas.config import ConfigError, require
from rnas.judging.rank_stats import kendall_tau, precision_at_top, spearman
from rnas.judging.oracle import ARCH_COLUMN, TableOracle
from rnas.spaces.base import Arch, SearchSpace

#: seeds from here on are tuning seeds: settings are chosen on their runs only; seeds below are
#: reported (the README's tables use 0-4) and never choose anything
FIRST_TUNING_SEED = 100
#: the reported reference cells are the same in every reported run, the tuning ones in every tuning run
REFERENCE_SEED, TUNING_REFERENCE_SEED = 201, 1201
#: reported runs draw at most this many reference cells; tuning cells are never among them
MAX_REFERENCE_CELLS = 1000


@dataclass
class TruthConfig:
    #: a CSV with the true accuracy of every cell of the space (``arch_str`` plus the columns below);
    #: null: no ground truth. Relative paths are from the project root.
    table: str | None = None
    #: the validation accuracy a search could have selected on (reported for the found cell)
    select_col: str = "valid_acc_200ep"
    #: the true accuracy every ranking is judged against and reported
    report_col: str = "test_acc_200ep"

    def check(self) -> None:
        # existence only: opening the table is the evaluate stage's job (the search must not read it)
        require(self.table is None or os.path.isfile(self.table), "table", f"no such file: {self.table}")


def is_tuning_seed(seed: int) -> bool:
    return seed >= FIRST_TUNING_SEED


@dataclass(frozen=True)
class Judging:
    """What a run of ``seed`` is judged on: the table ``column``, on the reference cells of its ``role``."""
    role: str       # "tune" or "report"
    column: str

    @classmethod
    def of(cls, seed: int, cfg: TruthConfig) -> "Judging":
        return cls("tune", cfg.select_col) if is_tuning_seed(seed) else cls("report", cfg.report_col)


def reference_cells(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """``n`` fixed random cells on which to measure how a supernet ranks (the search never sees their
    scores): the reported ones for a reported ``seed``, for a tuning seed the tuning ones, drawn apart
    from the first ``MAX_REFERENCE_CELLS`` reported ones."""
    if n > MAX_REFERENCE_CELLS:
        raise ValueError(f"at most {MAX_REFERENCE_CELLS} reference cells")
    if not is_tuning_seed(seed):
        return space.sample_unique(n, random.Random(REFERENCE_SEED))
    reported = space.sample_unique(MAX_REFERENCE_CELLS, random.Random(REFERENCE_SEED))
    return space.sample_unique(n, random.Random(TUNING_REFERENCE_SEED), exclude=set(reported))


def load_truth(cfg: TruthConfig, space: SearchSpace, key: str = "evaluate.truth") -> TableOracle:
    """The table of ``cfg`` (which must name one) as an oracle; a missing column is a ConfigError."""
    frame = pd.read_csv(cfg.table)
    for name in ("select_col", "report_col"):
        column = getattr(cfg, name)
        if column not in frame.columns:
            raise ConfigError(f"{key}.{name}: no column {column!r} in {cfg.table} "
                              f"(columns: {', '.join(map(str, frame.columns))})")
    if ARCH_COLUMN not in frame.columns:
        raise ConfigError(f"{key}.table: {cfg.table} has no {ARCH_COLUMN!r} column")
    try:
        return TableOracle.from_frame(frame, space, cfg.select_col, cfg.report_col, source=cfg.table)
    except ValueError as e:
        raise ConfigError(f"{key}.table: {e} (a table of the {space.name} space is needed)") from None


def percentile(oracle: TableOracle, value: float) -> float:
    """Share of the table's cells (in %) whose true accuracy is at most ``value``."""
    return 100.0 * sum(v <= value for v in oracle.report) / len(oracle)


def ranking(scores: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """How well ``scores`` (higher is better) rank cells whose true accuracies are ``truth``."""
    return {"kendall_tau": kendall_tau(list(scores), list(truth)), "spearman": spearman(scores, truth),
            "precision_at_10pct": precision_at_top(scores, truth, 0.1), "n": len(scores)}


def true_accuracies(oracle: TableOracle, archs: Sequence[Arch]) -> list[float]:
    return [oracle.query(a).report for a in archs]


def judge(oracle: TableOracle, found: Arch, top: Sequence[Arch],
          scored: dict[str, tuple[Sequence[Arch], Sequence[float]]]) -> dict[str, float]:
    """The ground-truth report of a run: ``found`` (the search's winner) and ``top`` (its best cells)
    looked up in the table, and for each named set of ``scored`` cells (archs, scores), the ranking
    its scores give against the truth, the true accuracy of its best-scored cell (``pick_acc``) and
    the best true accuracy in it (``max_acc``)."""
    found_row = oracle.query(found)
    top_truth = true_accuracies(oracle, top)
    metrics = {"truth_found_acc": found_row.report, "truth_found_select": found_row.select,
               "truth_found_percentile": percentile(oracle, found_row.report),
               "truth_top_mean_acc": sum(top_truth) / len(top_truth), "truth_top_max_acc": max(top_truth),
               "truth_space_best_acc": oracle.best_report,
               "truth_space_median_acc": float(pd.Series(oracle.report).median())}
    for name, (archs, scores) in scored.items():
        if len(archs) < 2:
            continue
        truth = true_accuracies(oracle, archs)
        metrics.update({f"truth_{name}_{k}": v for k, v in ranking(scores, truth).items()})
        metrics[f"truth_{name}_pick_acc"] = truth[max(range(len(scores)), key=lambda i: scores[i])]
        metrics[f"truth_{name}_max_acc"] = max(truth)
    return metrics
