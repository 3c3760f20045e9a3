"""evaluate: the retrained winner on the test split (quality, size, latency); the plots of the whole run;
with a truth table (evaluate.truth.table), the search judged against it (the only stage that reads it):
a tuning seed's run against the select column, any other against the report column (rnas.judging.truth.Judging)."""
import dataclasses

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import load_model
from rnas.pipeline import ARTIFACTS, numeric, prepared_dir, require_inputs, stage_main
from rnas.run_report import draw_run_plots, judge_run
from rnas.judging.truth import Judging, load_truth

TRUTH_SUMMARY = ("truth_found_acc", "truth_found_percentile", "truth_supernet_kendall_tau",  # also on the parent
                 "truth_ranking_kendall_tau")


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
            score_label = ctx.task.objective(p).score_label
            metrics |= {"truth_role": judging.role, "truth_column": judging.column,
                        **judge_run(oracle, ctx.space, ARTIFACTS, out, score_label, judging.column)}
        write_json(out / "metrics.json", metrics)
        draw_run_plots(ctx.task, p, ctx.space, ARTIFACTS, out, card)
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
