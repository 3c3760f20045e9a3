"""sample: the search rounds on the warmed-up supernet, then the final pool ranked (rnas.search.rounds).

The final pool, ``search.ranking.screen`` fresh random cells and ``search.reference_cells`` fixed random
cells (for judging the supernet in evaluate; the search never sees their scores) get the supernet's
score, the cheap signals and the combined ranking, which picks the top (and rerank's candidates).
"""
import torch

from rnas.artifacts import atomic_dir, write_json
from rnas.pipeline import ARTIFACTS, prepared_dir, report_blind_search, require_inputs, stage_main
from rnas.search.pool import ArchPool
from rnas.search.rounds import RoundsConfig, fresh_cells_rng, rank_final_pool, search_metrics, search_rounds, write_search
from rnas.strategies.rnas import TRACE_COLUMNS
from rnas.judging.truth import reference_cells


@stage_main("sample")
def main(ctx):
    p, s, space = ctx.params, ctx.params.search, ctx.space
    seed = p.seed if s.seed is None else s.seed
    torch.manual_seed(seed)
    data = prepared_dir(p, final=False)
    require_inputs(data / "meta.json", ARTIFACTS / "warmup/supernet.pt", ARTIFACTS / "warmup/pool.csv",
                   ARTIFACTS / "embed/controller.pt")
    supernet = ctx.supernet(data)
    supernet.load(ARTIFACTS / "warmup/supernet.pt")
    objective = supernet.objective
    pool = ArchPool.from_csv(space, ARTIFACTS / "warmup/pool.csv")
    strategy = ctx.search_strategy(pool, seed)
    rng = fresh_cells_rng(seed)
    record = search_rounds(
        supernet, strategy, pool, RoundsConfig(s.rounds, s.n_new, s.n_random, s.epochs_per_round, p.warmup.pool_size),
        rng, name="sample",
        on_round=lambda row: ctx.run.log_metrics(objective.with_report({k: v for k, v in row.items() if k != "round"}),
                                                 step=row["round"]),
        on_epoch=lambda r: ctx.run.log_metrics({"supernet_" + k: v for k, v in r.items()}, step=r["epoch"]))
    ranked = rank_final_pool(supernet, record.pool, reference_cells(space, s.reference_cells, p.seed), s.ranking,
                             ctx.cheap_signals(data, seed), rng, s.rounds + 1, s.top)
    best = {"arch": space.to_str(ranked.top.archs[0]), "score": ranked.top.scores[0], "space": space.name,
            "strategy": s.strategy}
    metrics = search_metrics(ranked, record, objective.report) | report_blind_search(ctx, ranked.pool)
    ctx.run.log_metrics(metrics)
    ctx.run.log_summary({"supernet_best_score": best["score"],
                         **{f"supernet_{k}": v for k, v in objective.report({"best": best["score"]}).items()}})
    with atomic_dir(ctx.out) as out:
        write_search(out, record, ranked, TRACE_COLUMNS)
        write_json(out / "best.json", best)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    for name in ("top.csv", "rounds.csv", "best.json"):
        ctx.run.log_artifact(ctx.out / name)
    print(f"[sample] best architecture (supernet score {best['score']:.3f}"
          f"{objective.report_text({'best': best['score']})}): {best['arch']}")


if __name__ == "__main__":
    main()
