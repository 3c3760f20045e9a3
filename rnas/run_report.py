"""What the evaluate stage makes of a whole run's artifacts: its plots, and its judgement against a
truth table (rnas.judging.truth.judge). ``artifacts`` is the run's artifacts folder (rnas.pipeline.ARTIFACTS)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnas.artifacts import read_json
from rnas.judging.oracle import TableOracle
from rnas.plots import draw_architecture, plot_curves, plot_scatter
from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING, SIGNAL_PREFIX, rank_percentiles
from rnas.spaces.base import SearchSpace
from rnas.judging.truth import judge, true_accuracies

ROUND_COLUMNS = ["best", "median", "proposed_mean", "random_mean"]


def draw_run_plots(task, params, space: SearchSpace, artifacts: Path, out: Path, card: dict) -> None:
    """Training curves of the retrained winner, the search curve, MRAS's trace, the predictor's hold-out
    scatter and the winner's cells, as PNGs in ``out``."""
    curves, label = task.curves
    history = pd.read_csv(artifacts / "retrain/history.csv")
    drawn = [c for c in curves if c in history]
    only_training = drawn == [curves[0]]  # retrained on train + valid: there is no validation curve
    plot_curves(history, "epoch", drawn, out / "training_curves.png", "Retraining the found network",
                f"training {label}" if only_training else label, integer_x=True)
    objective = task.objective(params)
    rounds = pd.read_csv(artifacts / "sample/rounds.csv")
    rounds[ROUND_COLUMNS] = rounds[ROUND_COLUMNS].map(objective.to_metric)
    rounds["rounds_done"] = rounds["round"] - 1  # row r: the pool that round r starts from
    plot_curves(rounds, "rounds_done", ROUND_COLUMNS, out / "search_curve.png", "Supernet score of the pool",
                objective.metric_label, xlabel="search rounds done (0: the warmup pool)", integer_x=True)
    trace = pd.read_csv(artifacts / "sample/mras_trace.csv")
    trace["step"] = range(1, len(trace) + 1)
    no_trace = f"no MRAS trace: search.strategy={params.search.strategy} does not run MRAS"
    plot_curves(trace, "step", ["gamma", "h_of_mean"], out / "mras_trace.png", "MRAS in the embedding",
                "predicted target", xlabel="MRAS iteration (all rounds)", secondary=["max_sigma"],
                secondary_label="largest sampling std", integer_x=True, empty_note=no_trace)
    plot_curves(trace, "step", ["elites", "ess"], out / "mras_ess.png", "MRAS elite weights",
                "samples", xlabel="MRAS iteration (all rounds)", integer_x=True, empty_note=no_trace)
    holdout = pd.read_csv(artifacts / "embed/holdout.csv")
    plot_scatter(holdout["measured"], holdout["predicted_score"], out / "predictor_scatter.png",
                 f"{objective.score_label} (measured)", "predicted by the predictor",
                 "Predictor on held-out architectures", identity_line=True)
    draw_architecture(space, space.from_str(card["arch"]), out / "cells.png", title=card["arch"])


def reference_rankings(reference: ArchPool) -> dict[str, list[float]]:
    """How the search's ranking and each cheap signal rank the reference cells (``truth_<name>_*``):
    as rank percentiles, so that a signal's -inf (a singular NASWOT kernel) ranks lowest."""
    return {name.removeprefix(SIGNAL_PREFIX): rank_percentiles(values) for name, values in reference.columns.items()
            if name == RANKING or name.startswith(SIGNAL_PREFIX)}


def judge_run(oracle: TableOracle, space: SearchSpace, artifacts: Path, out: Path, score_label: str,
              column: str) -> dict:
    """Truth metrics of the search (rnas.judging.truth.judge) and the plot of supernet score vs true accuracy."""
    warmup, final, reference = (ArchPool.from_csv(space, artifacts / path) for path in
                                ("warmup/pool.csv", "sample/pool_final.csv", "sample/reference.csv"))
    holdout = pd.read_csv(artifacts / "embed/holdout.csv")
    reranked = pd.read_csv(artifacts / "rerank/rerank.csv")
    metrics = judge(oracle, space.from_str(read_json(artifacts / "rerank/best.json")["arch"]),
                    ArchPool.from_csv(space, artifacts / "sample/top.csv").archs,
                    {"warmup": (warmup.archs, warmup.scores), "pool": (final.archs, final.scores),
                     # the combined ranking of the final pool: its pick is the search's without rerank
                     **({"ranked_pool": (final.archs, final.columns[RANKING])} if RANKING in final.columns else {}),
                     "supernet": (reference.archs, reference.scores),
                     "predictor": ([space.from_str(a) for a in holdout["arch"]], holdout["predicted"].tolist()),
                     "rerank": ([space.from_str(a) for a in reranked["arch"]], reranked["validation_score"].tolist()),
                     **{name: (reference.archs, values) for name, values in reference_rankings(reference).items()}})
    shown, which = (reference, "reference cells") if len(reference) >= 2 else (warmup, "warmup pool")
    plot_scatter(shown.scores, true_accuracies(oracle, shown.archs), out / "truth_scatter.png", score_label,
                 f"true accuracy ({column})", f"Supernet score vs truth ({which})")
    return metrics
