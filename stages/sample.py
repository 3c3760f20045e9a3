"""sample: the search rounds on the warmed-up supernet, then the final pool ranked (rnas.search).

The final pool, ``search.ranking.screen`` fresh random cells and ``search.reference_cells`` fixed
random cells (for judging the supernet in evaluate; the search never sees their scores) get the
supernet's score, the cheap signals and the combined ranking, which picks the top (and rerank's
candidates).
"""
import statistics

import pandas as pd
import torch

from rnas.artifacts import atomic_dir, load_checkpoint, write_json
from rnas.pipeline import ARTIFACTS, prepared_dir, report_blind_search, require_inputs, stage_main
from rnas.pool import ArchPool
from rnas.search import RoundsConfig, fresh_cells_rng, rank_final_pool, search_rounds
from rnas.strategies import make_strategy
from rnas.strategies.base import EmbeddingStrategy
from rnas.strategies.rnas import TRACE_COLUMNS
from rnas.training.progress import CountProgress
from rnas.truth import reference_cells


@stage_main("sample")
def main(ctx):
    p, s, space = ctx.params, ctx.params.search, ctx.space
    seed = p.seed if s.seed is None else s.seed
    torch.manual_seed(seed)
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "warmup/supernet.pt", ARTIFACTS / "warmup/pool.csv",
                   ARTIFACTS / "embed/controller.pt")
    strategy = make_strategy(s.strategy, space, s.strategy_options(p.embed), seed=seed,
                             key=f"search.strategies.{s.strategy}")
    supernet = ctx.supernet(data)
    supernet.load(ARTIFACTS / "warmup/supernet.pt")
    report = supernet.objective.report
    pool = ArchPool.from_csv(space, ARTIFACTS / "warmup/pool.csv")
    if isinstance(strategy, EmbeddingStrategy):
        strategy.adopt(load_checkpoint(ARTIFACTS / "embed/controller.pt", keys=("state_dict",))["state_dict"],
                       pool.observations())
    rng = fresh_cells_rng(seed)
    record = search_rounds(
        supernet, strategy, pool, RoundsConfig(s.rounds, s.n_new, s.n_random, s.epochs_per_round, p.warmup.pool_size),
        rng, on_round=lambda row: ctx.run.log_metrics(with_report(row, report), step=row["round"]),
        on_epoch=lambda r: ctx.run.log_metrics({"supernet_" + k: v for k, v in r.items()}, step=r["epoch"]),
        name="sample")
    ranked = rank_final_pool(supernet, record.pool, reference_cells(space, s.reference_cells, p.seed), s.ranking,
                             lambda archs: cheap_signals(ctx, data, seed, archs), rng, s.rounds + 1, s.top)
    pool, reference, top = ranked.pool, ranked.reference, ranked.top
    best = {"arch": space.to_str(top.archs[0]), "score": top.scores[0], "space": space.name, "strategy": s.strategy}
    final = {"best": top.scores[0], "top_mean": statistics.mean(top.scores), "final_median": record.rounds[-1]["median"]}
    metrics = {f"{k}_score": v for k, v in final.items()} | report({k: final[k] for k in ("best", "final_median")})
    metrics |= report_blind_search(ctx, pool)
    ctx.run.log_metrics(metrics)
    ctx.run.log_summary({"supernet_best_score": top.scores[0],
                         **{f"supernet_{k}": v for k, v in report({"best": top.scores[0]}).items()}})
    with atomic_dir(ctx.out) as out:
        for round_, round_pool in enumerate(record.pools, start=1):
            round_pool.to_csv(out / f"pool_round{round_}.csv")
        for name, table in (("pool_final", pool), ("top", top), ("reference", reference)):
            table.to_csv(out / f"{name}.csv")
        pd.DataFrame(record.rounds).to_csv(out / "rounds.csv", index=False)
        pd.DataFrame(record.trace, columns=["round", *TRACE_COLUMNS]).to_csv(out / "mras_trace.csv", index=False)
        write_json(out / "best.json", best)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    for name in ("top.csv", "rounds.csv", "best.json"):
        ctx.run.log_artifact(ctx.out / name)
    print(f"[sample] best architecture (supernet score {best['score']:.3f}"
          f"{supernet.objective.report_text({'best': best['score']})}): {best['arch']}")


def with_report(row: dict, report) -> dict:
    scores = {k: v for k, v in row.items() if k != "round"}
    return scores | report(scores)


def cheap_signals(ctx, data, seed: int, archs: list[str]) -> dict[str, list[float]]:
    progress = CountProgress("sample", "signals of", len(archs), "cells")
    return ctx.task.cheap_signals(ctx.params, ctx.space.name, data, archs, ctx.device, seed,
                                  progress=lambda done, total: progress.update(done))


if __name__ == "__main__":
    main()
