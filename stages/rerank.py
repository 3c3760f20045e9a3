"""rerank: the search's top ``rerank.top`` cells (``rerank.min_distance`` slots apart) each trained from
scratch for ``rerank.epochs`` with the retrain network and recipe, on the training split, and ranked
by validation (rnas.search.rerank; with ``rerank.repeats`` > 1 by the mean of that many trainings from
different seeds); the winner goes to retrain. ``rerank.top: 0`` passes the search's pick on.

Each cell's first training is from the run's seed, and kept in artifacts/rerank_state/ under a fingerprint of
the configuration (params, seed, data, code): an interrupted run resumes, another search on the same
supernet trains only new cells, and with ``rerank.processes`` (or ``trainer.nproc``) > 1, or under
torchrun, each rank trains its share, with the same rows and winner for any number of ranks.
"""
import dataclasses

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.pipeline import (ARTIFACTS, code_deps, prepared_dir, require_inputs, run_fingerprint, stage_main,
                           trainer_processes)
from rnas.search.pool import ArchPool
from rnas.search.ranking import RANKING
from rnas.search.rerank import (MeasurementStore, candidates, cell_id, outcome, repeat_seed, rerank, summary,
                                training_key, write_rows)

#: outside the stage's output folder (and not a DVC output): it survives reruns
STATE = ARTIFACTS / "rerank_state"
#: the code that shapes a measurement: the code DVC reruns the stage for
CODE = code_deps("rerank")


def measurement_fingerprint(p, data) -> str:
    """What a measurement depends on: the network and recipe (``retrain.child``, ``retrain.train`` for
    ``rerank.epochs``), the seed, the prepared data and CODE; not which cells are candidates, nor how many,
    nor how many repeats (a training's key and seed say which repeat it is)."""
    train = dataclasses.replace(p.retrain.train, epochs=p.rerank.epochs)
    return run_fingerprint(data, CODE, child=dataclasses.asdict(p.retrain.child), train=dataclasses.asdict(train),
                           seed=p.seed)


def processes(p) -> tuple[str, int]:
    """How many processes share the trainings, and the key that says so: ``rerank.processes``, or else
    ``trainer.nproc``."""
    return ("rerank.processes", p.rerank.processes) if p.rerank.processes else trainer_processes(p)


@stage_main("rerank", distributed=True, nproc=processes)
def main(ctx):
    p, k = ctx.params, ctx.params.rerank
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "sample/best.json", ARTIFACTS / "sample/pool_final.csv")
    final = ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/pool_final.csv")
    train = dataclasses.replace(p.retrain.train, epochs=k.epochs)
    store = MeasurementStore(STATE / "measured", measurement_fingerprint(p, data))

    def measure(arch: str, repeat: int) -> dict:  # on each rank, a whole training
        key = training_key(arch, repeat)
        env = dataclasses.replace(ctx.env.alone(), seed=repeat_seed(p.seed, repeat))
        return ctx.task.measure(env, arch, data, child=p.retrain.child, train=train,
                                checkpoint=STATE / f"checkpoints/{cell_id(key)}.pt", fingerprint=f"{store.fingerprint}:{key}")

    rows = rerank(ctx.space, candidates(final, k.top, k.min_distance, by=final.columns.get(RANKING)), measure,
                  store, shard=ctx.dist.shard, repeats=k.repeats)
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
