"""evaluate: the retrained winner on the test split (quality, size, latency); the plots of the whole run;
with a truth table (evaluate.truth.table), the search judged against it (the only stage that reads it)."""
import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, numeric, prepared_dir, require_inputs, stage_main
from rnas.plots import draw_architecture, plot_curves, plot_scatter
from rnas.pool import ArchPool
from rnas.truth import judge, load_truth, true_accuracies

TRUTH_SUMMARY = ("truth_found_acc", "truth_found_percentile", "truth_supernet_kendall_tau")  # also on the parent run
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


def judge_search(ctx, oracle, out):
    """Truth metrics of the search (rnas.truth.judge) and the plot of supernet score vs true accuracy."""
    warmup, final, reference = (ArchPool.from_csv(ctx.space, ARTIFACTS / path) for path in
                                ("warmup/pool.csv", "sample/pool_final.csv", "sample/reference.csv"))
    holdout = pd.read_csv(ARTIFACTS / "embed/holdout.csv")
    reranked = pd.read_csv(ARTIFACTS / "rerank/rerank.csv")
    metrics = judge(oracle, ctx.space.from_str(read_json(ARTIFACTS / "rerank/best.json")["arch"]),
                    ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/top.csv").archs,
                    {"warmup": (warmup.archs, warmup.scores), "pool": (final.archs, final.scores),
                     "supernet": (reference.archs, reference.scores),
                     "predictor": ([ctx.space.from_str(a) for a in holdout["arch"]], holdout["predicted"].tolist()),
                     "rerank": ([ctx.space.from_str(a) for a in reranked["arch"]],
                                reranked["validation_score"].tolist())})
    shown, which = (reference, "reference cells") if len(reference) >= 2 else (warmup, "warmup pool")
    plot_scatter(shown.scores, true_accuracies(oracle, shown.archs), out / "truth_scatter.png",
                 ctx.task.objective(ctx.params).score_label, f"true accuracy ({ctx.params.evaluate.truth.report_col})",
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
    for stage in ("embed", "sample", "rerank"):
        if (ARTIFACTS / stage / "metrics.json").exists():
            metrics.update({f"{stage}_{k}": v for k, v in read_json(ARTIFACTS / stage / "metrics.json").items()})
    with atomic_dir(ctx.out) as out:
        if oracle is not None:
            metrics.update(judge_search(ctx, oracle, out))
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
        print(f"[evaluate] truth: found cell {metrics['truth_found_acc']:.2f} "
              f"({metrics['truth_found_percentile']:.1f}th percentile of the space); supernet Kendall tau "
              f"{metrics.get('truth_supernet_kendall_tau', float('nan')):.3f} on the reference cells")


if __name__ == "__main__":
    main()
