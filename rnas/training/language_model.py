"""Training the final recurrent language model on a word stream (docs/algorithm.md §7):
``train_language_model``, the counterpart of ``train_child``; the weight-sharing supernet that shares
its data, losses and regularisation is in rnas.training.language_supernet.

Data are token-id streams cut into ``batch_size`` columns by ``rnas.data.text.batchify``
(``[T, B]``); training walks down the columns in BPTT windows and carries the hidden state
from one window to the next (detached), starting every epoch from zeros. Losses are mean
cross-entropies per predicted word, in nats; perplexity = exp(loss).

Both models (this one and the supernet) take ``(tokens [T, B], hidden [B, H], ...)`` and return ``(logits [T, B, V],
hidden)``, and with ``return_states=True`` also the cell outputs ``[T, B, H]``, whose
temporal activation regularisation (AWD-LSTM's beta: ``tar_weight * mean((h_t - h_{t-1})^2)``)
is added to the training loss, as in NAO and DARTS.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.artifacts import resumable_checkpoint, save_checkpoint
from rnas.config import require
from rnas.data.text import batchify, get_batch
from rnas.errors import ConfigError
from rnas.training.progress import Progress
from rnas.training.rng_state import RNG_KEYS, rng_state, set_rng_state
from rnas.training.step import DivergenceGuard

EpochCallback = Callable[[dict[str, Any]], None]
#: ``(tokens, hidden) -> (logits, hidden)``
LMForward = Callable[[Tensor, Tensor], tuple[Tensor, ...]]

# AWD-LSTM's random BPTT length: N(bptt, 5) words, from bptt / 2 instead with probability 0.05,
# at least 5 and at most bptt + 20.
FULL_LENGTH_PROB = 0.95
LENGTH_STD = 5.0
MIN_LENGTH = 5
MAX_EXTRA_LENGTH = 20


@dataclass
class LMTrainConfig:
    epochs: int = 8000
    batch_size: int = 64
    bptt: int = 35                   # mean window length; each window's is drawn as in AWD-LSTM
    lr: float = 20.0                 # per window scaled by seq_len / bptt
    grad_clip: float = 0.25
    weight_decay: float = 8e-7
    tar_weight: float = 1e-3         # temporal activation regularisation (AWD-LSTM beta)
    # Switch from SGD to averaged SGD once the validation loss is worse than the best one seen
    # before the last ``nonmono`` epochs (AWD-LSTM's non-monotone trigger).
    nonmono: int = 5
    eval_batch_size: int = 10

    def check(self) -> None:
        for key in ("epochs", "batch_size", "bptt", "eval_batch_size"):
            require(getattr(self, key) > 0, key, "must be > 0")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.grad_clip > 0, "grad_clip", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.tar_weight >= 0, "tar_weight", "must be >= 0")
        require(self.nonmono >= 1, "nonmono", "must be >= 1")


def perplexity(loss: float) -> float:
    """exp(loss), inf where that overflows (NaN stays NaN: an unscored entry of a table)."""
    return math.inf if loss >= 700 else math.exp(loss)


def lm_batches(ids: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """The stream ``ids`` as ``[T, batch_size]`` columns on ``device``."""
    return batchify(ids, batch_size).to(device)


def language_model_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def temporal_activation_penalty(states: Tensor) -> Tensor:
    """AWD-LSTM's TAR: mean squared change of the cell output between consecutive steps."""
    return (states[1:] - states[:-1]).pow(2).mean()


def mean_loss(forward: LMForward, data: Tensor, bptt: int, hidden: Tensor) -> float:
    """Mean next-word loss over the columns ``data`` ([T, B]), read in windows of ``bptt``."""
    total, words = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data) - 1, bptt):
            tokens, targets = get_batch(data, i, bptt)
            logits, hidden = forward(tokens, hidden)[:2]
            total += language_model_loss(logits, targets).item() * targets.numel()
            words += targets.numel()
    return total / words


def evaluate_language_model(model: nn.Module, ids: Tensor, batch_size: int, bptt: int) -> dict[str, float]:
    """Loss and perplexity of ``model`` (in eval mode: no dropout) on the stream ``ids``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        loss = mean_loss(model, lm_batches(ids, batch_size, device), bptt, model.init_hidden(batch_size))
    finally:
        model.train(was_training)
    return {"loss": loss, "perplexity": perplexity(loss)}


class EpochTotals:
    """Loss, correct next-word guesses and words of an epoch so far, kept on the device so that
    the loop does not sync with it at every step."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device)

    def add(self, loss: Tensor, logits: Tensor, targets: Tensor) -> None:
        n = float(targets.numel())
        correct = (logits.argmax(-1) == targets).sum().float()
        self.sums += torch.stack([loss.detach().float() * n, correct, torch.full_like(correct, n)])

    def values(self) -> tuple[float, float, int]:
        """(mean loss, accuracy, words)."""
        loss_sum, correct, words = self.sums.tolist()
        return loss_sum / max(words, 1), correct / max(words, 1), int(words)


def window_length(bptt: int) -> int:
    """A random BPTT window length (AWD-LSTM), drawn from torch's RNG."""
    mean = bptt if torch.rand(()).item() < FULL_LENGTH_PROB else bptt / 2
    return min(max(MIN_LENGTH, int(torch.normal(mean, LENGTH_STD, ()).item())), bptt + MAX_EXTRA_LENGTH)


@contextlib.contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Under averaged SGD, the model holds the running averages of its weights inside the block."""
    if not isinstance(optimizer, torch.optim.ASGD):
        yield
        return
    averages = [(p, optimizer.state[p]["ax"]) for p in model.parameters() if "ax" in optimizer.state[p]]
    current = [p.detach().clone() for p, _ in averages]
    with torch.no_grad():
        for p, average in averages:
            p.copy_(average)
    try:
        yield
    finally:
        with torch.no_grad():
            for (p, _), weights in zip(averages, current):
                p.copy_(weights)


class _LMRun:
    """One training run of a final model: model, optimizer (SGD, later ASGD), validation losses
    for the switch, records; all of it in the checkpoint."""

    def __init__(self, model: nn.Module, cfg: LMTrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.model = model.to(device)
        self.optimizer: torch.optim.Optimizer = self._sgd()
        self.valid_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        #: the validated weights with the lowest validation loss so far: {"epoch", "valid_loss", "model"}
        self.best: dict[str, Any] | None = None
        self.divergence = DivergenceGuard(device)

    @property
    def averaging(self) -> bool:
        return isinstance(self.optimizer, torch.optim.ASGD)

    def _sgd(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def _asgd(self) -> torch.optim.Optimizer:
        # t0 = 0, lambd = 0: a plain running average of the weights from the switch on (AWD-LSTM)
        return torch.optim.ASGD(self.model.parameters(), lr=self.cfg.lr, t0=0, lambd=0.0,
                                weight_decay=self.cfg.weight_decay)

    def train_epoch(self, data: Tensor, progress: Progress) -> dict[str, float]:
        self.model.train()
        totals = EpochTotals(self.device)
        hidden = self.model.init_hidden(data.shape[1])
        n_windows = math.ceil((len(data) - 1) / self.cfg.bptt)  # about: window lengths are random
        start_time = time.perf_counter()
        i, done = 0, 0
        while i < len(data) - 1:
            seq_len = window_length(self.cfg.bptt)
            tokens, targets = get_batch(data, i, seq_len)
            hidden = self._step(tokens, targets, hidden.detach(), totals)
            i, done = i + seq_len, done + 1
            if progress.due():
                loss, accuracy, words = totals.values()
                progress.batch(done, max(n_windows, done), loss, accuracy, words)
        seconds = time.perf_counter() - start_time
        loss, accuracy, words = totals.values()
        return {"train_loss": loss, "train_ppl": perplexity(loss), "train_accuracy": accuracy,
                "tokens_per_s": words / seconds, "seconds": seconds}

    def _step(self, tokens: Tensor, targets: Tensor, hidden: Tensor, totals: EpochTotals) -> Tensor:
        logits, hidden, states = self.model(tokens, hidden, return_states=True)
        loss = language_model_loss(logits, targets)
        objective = loss + self.cfg.tar_weight * temporal_activation_penalty(states)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        # a shorter window moves the weights less (AWD-LSTM; torch's ASGD applies the step size
        # it computed from the previous step's lr, so under ASGD the scaling lags one window)
        self.optimizer.param_groups[0]["lr"] = self.cfg.lr * len(tokens) / self.cfg.bptt
        self.optimizer.step()
        self.optimizer.param_groups[0]["lr"] = self.cfg.lr
        totals.add(loss, logits, targets)
        self.divergence.step(loss)
        return hidden

    def validate(self, valid_ids: Tensor, epoch: int) -> float:
        """Validation loss of the weights after ``epoch`` (the averaged ones under ASGD), which are
        kept when their loss is the lowest so far; switches to ASGD when due."""
        with averaged_weights(self.model, self.optimizer):
            loss = evaluate_language_model(self.model, valid_ids, self.cfg.eval_batch_size, self.cfg.bptt)["loss"]
            if math.isfinite(loss) and (self.best is None or loss < self.best["valid_loss"]):
                self.best = {"epoch": epoch, "valid_loss": loss,
                             "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        if not self.averaging:
            nonmono = self.cfg.nonmono
            if len(self.valid_losses) > nonmono and loss > min(self.valid_losses[:-nonmono]):
                self.optimizer = self._asgd()
            self.valid_losses.append(loss)
        return loss

    def checkpoint(self, fingerprint: str) -> dict[str, Any]:
        # The RNG states make a resumed run draw the same windows and dropout masks.
        return {"fingerprint": fingerprint, "epoch": len(self.history), "history": self.history,
                "model": self.model.state_dict(), "averaging": self.averaging,
                "optimizer": self.optimizer.state_dict(), "valid_losses": self.valid_losses,
                "best": self.best, **rng_state(self.device)}

    def resume(self, path: str | os.PathLike, fingerprint: str) -> None:
        state = resumable_checkpoint(path, fingerprint, ("epoch", "history", "model", "averaging", "optimizer",
                                                         "valid_losses", "best", *RNG_KEYS))
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer = self._asgd() if state["averaging"] else self._sgd()
        self.optimizer.load_state_dict(state["optimizer"])
        self.valid_losses = list(state["valid_losses"])
        self.best = state["best"]
        self.history = list(state["history"])
        set_rng_state(state, self.device)
        print(f"[train] resuming {path} after epoch {state['epoch']}/{self.cfg.epochs}", file=sys.stderr)

    def deliver_best(self) -> None:
        """Load the kept weights: the epoch with the lowest validation loss (DARTS's and NAO's recipe)."""
        if self.best is None:
            raise ConfigError(f"training diverged: the validation loss was not finite after any of the "
                              f"{len(self.history)} epochs (lr {self.cfg.lr:g}); lower the learning rate")
        self.model.load_state_dict(self.best["model"])


def train_language_model(model: nn.Module, cfg: LMTrainConfig, train_ids: Tensor, valid_ids: Tensor,
                         device: torch.device, checkpoint_path: str | os.PathLike, run_fingerprint: str,
                         on_epoch: EpochCallback | None = None) -> list[dict[str, Any]]:
    """Train ``model`` (e.g. ``RNNModel``) on the stream ``train_ids``, validating on ``valid_ids``
    after every epoch (which also decides the switch to averaged SGD).

    Checkpoints after every epoch; ``run_fingerprint`` must change whenever anything that shapes
    the run does (architecture, configs, data, seed). An interrupted run with the same fingerprint
    resumes after its last finished epoch and ends as an uninterrupted one; a checkpoint with
    another fingerprint, or an unreadable one, is set aside. Returns every epoch's record, a resumed run's earlier ones
    included; ``on_epoch`` gets each new record after its checkpoint is written.

    The model ends holding the weights that scored the lowest validation loss (the averaged ones
    once averaging has started), not the last epoch's: each record's ``best_epoch`` names the best
    epoch so far, so the last record's names the delivered one.
    """
    run = _LMRun(model, cfg, device)
    run.resume(checkpoint_path, run_fingerprint)
    data = lm_batches(train_ids, cfg.batch_size, device)
    progress = Progress("train", len(run.history), cfg.epochs, unit="tok")
    for epoch in range(len(run.history), cfg.epochs):
        progress.begin_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": cfg.lr,
                                  "optimizer": "asgd" if run.averaging else "sgd"}
        record.update(run.train_epoch(data, progress))
        run.divergence.check(epoch + 1, cfg.lr, last=epoch + 1 == cfg.epochs)
        valid_loss = run.validate(valid_ids, epoch + 1)
        record.update(valid_loss=valid_loss, valid_ppl=perplexity(valid_loss),
                      best_epoch=run.best["epoch"] if run.best is not None else 0)
        run.history.append(record)
        save_checkpoint(checkpoint_path, run.checkpoint(run_fingerprint))
        progress.end_epoch(record["train_loss"], record["train_accuracy"], record["tokens_per_s"],
                           f"ppl {record['train_ppl']:.1f}  valid ppl {record['valid_ppl']:.1f}")
        if on_epoch is not None:
            on_epoch(record)
    run.deliver_best()
    return run.history
