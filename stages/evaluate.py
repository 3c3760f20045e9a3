"""evaluate: the retrained winner on the test split (quality, size, latency); the plots of the whole run."""
import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, numeric, prepared_dir, require_inputs, stage_main
from rnas.plots import draw_architecture, plot_curves, plot_scatter

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


@stage_main("evaluate")
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=True)
    require_inputs(data / "meta.json", ARTIFACTS / "retrain/model.pt")
    model, card = load_model(ARTIFACTS / "retrain/model.pt", device=ctx.device)
    evaluation = ctx.task.evaluate(model, card, data, p.evaluate, ctx.device)
    metrics = {**evaluation.metrics, "arch": card["arch"]}
    for stage in ("embed", "sample"):
        if (ARTIFACTS / stage / "metrics.json").exists():
            metrics.update({f"{stage}_{k}": v for k, v in read_json(ARTIFACTS / stage / "metrics.json").items()})
    ctx.run.log_metrics(numeric(metrics))
    with atomic_dir(ctx.out) as out:
        write_json(out / "metrics.json", metrics)
        draw_plots(ctx, out, card)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out)
    print(f"[evaluate] {evaluation.summary}")


if __name__ == "__main__":
    main()
