"""embed: the encoder-predictor-decoder trained on the scored pool; held-out predictor and decoder quality."""
import sys
import time

from rnas.artifacts import atomic_dir, save_checkpoint, write_json
from rnas.search.controller import build_controller
from rnas.search.embedding import fit_embedding
from rnas.pipeline import ARTIFACTS, numeric, require_inputs, stage_main
from rnas.search.pool import ArchPool
from rnas.training.progress import format_duration


@stage_main("embed")
def main(ctx):
    p, e = ctx.params, ctx.params.embed
    require_inputs(ARTIFACTS / "warmup/pool.csv")
    pool = ArchPool.from_csv(ctx.space, ARTIFACTS / "warmup/pool.csv")
    controller = build_controller(ctx.space, e.controller, p.seed).to(ctx.device)
    start, every = time.monotonic(), max(1, e.train.epochs // 20)

    def on_epoch(epoch, stats):
        if (epoch + 1) % every == 0 or epoch + 1 == e.train.epochs:
            ctx.run.log_metrics(stats, step=epoch + 1)
            elapsed = time.monotonic() - start
            eta = elapsed / (epoch + 1) * (e.train.epochs - epoch - 1)
            print(f"[embed] epoch {epoch + 1}/{e.train.epochs}  loss {stats['loss']:.4f}  mse {stats['mse']:.4f}  "
                  f"nll {stats['nll']:.3f}  elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}",
                  file=sys.stderr, flush=True)

    fit = fit_embedding(controller, pool, e.train, e.holdout_fraction, p.seed, on_epoch=on_epoch)
    metrics = fit.metrics
    ctx.run.log_metrics(numeric(metrics))
    ctx.run.log_summary({"predictor_tau": metrics["kendall_tau"]})
    with atomic_dir(ctx.out) as out:
        save_checkpoint(out / "controller.pt", {"state_dict": controller.state_dict(), **ctx.provenance()})
        save_checkpoint(out / "latent.pt", {"latent": fit.latent, "arch": [ctx.space.to_str(a) for a in pool.archs]})
        fit.holdout.to_csv(out / "holdout.csv", index=False)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    caveat = f" ({metrics['kendall_tau_reason']})" if "kendall_tau_reason" in metrics else ""
    print(f"[embed] predictor Kendall tau {metrics['kendall_tau']:.3f}{caveat} on {len(fit.holdout)} held-out "
          f"architectures; decoder reconstructs {metrics['reconstruction_arch_acc']:.1%} of them exactly")


if __name__ == "__main__":
    main()
