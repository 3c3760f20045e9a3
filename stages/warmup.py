"""warmup: a seed pool of random architectures, the weight-sharing supernet trained on it, the pool scored."""
import random
import statistics

import pandas as pd

from rnas.artifacts import atomic_dir, write_json
from rnas.data.images import load_split
from rnas.pipeline import build_supernet_trainer, prepared_dir, require_inputs, stage_main
from rnas.pool import ArchPool


@stage_main("warmup", distributed=True)
def main(ctx):
    p, data = ctx.params, prepared_dir(ctx.params, final=False)
    require_inputs(data / "meta.json")
    train, valid = load_split(data, "train"), load_split(data, "valid")
    archs = ctx.space.sample_unique(p.warmup.pool_size, random.Random(p.seed))
    trainer = build_supernet_trainer(ctx, train)
    history = trainer.train_epochs(archs, p.warmup.train.epochs, trainer.train_batches(train, p.seed),
                                   on_epoch=lambda r: ctx.run.log_metrics(r, step=r["epoch"]), label="warmup")
    scores = trainer.score(archs, trainer.score_batches(valid))
    if not ctx.dist.is_main:  # under torchrun, rank 0 writes
        return
    pool = ArchPool(ctx.space, archs, scores, {"round": [0] * len(archs)})
    metrics = {"pool_size": len(pool), "score_best": max(scores), "score_median": statistics.median(scores),
               "score_worst": min(scores), "score_std": statistics.pstdev(scores)}
    ctx.run.log_metrics(metrics)
    with atomic_dir(ctx.out) as out:
        trainer.save(out / "supernet.pt")
        pool.to_csv(out / "pool.csv")
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    ctx.run.log_artifact(ctx.out / "pool.csv")
    print(f"[warmup] pool of {len(pool)} scored: best {metrics['score_best']:.3f}, "
          f"median {metrics['score_median']:.3f}, worst {metrics['score_worst']:.3f}")


if __name__ == "__main__":
    main()
