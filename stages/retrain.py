"""retrain: the winner trained from scratch with the final recipe; resumes after an interruption."""
import hashlib
import json

import pandas as pd
import torch

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.data.images import ImageSplit, load_split
from rnas.export import build_network, model_card, save_model
from rnas.networks.child_cnn import count_parameters
from rnas.pipeline import ARTIFACTS, prepared_dir, require_inputs, stage_main
from rnas.training.child import child_batches, train_child

CHECKPOINT = ARTIFACTS / "retrain_state/checkpoint.pt"  # outside the stage's output folder: it survives reruns


def joined(a: ImageSplit, b: ImageSplit) -> ImageSplit:
    return ImageSplit(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.classes, a.mean, a.std)


@stage_main("retrain", distributed=True)
def main(ctx):
    p, r = ctx.params, ctx.params.retrain
    data = prepared_dir(p, final=True)
    require_inputs(data / "meta.json", *([] if r.arch else [ARTIFACTS / "sample/best.json"]))
    arch = ctx.space.to_str(ctx.space.from_str(r.arch or read_json(ARTIFACTS / "sample/best.json")["arch"]))
    train = load_split(data, "train")
    valid = load_split(data, "valid") if (data / "valid.pt").exists() else None
    if r.train_on_valid and valid is not None:
        train, valid = joined(train, valid), None
    model = build_network(arch, r.child, len(train.classes), train.images.shape[1], ctx.space.name)
    fingerprint = hashlib.sha256(json.dumps(
        {"arch": arch, "retrain": ctx.provenance()["params"]["retrain"], "seed": p.seed,
         "data": read_json(data / "meta.json").get("fingerprint")}, sort_keys=True, default=str).encode()).hexdigest()
    history = train_child(model, r.train, child_batches(train, r.train, ctx.dist, train=True, seed=p.seed),
                          child_batches(valid, r.train, ctx.dist, train=False) if valid is not None else None,
                          ctx.device, CHECKPOINT, fingerprint, dist=ctx.dist,
                          on_epoch=lambda rec: ctx.run.log_metrics(rec, step=rec["epoch"]))
    if not ctx.dist.is_main:  # under torchrun, rank 0 writes
        return
    params_m = count_parameters(model) / 1e6
    ctx.run.log_metrics({"params_m": params_m})
    card = model_card(ctx.space.name, arch, r.child, len(train.classes), train.images.shape[1], train.classes,
                      train.mean, train.std, ctx.provenance())
    with atomic_dir(ctx.out) as out:
        save_model(out / "model.pt", model.cpu(), card)
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        write_json(out / "metrics.json", {"params_m": params_m, **{f"final_{k}": v for k, v in history[-1].items()}})
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out / "history.csv")
    print(f"[retrain] {arch}: {params_m:.2f}M parameters, trained {len(history)} epochs")


if __name__ == "__main__":
    main()
