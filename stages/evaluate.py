"""evaluate: the retrained winner on the test split (quality, size, latency); the plots of the whole run;
with a truth table (evaluate.truth.table), the search judged against it (the only stage that reads it):
a tuning seed's run against the select column, any other against the report column (rnas.truth.Judging)."""
import dataclasses

import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, numeric, prepared_dir, require_inputs, stage_main
from rnas.plots import draw_architecture, plot_curves, plot_scatter
from rnas.pool import ArchPool
from rnas.ranking import RANKING, SIGNAL_PREFIX, rank_percentiles
from rnas.truth import Judging, judge, load_truth, true_accuracies

TRUTH_SUMMARY = ("truth_found_acc", "truth_found_percentile", "truth_supernet_kendall_tau",  # also on the parent
                 "truth_ranking_kendall_tau")
ROUND_COLUMNS = ["best", "median", "proposed_mean", "random_mean"]


def draw_plots(ctx, out, card):
    curves, label = ctx.task.curves
    history = pd.read_csv(ARTIFACTS / "retrain/history.csv")
    drawn = [c for c in curves if c in history]
    only_training = drawn == [curves[0]]  # retrained on train + valid: there is no validation curve
    plot_curves(history, "epoch", drawn, out / "training_curves.png", "Retraining the found network",
                f"training {label}" if only_training else label, integer_x=True)
    objective = ctx.task.objective(ctx.params)
    rounds = pd.read_csv(ARTIFACTS / "sample/rounds.csv")
    rounds[ROUND_COLUMNS] = rounds[ROUND_COLUMNS].map(objective.to_metric)
    rounds["rounds_done"] = rounds["round"] - 1  # row r: the pool that round r starts from
    plot_curves(rounds, "rounds_done", ROUND_COLUMNS, out / "search_curve.png", "Supernet score of the pool",
                objective.metric_label, xlabel="search rounds done (0: the warmup pool)", integer_x=True)
    trace = pd.read_csv(ARTIFACTS / "sample/mras_trace.csv")
    trace["step"] = range(1, len(trace) + 1)
    plot_curves(trace, "step", ["gamma", "h_of_mean"], out / "mras_trace.png", "MRAS in the embedding",
                "predicted target", xlabel="MRAS iteration (all rounds)", secondary=["max_sigma"],
                secondary_label="largest sampling std", integer_x=True,
                empty_note=f"no MRAS trace: search.strategy={ctx.params.search.strategy} does not run MRAS")
    plot_curves(trace, "step", ["elites", "ess"], out / "mras_ess.png", "MRAS elite weights",
                "samples", xlabel="MRAS iteration (all rounds)", integer_x=True,
                empty_note=f"no MRAS trace: search.strategy={ctx.params.search.strategy} does not run MRAS")
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    plot_scatter(holdout["measured"], holdout["predicted_score"], out / "predictor_scatter.png",
                 f"{objective.score_label} (measured)", "predicted by the predictor",
                 "Predictor on held-out architectures", identity_line=True)
    draw_architecture(ctx.space, ctx.space.from_str(card["arch"]), out / "cells.png", title=card["arch"])


def reference_rankings(reference: ArchPool) -> dict[str, list[float]]:
    """How the search's ranking and each cheap signal rank the reference cells (``truth_<name>_*``):
    as rank percentiles, so that a signal's -inf (a singular NASWOT kernel) ranks lowest."""
    return {name.removeprefix(SIGNAL_PREFIX): rank_percentiles(values) for name, values in reference.columns.items()
            if name == RANKING or name.startswith(SIGNAL_PREFIX)}


def judge_search(ctx, oracle, out, column: str):
    """Truth metrics of the search (rnas.truth.judge) and the plot of supernet score vs true accuracy."""
    warmup, final, reference = (ArchPool.from_csv(ctx.space, ARTIFACTS / path) for path in
                                ("warmup/pool.csv", "sample/pool_final.csv", "sample/reference.csv"))
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    reranked = pd.read_csv(ARTIFACTS / "rerank/rerank.csv")
    metrics = judge(oracle, ctx.space.from_str(read_json(ARTIFACTS / "rerank/best.json")["arch"]),
                    ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/top.csv").archs,
                    {"warmup": (warmup.archs, warmup.scores), "pool": (final.archs, final.scores),
                     # the combined ranking of the final pool: its pick is the search's without rerank
                     **({"ranked_pool": (final.archs, final.columns[RANKING])} if RANKING in final.columns else {}),
                     "supernet": (reference.archs, reference.scores),
                     "predictor": ([ctx.space.from_str(a) for a in holdout["arch"]], holdout["predicted"].tolist()),
                     "rerank": ([ctx.space.from_str(a) for a in reranked["arch"]],
                                reranked["validation_score"].tolist()),
                     **{name: (reference.archs, values) for name, values in reference_rankings(reference).items()}})
    shown, which = (reference, "reference cells") if len(reference) >= 2 else (warmup, "warmup pool")
    plot_scatter(shown.scores, true_accuracies(oracle, shown.archs), out / "truth_scatter.png",
                 ctx.task.objective(ctx.params).score_label, f"true accuracy ({column})",
                 f"Supernet score vs truth ({which})")
    return metrics


@stage_main("evaluate")
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=True)
    require_inputs(data / "meta.json", ARTIFACTS / "retrain/model.pt")
    judging = Judging.of(p.seed, p.evaluate.truth)
    oracle = (load_truth(dataclasses.replace(p.evaluate.truth, report_col=judging.column), ctx.space)
              if p.evaluate.truth.table is not None else None)
    model, card = load_model(ARTIFACTS / "retrain/model.pt", device=ctx.device)
    evaluation = ctx.task.evaluate(model, card, data, p.evaluate, ctx.device)
    metrics = {**evaluation.metrics, "arch": card["arch"]}
    for stage in ("embed", "sample", "rerank"):
        if (ARTIFACTS / stage / "metrics.json").exists():
            metrics.update({f"{stage}_{k}": v for k, v in read_json(ARTIFACTS / stage / "metrics.json").items()})
    with atomic_dir(ctx.out) as out:
        if oracle is not None:
            metrics.update({"truth_role": judging.role, "truth_column": judging.column, **judge_search(ctx, oracle, out, judging.column)})
        write_json(out / "metrics.json", metrics)
        draw_plots(ctx, out, card)
        ctx.write_provenance(out)
    ctx.run.log_metrics(numeric(metrics))
    ctx.run.log_summary(numeric({**evaluation.metrics, **{k: v for k, v in metrics.items() if k in TRUTH_SUMMARY}}))
    ctx.run.log_artifact(ctx.out)
    for picture in sorted(ctx.out.glob("*.png")):  # the main pictures, also on the parent
        ctx.run.log_artifact(picture, summary=True)
    print(f"[evaluate] {evaluation.summary}")
    if "truth_found_acc" in metrics:
        print(f"[evaluate] truth ({judging.column}, a {judging.role} run): found cell {metrics['truth_found_acc']:.2f} "
              f"({metrics['truth_found_percentile']:.1f}th percentile of the space); Kendall tau on the reference "
              f"cells: supernet {metrics.get('truth_supernet_kendall_tau', float('nan')):.3f}, the search's ranking "
              f"{metrics.get('truth_ranking_kendall_tau', float('nan')):.3f}")


if __name__ == "__main__":
    main()
