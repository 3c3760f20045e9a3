"""retrain: the winner trained from scratch with the final recipe; resumes after an interruption.

The checkpoint's fingerprint covers what shapes the result (architecture, retrain params, seed,
data, and the code that builds and trains the model), so only an interrupted run of the same
thing is resumed; once the model is written the checkpoint is retired, so a rerun retrains.
"""
import os

import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.export import save_model
from rnas.networks import count_parameters
from rnas.pipeline import ARTIFACTS, code_deps, numeric, prepared_dir, require_inputs, run_fingerprint, stage_main

CHECKPOINT = ARTIFACTS / "retrain_state/checkpoint.pt"  # outside the stage's output folder: it survives reruns
#: the checkpoint of a run whose model was written: kept to look at, never resumed
DELIVERED = CHECKPOINT.with_name("checkpoint.pt.delivered")
#: the code that builds and trains the model: the code DVC reruns the stage for
CODE = code_deps("retrain")


@stage_main("retrain", distributed=True)
def main(ctx):
    p, r = ctx.params, ctx.params.retrain
    data = prepared_dir(p, final=True)
    require_inputs(data / "meta.json", *([] if r.arch else [ARTIFACTS / "rerank/best.json"]))
    arch = ctx.space.to_str(ctx.space.from_str(r.arch or read_json(ARTIFACTS / "rerank/best.json")["arch"]))
    fingerprint = run_fingerprint(data, CODE, arch=arch, retrain=ctx.provenance()["params"]["retrain"], seed=p.seed)
    result = ctx.task.retrain(ctx.env, arch, data, child=r.child, train=r.train, train_on_valid=r.train_on_valid,
                              checkpoint=CHECKPOINT, fingerprint=fingerprint,
                              on_epoch=lambda rec: ctx.run.log_metrics(numeric(rec), step=rec["epoch"]))
    if not ctx.dist.is_main:  # under torchrun, rank 0 writes
        return
    params_m, history = count_parameters(result.model) / 1e6, result.history
    ctx.run.log_metrics({"params_m": params_m, "delivered_epoch": result.delivered_epoch})
    with atomic_dir(ctx.out) as out:
        save_model(out / "model.pt", result.model.cpu(), result.card)
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        write_json(out / "metrics.json", {"params_m": params_m, **{f"final_{k}": v for k, v in history[-1].items()},
                                          "delivered_epoch": result.delivered_epoch,
                                          **{f"delivered_{k}": v for k, v in result.delivered.items()
                                             if k.startswith("valid_")}})
        ctx.write_provenance(out)
    # Delivered: a rerun (`dvc repro -f`, say) trains anew instead of resuming a finished run.
    os.replace(CHECKPOINT, DELIVERED)
    ctx.run.log_artifact(ctx.out / "history.csv")
    print(f"[retrain] {arch}: {params_m:.2f}M parameters, trained {len(history)} epochs, "
          f"delivered the weights of epoch {result.delivered_epoch}")


if __name__ == "__main__":
    main()
