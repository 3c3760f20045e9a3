"""The weight-sharing supernet of recurrent cells trained on a word stream (docs/algorithm.md §7):
``LMSupernetTrainer``, the RNN counterpart of ``SupernetTrainer``. The data, losses and the
temporal activation regularisation are those of the final model (rnas.training.language_model)."""
from __future__ import annotations

import functools
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from rnas.artifacts import load_checkpoint, save_checkpoint
from rnas.config import require
from rnas.data.text import get_batch
from rnas.spaces.base import Arch
from rnas.training.language_model import (EpochCallback, EpochTotals, language_model_loss, lm_batches, mean_loss,
                                          perplexity, temporal_activation_penalty)
from rnas.training.progress import CountProgress, Progress
from rnas.training.rng_state import RNG_KEYS, rng_state, set_rng_state
from rnas.training.step import DivergenceGuard


@dataclass
class LMSupernetTrainConfig:
    epochs: int = 200                # epochs of the stage that uses this config
    batch_size: int = 256
    bptt: int = 35
    # The loss of a window is summed over its time steps (averaged over the batch), as in ENAS and
    # NAO's search: plain SGD at ``lr`` on it is lr * seq_len on the per-word mean, and the clip
    # bounds the summed loss's gradient.
    lr: float = 0.25
    grad_clip: float = 10.0
    weight_decay: float = 5e-7
    tar_weight: float = 1e-3         # temporal activation regularisation (AWD-LSTM beta)
    eval_batch_size: int = 64
    eval_tokens: int = 8960          # every architecture is scored on this prefix of valid

    def check(self) -> None:
        require(self.epochs >= 0, "epochs", "must be >= 0")
        for key in ("batch_size", "bptt", "eval_batch_size"):
            require(getattr(self, key) > 0, key, "must be > 0")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.grad_clip > 0, "grad_clip", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.tar_weight >= 0, "tar_weight", "must be >= 0")
        require(self.eval_tokens >= 2 * self.eval_batch_size, "eval_tokens",
                "must be at least 2 * eval_batch_size (two words per column)")



class LMSupernetTrainer:
    """Plain SGD at a constant learning rate; each BPTT window trains one path.

    ``model(tokens, hidden, arch, return_states=False)``, e.g. ``RNNSupernet``. Deterministic
    given ``seed`` and torch's RNG (dropout masks), whose state the trainer's state carries.
    """

    def __init__(self, model: nn.Module, cfg: LMSupernetTrainConfig, device: torch.device,
                 total_epochs: int, seed: int):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.cfg, self.device, self.total_epochs = cfg, device, total_epochs
        self.model = model.to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epoch = 0
        self.rng = random.Random(seed)  # samples the path of every step
        self.divergence = DivergenceGuard(device)

    # --- data ---------------------------------------------------------------------------
    def train_data(self, ids: Tensor) -> Tensor:
        """The training stream as ``[T, batch_size]`` columns."""
        return lm_batches(ids, self.cfg.batch_size, self.device)

    def score_data(self, ids: Tensor) -> Tensor:
        """The fixed prefix of the validation stream every architecture is scored on."""
        if len(ids) < self.cfg.eval_tokens:
            raise ValueError(f"score_data: {len(ids)} tokens, fewer than eval_tokens = {self.cfg.eval_tokens}")
        return lm_batches(ids[:self.cfg.eval_tokens], self.cfg.eval_batch_size, self.device)

    # --- training -----------------------------------------------------------------------
    def train_epochs(self, archs: Sequence[Arch], n_epochs: int, data: Tensor,
                     on_epoch: EpochCallback | None = None, label: str = "supernet") -> list[dict[str, Any]]:
        """Train ``n_epochs`` more epochs over ``data`` (from ``train_data``), each BPTT window on
        one architecture drawn uniformly from ``archs``. Returns one record per epoch;
        ``on_epoch`` gets each record as it is made."""
        if not archs:
            raise ValueError("train_epochs: no architectures to train")
        if self.epoch + n_epochs > self.total_epochs:
            raise ValueError(f"train_epochs: {n_epochs} more epochs after epoch {self.epoch} would run past "
                             f"the {self.total_epochs} epochs this trainer was made for")
        progress = Progress(label, self.epoch, self.epoch + n_epochs, self.total_epochs, unit="tok")
        history = []
        for i in range(n_epochs):
            record = self._train_epoch(archs, data, progress)
            self.divergence.check(record["epoch"], record["lr"], last=i + 1 == n_epochs)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return history

    def _train_epoch(self, archs: Sequence[Arch], data: Tensor, progress: Progress) -> dict[str, Any]:
        progress.begin_epoch(self.epoch)
        self.model.train()
        totals = EpochTotals(self.device)
        hidden = self.model.init_hidden(data.shape[1])
        starts = range(0, len(data) - 1, self.cfg.bptt)
        start_time = time.perf_counter()
        for done, i in enumerate(starts, start=1):
            tokens, targets = get_batch(data, i, self.cfg.bptt)
            hidden = self._train_step(tokens, targets, hidden.detach(), self.rng.choice(archs), totals)
            if progress.due():
                loss, accuracy, words = totals.values()
                progress.batch(done, len(starts), loss, accuracy, words)
        seconds = time.perf_counter() - start_time
        loss, accuracy, words = totals.values()
        self.epoch += 1
        record = {"epoch": self.epoch, "lr": self.cfg.lr, "loss": loss, "perplexity": perplexity(loss),
                  "accuracy": accuracy, "tokens_per_s": words / seconds, "seconds": seconds,
                  "n_archs": len(archs)}
        progress.end_epoch(loss, accuracy, record["tokens_per_s"], f"ppl {record['perplexity']:.1f}")
        return record

    def _train_step(self, tokens: Tensor, targets: Tensor, hidden: Tensor, arch: Arch,
                    totals: EpochTotals) -> Tensor:
        logits, hidden, states = self.model(tokens, hidden, arch, return_states=True)
        loss = language_model_loss(logits, targets)
        objective = (loss + self.cfg.tar_weight * temporal_activation_penalty(states)) * len(tokens)
        # set_to_none: slices off this path get no update, weight decay included
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        totals.add(loss, logits, targets)
        self.divergence.step(loss)
        return hidden

    # --- scoring ------------------------------------------------------------------------
    def score(self, archs: Sequence[Arch], data: Tensor, label: str = "score") -> list[float]:
        """Validation LOSS (mean nats per word; lower is better) of each architecture on the same
        ``data`` (from ``score_data``), without dropout, each from a zero hidden state."""
        was_training = self.model.training
        self.model.eval()
        progress = CountProgress(label, "scored", len(archs), "architectures")
        losses = []
        try:
            hidden = self.model.init_hidden(data.shape[1])
            for arch in archs:
                losses.append(mean_loss(functools.partial(self.model, arch=arch), data, self.cfg.bptt, hidden))
                progress.update(len(losses))
            return losses
        finally:
            self.model.train(was_training)

    # --- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "total_epochs": self.total_epochs, "rng": self.rng.getstate(),
                **rng_state(self.device)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["total_epochs"] != self.total_epochs:
            raise ValueError(f"supernet state was made for {state['total_epochs']} epochs, "
                             f"this trainer for {self.total_epochs}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        version, internal, gauss_next = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss_next))
        set_rng_state(state, self.device)

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_checkpoint(path, keys=("model", "optimizer", "epoch", "total_epochs", "rng",
                                                         *RNG_KEYS)))


# --- the final model --------------------------------------------------------------------------
