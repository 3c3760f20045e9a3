"""The controller as the embed stage trains it, on a random pool of a profile's size: one JSON line.

    python benchmarks/bench_controller.py --profile cifar10-cpu [-S embed.train.unlabelled=100 ...]
        [--space nb201 --table ../shared/data/nb201/cifar10.csv] [--mras]

The profile (conf/profile/<name>.yaml, composed as ``dvc exp run -S profile=<name>`` would, with
any ``-S`` overrides) gives the space, the pool size and the embed block. The pool is
``warmup.pool_size`` random architectures; the stage's hold-out split (``embed.holdout_fraction``)
is kept out of training. Scores: with ``--table`` (NB201 space) the table's ``--score-col``;
otherwise a fixed synthetic score, a random linear function of the one-hot slot values (seed
12345), so ``kendall_tau`` then says how well the predictor learns an additive function of the
slots, not anything about real accuracy. ``reconstruction`` is the share of held-out
architectures the decoder rebuilds exactly (canonical form), as in ``artifacts/embed/metrics.json``;
``reconstruction_200_unseen`` the same on 200 further random cells outside the pool (a steadier
estimate than a hold-out of 20).

``--mras``: then run the configured strategy's MRAS (``search.strategies.rnas``) from the pool's
top ``top_k`` encodings with the trained predictor, and report the effective sample size of the
elite weights per iteration (min, median, max, and the elite count beside it).
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from benchmarks.common import print_result
from rnas.search.controller import build_controller, evaluate_controller, normalise_targets, train_controller
from rnas.judging.oracle import TableOracle
from rnas.tasks import load_params
from rnas.spaces import get_space
from rnas.strategies import make_strategy
from rnas.strategies.rnas import latent_objective, mras_search
from rnas.search.embedding import holdout_split

ROOT = Path(__file__).resolve().parents[1]


def composed_params(profile: str, overrides: list[str]):
    from dvc.utils.hydra import compose_and_dump
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        compose_and_dump(path, str(ROOT / "conf"), None, "config", str(ROOT),
                         [f"profile={profile}", *overrides])
        return load_params(path)


def synthetic_scores(space, archs) -> list[float]:
    rng = random.Random(12345)
    weights = [[rng.gauss(0, 1) for _ in range(slot.n_choices)] for slot in space.slots]
    return [sum(w[v] for w, v in zip(weights, arch)) for arch in archs]


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quickstart")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="a Hydra override, repeatable")
    parser.add_argument("--space", help="another space than the profile's (e.g. nb201)")
    parser.add_argument("--table", help="NB201 table CSV: score the pool with --score-col")
    parser.add_argument("--score-col", default="valid_acc_12ep")
    parser.add_argument("--mras", action="store_true", help="also run MRAS on the trained predictor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = composed_params(args.profile, args.overrides)
    space = get_space(args.space or p.space)
    archs = space.sample_unique(p.warmup.pool_size, random.Random(args.seed))
    if args.table:
        oracle = TableOracle.from_csv(args.table, space, args.score_col, args.score_col)
        scores = [oracle.query(a).select for a in archs]
    else:
        scores = synthetic_scores(space, archs)
    targets = normalise_targets(scores, p.embed.train.targets)
    fit_rows, held_rows = holdout_split(len(archs), p.embed.holdout_fraction, args.seed)
    controller = build_controller(space, p.embed.controller, args.seed)
    start = time.perf_counter()
    train_controller(controller, [archs[i] for i in fit_rows], [targets[i] for i in fit_rows], p.embed.train,
                     p.embed.train.epochs, args.seed)
    seconds = time.perf_counter() - start
    quality = evaluate_controller(controller, [archs[i] for i in held_rows], [targets[i] for i in held_rows])
    unseen = space.sample_unique(200, random.Random(args.seed + 1), exclude=set(archs))
    unseen_reconstruction = evaluate_controller(controller, unseen, [0.0] * len(unseen))["reconstruction_arch_acc"]
    result = {"benchmark": "controller", "profile": args.profile, "space": space.name, "overrides": args.overrides,
              "pool": len(archs), "held_out": len(held_rows), "scores": "table" if args.table else "synthetic",
              "epochs": p.embed.train.epochs, "unlabelled": p.embed.train.unlabelled,
              "hidden": p.embed.controller.hidden, "batch_size": p.embed.train.batch_size,
              "reconstruction": round(quality["reconstruction_arch_acc"], 4),
              "token_accuracy": round(quality["reconstruction_token_acc"], 4),
              "reconstruction_200_unseen": round(unseen_reconstruction, 4),
              "kendall_tau": round(quality["kendall_tau"], 4), "seconds": round(seconds, 1),
              "threads": torch.get_num_threads()}
    if args.mras:
        result.update(mras_weights(controller, space, p, archs, scores, args.seed))
    print_result(result)


def mras_weights(controller, space, p, archs, scores, seed) -> dict:
    strategy = make_strategy("rnas", space, p.search.strategies.get("rnas") or {}, seed=seed)
    cfg, top_k = strategy.config.mras, strategy.config.top_k
    top = [a for _, a in sorted(zip(scores, archs), key=lambda t: -t[0])[:top_k]]
    with torch.no_grad():
        latent = controller.encode(controller.tokens(top))
    objective = latent_objective(controller, latent.shape[1:], strategy.config.score_decoded)
    start = time.perf_counter()
    trace = mras_search(objective, latent.flatten(1), cfg, torch.Generator().manual_seed(seed)).trace
    frame = pd.DataFrame(trace)
    return {"D": latent[0].numel(), "weighting": cfg.weighting, "iterations": cfg.iterations,
            "ess_min": round(frame.ess.min(), 2), "ess_median": round(frame.ess.median(), 2),
            "ess_max": round(frame.ess.max(), 2), "elites_median": statistics.median(frame.elites),
            "ess_over_elites_median": round(statistics.median(frame.ess / frame.elites), 3),
            "ess_per_iteration": [round(v, 1) for v in frame.ess], "elites_per_iteration": frame.elites.tolist(),
            "temperature_median": round(frame.temperature.median(), 4),
            "h_start": round(trace[0]["best"], 4), "h_of_mean_end": round(trace[-1]["h_of_mean"], 4),
            "max_sigma_end": round(trace[-1]["max_sigma"], 4), "mras_seconds": round(time.perf_counter() - start, 2)}


if __name__ == "__main__":
    main()
