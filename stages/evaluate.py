"""evaluate: test accuracy, size, FLOPs and latency of the retrained winner; the plots of the whole run."""
import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.data.images import load_split
from rnas.evaluate import evaluate_model
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, prepared_dir, require_inputs, stage_main
from rnas.plots import draw_architecture, plot_curves, plot_scatter


def draw_plots(ctx, out, card):
    history = pd.read_csv(ARTIFACTS / "retrain/history.csv")
    curves = [c for c in ("train_accuracy", "valid_accuracy") if c in history]
    plot_curves(history, "epoch", curves, out / "training_curves.png", "Retraining the found network", "accuracy")
    rounds = pd.read_csv(ARTIFACTS / "sample/rounds.csv")
    plot_curves(rounds, "round", ["best", "median", "proposed_mean", "random_mean"], out / "search_curve.png",
                "Supernet score of the pool per round", "supernet validation accuracy")
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    plot_scatter(holdout["measured"], holdout["predicted"], out / "predictor_scatter.png",
                 "supernet score (measured)", "predictor output", "Predictor on held-out architectures")
    draw_architecture(ctx.space, ctx.space.from_str(card["arch"]), out / "cells.png", title=card["arch"])


@stage_main("evaluate")
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=True)
    require_inputs(data / "meta.json", ARTIFACTS / "retrain/model.pt")
    model, card = load_model(ARTIFACTS / "retrain/model.pt", device=ctx.device)
    e = p.evaluate
    test = evaluate_model(model, card, load_split(data, "test"), ctx.device, e.batch_size,
                          e.latency_batch_size, e.latency_repeats)
    metrics = {"test_accuracy": test["accuracy"], "test_error": test["error"], "test_loss": test["loss"],
               "params_m": test["params_m"], "mflops": test["mflops"], "latency_ms": test["latency_ms"],
               "arch": card["arch"]}
    for stage in ("embed", "sample"):
        if (ARTIFACTS / stage / "metrics.json").exists():
            metrics.update({f"{stage}_{k}": v for k, v in read_json(ARTIFACTS / stage / "metrics.json").items()})
    ctx.run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    with atomic_dir(ctx.out) as out:
        write_json(out / "metrics.json", metrics)
        draw_plots(ctx, out, card)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out)
    print(f"[evaluate] test accuracy {test['accuracy']:.2%} on {test['images']} images, "
          f"{test['params_m']:.2f}M parameters, {test['mflops']:.1f} MFLOPs, {test['latency_ms']:.1f} ms")


if __name__ == "__main__":
    main()
