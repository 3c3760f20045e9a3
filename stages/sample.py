"""sample: the search rounds (docs/algorithm.md §5): propose new architectures, refresh the pool, train on.

Each round: score the pool with the supernet, (re)fit the strategy on the scores, let it propose
``n_new`` architectures (RNAS: MRAS in the embedding), keep the best of the old pool, add
``n_random`` fresh random ones, and continue supernet training on the new pool.
At the end, ``search.reference_cells`` fixed random cells are scored too, for judging the supernet
against ground truth (evaluate); nothing in the search sees their scores. The final pool and the
reference cells get the cheap signals of ``search.ranking`` and the combined ranking
(rnas.ranking), which picks the top (and so rerank's candidates); ``search.ranking.screen`` fresh
random cells, scored the same way, join the final pool first.
"""
import math
import random
import statistics
import sys

import pandas as pd
import torch

from rnas.artifacts import atomic_dir, load_checkpoint, write_json
from rnas.pipeline import ARTIFACTS, prepared_dir, report_blind_search, require_inputs, stage_main
from rnas.pool import ArchPool
from rnas.ranking import RANKING, add_ranking
from rnas.strategies import make_strategy
from rnas.strategies.base import EmbeddingStrategy
from rnas.training.progress import CountProgress
from rnas.truth import reference_cells

TRACE_COLUMNS = ["round", "iteration", "gamma", "h_of_mean", "max_sigma", "best", "mean_h", "n_samples", "elites",
                 "ess", "temperature"]


def summarise(round_: int, pool: ArchPool) -> dict:
    """Scores of the pool, and of last round's newcomers by origin: are proposals beating random?"""
    row = {"round": round_, "best": max(pool.scores), "median": statistics.median(pool.scores)}
    for origin in ("proposed", "random"):
        scores = [s for s, o, r in zip(pool.scores, pool.columns["origin"], pool.columns["round"])
                  if o == origin and r == round_ - 1]
        row[f"{origin}_mean"] = statistics.mean(scores) if scores else float("nan")
    return row


def rescore(supernet, pool: ArchPool, label: str, trained: bool) -> list[float]:
    """The pool's scores by the supernet. One that has not ``trained`` since the pool was scored would
    give the scored cells the same scores again (same weights, same validation batches), so then only
    the cells without a score are scored."""
    rows = range(len(pool)) if trained else [i for i, score in enumerate(pool.scores) if math.isnan(score)]
    scores = list(pool.scores)
    if rows:
        for i, score in zip(rows, supernet.score([pool.archs[i] for i in rows], label=label)):
            scores[i] = score
    return scores


def cheap_signals(ctx, data, seed: int, pools: list[ArchPool]) -> list[dict[str, list[float]]]:
    """The signals of ``search.ranking`` for each pool's cells (name -> values), each cell computed once."""
    names = ctx.params.search.ranking.signals
    archs = list(dict.fromkeys(ctx.space.to_str(a) for pool in pools for a in pool.archs)) if names else []
    if not archs:
        return [{} for _ in pools]
    progress = CountProgress("sample", "signals of", len(archs), "cells")
    values = ctx.task.cheap_signals(ctx.params, ctx.space.name, data, archs, ctx.device, seed,
                                    progress=lambda done, total: progress.update(done))
    row = {arch: i for i, arch in enumerate(archs)}
    return [{name: [values[name][row[ctx.space.to_str(a)]] for a in pool.archs] for name in names} for pool in pools]


@stage_main("sample")
def main(ctx):
    p, s = ctx.params, ctx.params.search
    seed = p.seed if s.seed is None else s.seed
    torch.manual_seed(seed)
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "warmup/supernet.pt", ARTIFACTS / "warmup/pool.csv",
                   ARTIFACTS / "embed/controller.pt")
    strategy = make_strategy(s.strategy, ctx.space, s.strategy_options(p.embed), seed=seed,
                             key=f"search.strategies.{s.strategy}")
    supernet = ctx.task.supernet(ctx, data)
    supernet.load(ARTIFACTS / "warmup/supernet.pt")
    objective = supernet.objective
    pool = ArchPool.from_csv(ctx.space, ARTIFACTS / "warmup/pool.csv")
    pool.columns["origin"] = ["seed"] * len(pool)
    if isinstance(strategy, EmbeddingStrategy):
        controller = load_checkpoint(ARTIFACTS / "embed/controller.pt", keys=("state_dict",))
        strategy.adopt(controller["state_dict"], pool.observations())
    rng = random.Random(seed + 1)
    rounds, trace, pools = [], [], []
    for round_ in range(1, s.rounds + 1):
        print(f"[sample] round {round_}/{s.rounds}", file=sys.stderr, flush=True)
        if round_ > 1:
            pool.scores = rescore(supernet, pool, f"round {round_}", trained=s.epochs_per_round > 0)
        rounds.append(summarise(round_, pool))
        scores = {k: v for k, v in rounds[-1].items() if k != "round"}
        ctx.run.log_metrics({**scores, **objective.report(scores)}, step=round_)
        proposed = strategy.propose(pool.observations(), s.n_new)
        search = getattr(strategy, "last_search", None)  # only RNAS runs MRAS
        if search is not None:
            trace += [{"round": round_, **row} for row in search.trace]
        fresh = ctx.space.sample_unique(s.n_random, rng, exclude=set(pool.archs) | set(proposed))
        kept = pool.top(p.warmup.pool_size - len(proposed) - len(fresh))
        pool = kept.extend(proposed + fresh, round=[round_] * (len(proposed) + len(fresh)),
                           origin=["proposed"] * len(proposed) + ["random"] * len(fresh))
        print(f"[round {round_}] {len(proposed)} proposed by {s.strategy}, {len(fresh)} random, {len(kept)} kept",
              file=sys.stderr, flush=True)
        supernet.train_epochs(pool.archs, s.epochs_per_round, label=f"round {round_}",
                              on_epoch=lambda r: ctx.run.log_metrics({"supernet_" + k: v for k, v in r.items()},
                                                                     step=r["epoch"]))
        pools.append(pool)
    pool.scores = rescore(supernet, pool, "final", trained=s.epochs_per_round > 0)
    reference = ArchPool(ctx.space, reference_cells(ctx.space, s.reference_cells, p.seed))
    if s.reference_cells:
        reference.scores = supernet.score(reference.archs, label="reference cells")
    rounds.append(summarise(s.rounds + 1, pool))
    if s.ranking.screen:
        screened = ctx.space.sample_unique(s.ranking.screen, rng, exclude=set(pool.archs))
        pool = pool.extend(screened, supernet.score(screened, label="screened cells"),
                           round=[s.rounds + 1] * len(screened), origin=["screened"] * len(screened))
    for ranked, signals in zip((pool, reference), cheap_signals(ctx, data, seed, [pool, reference])):
        add_ranking(ranked, signals, s.ranking.weights)
    top = pool.top(s.top, by=pool.columns[RANKING])
    best = {"arch": ctx.space.to_str(top.archs[0]), "score": top.scores[0], "space": ctx.space.name,
            "strategy": s.strategy}
    metrics = {"best_score": top.scores[0], "top_mean_score": statistics.mean(top.scores),
               "final_median_score": rounds[-1]["median"],
               **objective.report({"best": top.scores[0], "final_median": rounds[-1]["median"]}),
               **report_blind_search(ctx, pool)}
    ctx.run.log_metrics(metrics)
    ctx.run.log_summary({"supernet_best_score": top.scores[0],
                         **{f"supernet_{k}": v for k, v in objective.report({"best": top.scores[0]}).items()}})
    with atomic_dir(ctx.out) as out:
        for round_, round_pool in enumerate(pools, start=1):
            round_pool.to_csv(out / f"pool_round{round_}.csv")
        pool.to_csv(out / "pool_final.csv")
        top.to_csv(out / "top.csv")
        reference.to_csv(out / "reference.csv")
        pd.DataFrame(rounds).to_csv(out / "rounds.csv", index=False)
        pd.DataFrame(trace, columns=TRACE_COLUMNS).to_csv(out / "mras_trace.csv", index=False)
        write_json(out / "best.json", best)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    for name in ("top.csv", "rounds.csv", "best.json"):
        ctx.run.log_artifact(ctx.out / name)
    print(f"[sample] best architecture (supernet score {best['score']:.3f}"
          f"{objective.report_text({'best': best['score']})}): {best['arch']}")


if __name__ == "__main__":
    main()
