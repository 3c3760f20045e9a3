"""warmup: a seed pool of random architectures, the weight-sharing supernet trained on it, the pool scored."""
import random
import statistics

import pandas as pd

from rnas.artifacts import atomic_dir, write_json
from rnas.pipeline import prepared_dir, report_blind_search, require_inputs, stage_main
from rnas.search.pool import ArchPool


@stage_main("warmup", distributed=True)
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=False)
    require_inputs(data / "meta.json")
    archs = ctx.space.sample_unique(p.warmup.pool_size, random.Random(p.seed))
    supernet = ctx.supernet(data)
    history = supernet.train_epochs(archs, p.warmup.train.epochs, label="warmup",
                                    on_epoch=lambda r: ctx.run.log_metrics(r, step=r["epoch"]))
    scores = supernet.score(archs, label="warmup")
    if not ctx.dist.is_main:  # under torchrun, rank 0 writes
        return
    pool = ArchPool(ctx.space, archs, scores, {"round": [0] * len(archs)})
    summary = {"best": max(scores), "median": statistics.median(scores), "worst": min(scores)}
    metrics = {"pool_size": len(pool), **{f"score_{k}": v for k, v in summary.items()},
               "score_std": statistics.pstdev(scores), **supernet.objective.report(summary),
               **report_blind_search(ctx, pool)}
    ctx.run.log_metrics(metrics)
    with atomic_dir(ctx.out) as out:
        supernet.save(out / "supernet.pt")
        pool.to_csv(out / "pool.csv")
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out / "pool.csv")
    print(f"[warmup] pool of {len(pool)} scored: best {metrics['score_best']:.3f}, "
          f"median {metrics['score_median']:.3f}, worst {metrics['score_worst']:.3f}"
          f"{supernet.objective.report_text(summary)}")


if __name__ == "__main__":
    main()
