"""Fitting the controller (encoder - predictor - decoder) to a scored pool, as the embed stage does:
a hold-out split, the fit, and the predictor's and decoder's quality on the held-out cells."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from rnas.search.controller import Controller, ControllerTrainConfig, evaluate_controller, normalise_targets, train_controller
from rnas.search.pool import BLIND_SPREAD, ArchPool


@dataclass
class EmbeddingFit:
    metrics: dict            # kendall_tau (or NaN with kendall_tau_reason), reconstruction accuracies, held_out
    holdout: pd.DataFrame    # arch, measured, predicted (a target in [0, 1]), predicted_score (score units)
    latent: torch.Tensor     # the pool's encodings [n, T, d], on the CPU


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


def fit_embedding(controller: Controller, pool: ArchPool, train: ControllerTrainConfig, holdout_fraction: float,
                  seed: int, on_epoch: Callable[[int, dict], None] | None = None) -> EmbeddingFit:
    """Train ``controller`` on the pool's cells outside a ``holdout_fraction`` split (drawn with ``seed``)
    and judge it on the held-out ones (with no hold-out: on the fitted cells)."""
    targets = normalise_targets(pool.scores)
    fit_rows, held_rows = holdout_split(len(pool), holdout_fraction, seed)
    train_controller(controller, [pool.archs[i] for i in fit_rows], [targets[i] for i in fit_rows],
                     train, train.epochs, seed, on_epoch=on_epoch)
    rows = held_rows or fit_rows
    quality = evaluate_controller(controller, [pool.archs[i] for i in rows], [targets[i] for i in rows])
    metrics = {"kendall_tau": quality["kendall_tau"], "reconstruction_token_acc": quality["reconstruction_token_acc"],
               "reconstruction_arch_acc": quality["reconstruction_arch_acc"], "held_out": len(held_rows),
               **tau_caveat(pool, [pool.scores[i] for i in rows])}
    holdout = pd.DataFrame({"arch": [pool.space.to_str(pool.archs[i]) for i in rows],
                            "measured": [pool.scores[i] for i in rows],
                            "predicted": quality["predictions"],
                            "predicted_score": in_score_units(quality["predictions"], pool.scores)})
    with torch.no_grad():
        latent = controller.encode(controller.tokens(pool.archs)).cpu()
    return EmbeddingFit(metrics, holdout, latent)
