"""embed: the encoder-predictor-decoder trained on the scored pool; held-out predictor and decoder quality."""
import math
import random
import sys
import time

import pandas as pd
import torch

from rnas.artifacts import atomic_dir, save_checkpoint, write_json
from rnas.controller import build_controller, evaluate_controller, normalise_targets, train_controller
from rnas.pipeline import ARTIFACTS, numeric, require_inputs, stage_main
from rnas.pool import BLIND_SPREAD, ArchPool
from rnas.training.progress import format_duration


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    rows = list(range(n))
    random.Random(seed).shuffle(rows)
    n_held = max(2, round(n * fraction)) if fraction > 0 else 0
    return sorted(rows[n_held:]), sorted(rows[:n_held])


def in_score_units(targets: list[float], scores: list[float]) -> list[float]:
    """Predicted targets back in the pool's score units: the inverse of ``normalise_targets`` (min-max)."""
    lo, hi = min(scores), max(scores)
    return [lo + t * (hi - lo) for t in targets]


def tau_caveat(pool: ArchPool, targets: list[float]) -> dict:
    """Where the predictor's Kendall tau means nothing: NaN with the reason. Scores that tell no cells
    apart leave the predictor nothing to rank, and a tau on them would be a number made of noise."""
    reason = pool.blind_reason() or ("the held-out cells' scores are all equal"
                                     if max(targets) - min(targets) < BLIND_SPREAD else None)
    return {} if reason is None else {"kendall_tau": math.nan, "kendall_tau_reason": reason}


@stage_main("embed")
def main(ctx):
    p, e = ctx.params, ctx.params.embed
    require_inputs(ARTIFACTS / "warmup/pool.csv")
    pool = ArchPool.from_csv(ctx.space, ARTIFACTS / "warmup/pool.csv")
    targets = normalise_targets(pool.scores)
    fit_rows, held_rows = holdout_split(len(pool), e.holdout_fraction, p.seed)
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

    train_controller(controller, [pool.archs[i] for i in fit_rows], [targets[i] for i in fit_rows],
                     e.train, e.train.epochs, p.seed, on_epoch=on_epoch)
    rows = held_rows or fit_rows  # no hold-out: report fit quality instead
    quality = evaluate_controller(controller, [pool.archs[i] for i in rows], [targets[i] for i in rows])
    metrics = {"kendall_tau": quality["kendall_tau"], "reconstruction_token_acc": quality["reconstruction_token_acc"],
               "reconstruction_arch_acc": quality["reconstruction_arch_acc"], "held_out": len(held_rows),
               **tau_caveat(pool, [pool.scores[i] for i in rows])}
    ctx.run.log_metrics(numeric(metrics))
    ctx.run.log_summary({"predictor_tau": metrics["kendall_tau"]})
    with torch.no_grad():
        latent = controller.encode(controller.tokens(pool.archs)).cpu()
    with atomic_dir(ctx.out) as out:
        save_checkpoint(out / "controller.pt", {"state_dict": controller.state_dict(), **ctx.provenance()})
        save_checkpoint(out / "latent.pt", {"latent": latent, "arch": [ctx.space.to_str(a) for a in pool.archs]})
        pd.DataFrame({"arch": [ctx.space.to_str(pool.archs[i]) for i in rows],
                      "measured": [pool.scores[i] for i in rows],
                      "predicted": quality["predictions"],  # the predictor's output: targets in [0, 1]
                      "predicted_score": in_score_units(quality["predictions"], pool.scores)}
                     ).to_csv(out / "holdout.csv", index=False)
        write_json(out / "metrics.json", metrics)
        ctx.write_provenance(out)
    caveat = f" ({metrics['kendall_tau_reason']})" if "kendall_tau_reason" in metrics else ""
    print(f"[embed] predictor Kendall tau {metrics['kendall_tau']:.3f}{caveat} on {len(rows)} held-out architectures; "
          f"decoder reconstructs {metrics['reconstruction_arch_acc']:.1%} of them exactly")


if __name__ == "__main__":
    main()
