"""rerank: the search's top ``rerank.top`` cells (``rerank.min_distance`` slots apart) each trained from
scratch for ``rerank.epochs`` with the retrain network and recipe, on the training split, and ranked
by validation (rnas.search.rerank); the winner goes to retrain. ``rerank.top: 0`` passes the search's pick on.

Each cell is trained from the same seed, and kept in artifacts/rerank_state/ under a fingerprint of
the configuration (params, seed, data, code): an interrupted run resumes, another search on the same
supernet trains only new cells, and with ``trainer.nproc`` > 1 (or under torchrun) each rank trains
its share, with the same rows and winner for any number of ranks.
"""
import dataclasses

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.pipeline import ARTIFACTS, code_deps, prepared_dir, require_inputs, run_fingerprint, stage_main
from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING
from rnas.search.rerank import MeasurementStore, candidates, cell_id, outcome, rerank, summary, write_rows

#: outside the stage's output folder (and not a DVC output): it survives reruns
STATE = ARTIFACTS / "rerank_state"
#: the code that shapes a measurement: the code DVC reruns the stage for
CODE = code_deps("rerank")


def measurement_fingerprint(p, data) -> str:
    """What a measurement depends on: the network and recipe (``retrain.child``, ``retrain.train`` for
    ``rerank.epochs``), the seed, the prepared data and CODE; not which cells are candidates, nor how many."""
    train = dataclasses.replace(p.retrain.train, epochs=p.rerank.epochs)
    return run_fingerprint(data, CODE, child=dataclasses.asdict(p.retrain.child), train=dataclasses.asdict(train),
                           seed=p.seed)


@stage_main("rerank", distributed=True)
def main(ctx):
    p, k = ctx.params, ctx.params.rerank
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "sample/best.json", ARTIFACTS / "sample/pool_final.csv")
    final = ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/pool_final.csv")
    train = dataclasses.replace(p.retrain.train, epochs=k.epochs)
    store = MeasurementStore(STATE / "measured", measurement_fingerprint(p, data))

    def measure(arch: str) -> dict:  # on each rank, a whole cell's training
        return ctx.task.measure(ctx.env.alone(), arch, data, child=p.retrain.child, train=train,
                                checkpoint=STATE / f"checkpoints/{cell_id(arch)}.pt",
                                fingerprint=f"{store.fingerprint}:{arch}")

    rows = rerank(ctx.space, candidates(final, k.top, k.min_distance, by=final.columns.get(RANKING)), measure,
                  store, shard=ctx.dist.shard)
    if rows is None:  # another rank than 0: its cells are in the store
        return
    best, metrics = outcome(rows, read_json(ARTIFACTS / "sample/best.json"))
    ctx.run.log_metrics(metrics)
    with atomic_dir(ctx.out) as out:
        write_rows(rows, out / "rerank.csv")
        write_json(out / "best.json", best)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out / "rerank.csv")
    print(f"[rerank] {summary(best, metrics, k.epochs)}")


if __name__ == "__main__":
    main()
