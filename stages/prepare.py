"""prepare: the search dataset (and the transfer dataset, if any) decoded once into compact tensors."""
from rnas.artifacts import atomic_dir
from rnas.pipeline import PREPARED, stage_main


@stage_main("prepare")
def main(ctx):
    data = ctx.params.data
    with atomic_dir(PREPARED) as out:
        datasets = {"search": data.search} if data.final is None else {"search": data.search, "final": data.final}
        for name, cfg in datasets.items():
            meta = ctx.task.prepare(cfg, out / name, key=f"data.{name}",
                                    progress=lambda line: print(f"[prepare] {line}", flush=True))
            ctx.run.log_metrics({f"{name}_{split}_{ctx.task.data_unit}": n for split, n in meta["counts"].items()})


if __name__ == "__main__":
    main()
