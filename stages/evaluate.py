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
    drawn = [c for c in curves if c in history]
    only_training = drawn == [curves[0]]  # retrained on train + valid: there is no validation curve
    plot_curves(history, "epoch", drawn, out / "training_curves.png", "Retraining the found network",
                f"training {label}" if only_training else label, integer_x=True)
    objective = ctx.task.objective
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
    ctx.run.log_summary(numeric(evaluation.metrics))
    with atomic_dir(ctx.out) as out:
        write_json(out / "metrics.json", metrics)
        draw_plots(ctx, out, card)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out)
    for picture in sorted(ctx.out.glob("*.png")):  # the main pictures, also on the parent
        ctx.run.log_artifact(picture, summary=True)
    print(f"[evaluate] {evaluation.summary}")


if __name__ == "__main__":
    main()
