"""evaluate: the retrained winner on the test split (quality, size, latency); the plots of the whole run;
with a truth table (evaluate.truth.table), the search judged against it (the only stage that reads it)."""
import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, numeric, prepared_dir, require_inputs, stage_main
from rnas.plots import draw_architecture, plot_curves, plot_scatter
from rnas.pool import ArchPool
from rnas.truth import judge, load_truth, true_accuracies

ROUND_COLUMNS = ["best", "median", "proposed_mean", "random_mean"]


def draw_plots(ctx, out, card):
    curves, label = ctx.task.curves
    history = pd.read_csv(ARTIFACTS / "retrain/history.csv")
    plot_curves(history, "epoch", [c for c in curves if c in history], out / "training_curves.png",
                "Retraining the found network", label)
    objective = ctx.task.objective
    rounds = pd.read_csv(ARTIFACTS / "sample/rounds.csv")
    rounds[ROUND_COLUMNS] = rounds[ROUND_COLUMNS].map(objective.to_metric)
    plot_curves(rounds, "round", ROUND_COLUMNS, out / "search_curve.png", "Supernet score of the pool per round",
                objective.metric_label)
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    plot_scatter(holdout["measured"], holdout["predicted"], out / "predictor_scatter.png",
                 f"{objective.score_label} (measured)", "predictor output", "Predictor on held-out architectures")
    draw_architecture(ctx.space, ctx.space.from_str(card["arch"]), out / "cells.png", title=card["arch"])


def judge_search(ctx, oracle, out):
    """Truth metrics of the search (rnas.truth.judge) and the plot of supernet score vs true accuracy."""
    warmup, final, reference = (ArchPool.from_csv(ctx.space, ARTIFACTS / path) for path in
                                ("warmup/pool.csv", "sample/pool_final.csv", "sample/reference.csv"))
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    metrics = judge(oracle, ctx.space.from_str(read_json(ARTIFACTS / "sample/best.json")["arch"]),
                    ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/top.csv").archs,
                    {"warmup": (warmup.archs, warmup.scores), "pool": (final.archs, final.scores),
                     "supernet": (reference.archs, reference.scores),
                     "predictor": ([ctx.space.from_str(a) for a in holdout["arch"]], holdout["predicted"].tolist())})
    shown, which = (reference, "reference cells") if len(reference) >= 2 else (warmup, "warmup pool")
    plot_scatter(shown.scores, true_accuracies(oracle, shown.archs), out / "truth_scatter.png",
                 ctx.task.objective.score_label, f"true accuracy ({ctx.params.evaluate.truth.report_col})",
                 f"Supernet score vs truth ({which})")
    return metrics


@stage_main("evaluate")
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=True)
    require_inputs(data / "meta.json", ARTIFACTS / "retrain/model.pt")
    oracle = load_truth(p.evaluate.truth, ctx.space) if p.evaluate.truth.table is not None else None
    model, card = load_model(ARTIFACTS / "retrain/model.pt", device=ctx.device)
    evaluation = ctx.task.evaluate(model, card, data, p.evaluate, ctx.device)
    metrics = {**evaluation.metrics, "arch": card["arch"]}
    for stage in ("embed", "sample"):
        if (ARTIFACTS / stage / "metrics.json").exists():
            metrics.update({f"{stage}_{k}": v for k, v in read_json(ARTIFACTS / stage / "metrics.json").items()})
    with atomic_dir(ctx.out) as out:
        if oracle is not None:
            metrics.update(judge_search(ctx, oracle, out))
        write_json(out / "metrics.json", metrics)
        draw_plots(ctx, out, card)
        ctx.write_provenance(out)
    ctx.run.log_metrics(numeric(metrics))
    ctx.run.log_artifact(ctx.out)
    print(f"[evaluate] {evaluation.summary}")
    if "truth_found_acc" in metrics:
        print(f"[evaluate] truth: found cell {metrics['truth_found_acc']:.2f} "
              f"({metrics['truth_found_percentile']:.1f}th percentile of the space); supernet Kendall tau "
              f"{metrics.get('truth_supernet_kendall_tau', float('nan')):.3f} on the reference cells")


if __name__ == "__main__":
    main()
