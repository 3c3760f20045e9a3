"""prepare: decode the search dataset (and the transfer dataset, if any) into compact tensors."""
from rnas.artifacts import atomic_dir
from rnas.data.prepare import prepare_dataset
from rnas.pipeline import PREPARED, stage_main


@stage_main("prepare")
def main(ctx):
    data = ctx.params.data
    with atomic_dir(PREPARED) as out:
        datasets = {"search": data.search} if data.final is None else {"search": data.search, "final": data.final}
        for name, cfg in datasets.items():
            meta = prepare_dataset(cfg, out / name, key=f"data.{name}",
                                   progress=lambda line: print(f"[prepare] {line}", flush=True))
            ctx.run.log_metrics({f"{name}_{split}_images": n for split, n in meta["counts"].items()})


if __name__ == "__main__":
    main()
