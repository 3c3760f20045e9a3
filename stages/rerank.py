"""rerank: the final pool's top ``rerank.top`` cells (by supernet score, ``rerank.min_distance``
slots apart) each trained from scratch for ``rerank.epochs`` (the retrain network and recipe, on
the search data, without its validation split) and ranked by validation; the winner goes to
retrain. ``rerank.top: 0`` passes the supernet's pick through.

Every cell is trained from the same seed, so its result depends on the cell and the configuration
only, not on the order or the other candidates. artifacts/rerank_state/ keeps, under a fingerprint
of that configuration (params, seed, data, code), every cell measured so far and the current cell's
epochs: an interrupted run resumes, and a rerun with another search strategy or search seed on the
same supernet trains only the cells no earlier run did.
"""
import dataclasses
import sys

import pandas as pd

from rnas.artifacts import atomic_dir, read_json, write_json
from rnas.pipeline import ARTIFACTS, code_deps, prepared_dir, require_inputs, run_fingerprint, seed_everything, stage_main
from rnas.pool import ArchPool
from rnas.ranking import RANKING
from rnas.rerank import candidates, rerank, winner

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


def load_done(fingerprint: str) -> dict:
    """Cells measured by earlier runs of the same configuration."""
    path = STATE / "measured.json"
    state = read_json(path) if path.exists() else {}
    return dict(state.get("measured", {})) if state.get("fingerprint") == fingerprint else {}


@stage_main("rerank")
def main(ctx):
    p, k = ctx.params, ctx.params.rerank
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "sample/best.json", ARTIFACTS / "sample/pool_final.csv")
    best = read_json(ARTIFACTS / "sample/best.json")
    final = ArchPool.from_csv(ctx.space, ARTIFACTS / "sample/pool_final.csv")
    pool = candidates(final, k.top, k.min_distance, by=final.columns.get(RANKING))
    train = dataclasses.replace(p.retrain.train, epochs=k.epochs)
    fingerprint = measurement_fingerprint(p, data)

    def measure(arch: str) -> dict:
        print(f"[rerank] training {arch} for {k.epochs} epochs", file=sys.stderr, flush=True)
        seed_everything(p.seed)
        checkpoint = STATE / "checkpoint.pt"
        record = ctx.task.retrain(ctx.env, arch, data, child=p.retrain.child, train=train, train_on_valid=False,
                                  checkpoint=checkpoint, fingerprint=f"{fingerprint}:{arch}").delivered
        checkpoint.unlink(missing_ok=True)
        measured = {key: value for key, value in record.items() if key.startswith(("train_", "valid_"))}
        return {"validation_score": ctx.task.validation_score(record), "delivered_epoch": record["epoch"], **measured}

    done = load_done(fingerprint)
    rows = rerank(ctx.space, pool, measure, done,
                  on_measured=lambda d: write_json(STATE / "measured.json", {"fingerprint": fingerprint, "measured": d}))
    if rows:
        chosen = winner(rows)
        best = {**best, "arch": chosen["arch"], "score": chosen["supernet_score"],
                "validation_score": chosen["validation_score"], "search_rank": chosen["search_rank"]}
    reused = sum(row["reused"] for row in rows)
    metrics = {"candidates": len(rows), "search_rank": best.get("search_rank", 1), "trained": len(rows) - reused,
               **({"validation_score": best["validation_score"]} if rows else {})}
    ctx.run.log_metrics(metrics)
    with atomic_dir(ctx.out) as out:
        pd.DataFrame(rows, columns=None if rows else ["search_rank", "arch", "supernet_score", "validation_score"]
                     ).to_csv(out / "rerank.csv", index=False)
        write_json(out / "best.json", best)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out / "rerank.csv")
    if rows:
        print(f"[rerank] {len(rows)} cells trained {k.epochs} epochs ({reused} measured by an earlier run); "
              f"the winner, search rank {best['search_rank']}, validation score {best['validation_score']:.4f}: {best['arch']}")
    else:
        print(f"[rerank] rerank.top is 0: the supernet's pick goes to retrain: {best['arch']}")


if __name__ == "__main__":
    main()
