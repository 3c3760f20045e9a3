"""The controller: encoder - performance predictor - decoder (docs/algorithm.md §3, as in NAO).

The encoder maps an architecture's token sequence to per-step outputs ``[B, T, d]`` (each step
L2-normalised); the architecture embedding is the normalised mean over steps. The predictor
scores an embedding in (0, 1), higher is better. The decoder reads per-step outputs back into
a token sequence, greedily and constrained to the space's legal tokens, so every latent point
decodes to a valid architecture. Search strategies move per-step outputs (``latent``) and
decode them: ``latent`` is the search variable of MRAS and of NAO's gradient step.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.config import require
from rnas.spaces.base import Arch, SearchSpace
from rnas.judging.rank_stats import kendall_tau


@dataclass
class ControllerConfig:
    token_embedding: int = 48
    hidden: int = 96
    mlp_layers: int = 3
    mlp_hidden: int = 200
    dropout: float = 0.1

    def check(self):
        for key in ("token_embedding", "hidden", "mlp_layers", "mlp_hidden"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass
class ControllerTrainConfig:
    epochs: int = 1000           # first fit
    refit_epochs: int = 250      # later fits, warm-started from the previous round
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    mse_weight: float = 0.8      # loss = w * MSE + (1 - w) * NLL
    symmetry_augment: bool = True
    #: how scores become predictor targets (``normalise_targets``): "minmax" (docs/algorithm.md §3), or
    #: "rank", which a few broken architectures far below the rest cannot squeeze together
    targets: Literal["minmax", "rank"] = "minmax"
    #: random architectures added to each batch's reconstruction loss (no predictor target). With
    #: few observed architectures the decoder otherwise memorises them and decodes points near
    #: them to them, not to their neighbours; 0 = the reference (observed architectures only)
    unlabelled: int = 0

    def check(self):
        for key in ("epochs", "batch_size"):
            require(getattr(self, key) > 0, key, "must be positive")
        require(self.refit_epochs >= 0, "refit_epochs", "must be >= 0")
        require(self.unlabelled >= 0, "unlabelled", "must be >= 0")
        require(self.lr > 0, "lr", "must be positive")
        require(0 <= self.mse_weight <= 1, "mse_weight", "must be in [0, 1]")


def normalise_latent(latent: Tensor) -> tuple[Tensor, Tensor]:
    """(per-step normalised outputs [B,T,d], normalised mean embedding [B,d])."""
    steps = F.normalize(latent, dim=-1)
    return steps, F.normalize(steps.mean(dim=1), dim=-1)


class Controller(nn.Module):
    def __init__(self, space: SearchSpace, cfg: ControllerConfig):
        super().__init__()
        self.space, self.cfg = space, cfg
        self.embed = nn.Embedding(space.vocab_size, cfg.token_embedding)
        self.encoder = nn.LSTM(cfg.token_embedding * space.tokens_per_step, cfg.hidden, batch_first=True)
        layers: list[nn.Module] = []
        width = cfg.hidden
        for _ in range(cfg.mlp_layers):
            layers += [nn.Linear(width, cfg.mlp_hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.mlp_hidden
        self.predictor = nn.Sequential(*layers, nn.Linear(width, 1))
        self.decoder = nn.LSTM(cfg.token_embedding, cfg.hidden, batch_first=True)
        self.attention_out = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.to_vocab = nn.Linear(cfg.hidden, space.vocab_size)
        self.register_buffer("legal", space.legal_token_mask(), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.space.n_steps, self.cfg.hidden

    def encode(self, tokens: Tensor) -> Tensor:
        """Token ids [B, L] -> raw per-step encoder outputs [B, T, d] (the search variable)."""
        emb = self.embed(tokens).reshape(tokens.shape[0], self.space.n_steps, -1)
        out, _ = self.encoder(emb)
        return out

    def predict(self, latent: Tensor) -> Tensor:
        """Predicted performance in (0, 1) of latent points [B, T, d] -> [B]."""
        _, embedding = normalise_latent(latent)
        return torch.sigmoid(self.predictor(embedding)).squeeze(-1)

    def _decoder_logits(self, steps: Tensor, state: tuple[Tensor, Tensor], inputs: Tensor,
                        position: int | None = None):
        out, state = self.decoder(self.embed(inputs), state)
        attn = torch.softmax(out @ steps.transpose(1, 2), dim=-1)
        mixed = torch.tanh(self.attention_out(torch.cat([attn @ steps, out], dim=-1)))
        logits = self.to_vocab(mixed)
        legal = self.legal if position is None else self.legal[position:position + 1]
        return logits.masked_fill(~legal, float("-inf")), state

    def reconstruction_logits(self, latent: Tensor, target: Tensor) -> Tensor:
        """Teacher-forced decoder logits [B, L, V] for target tokens [B, L]."""
        steps, embedding = normalise_latent(latent)
        state = (embedding.unsqueeze(0).contiguous(), embedding.unsqueeze(0).contiguous())
        inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
        logits, _ = self._decoder_logits(steps, state, inputs)
        return logits

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Greedy constrained decoding of latent points [B, T, d] -> legal token ids [B, L]."""
        steps, embedding = normalise_latent(latent)
        state = (embedding.unsqueeze(0).contiguous(), embedding.unsqueeze(0).contiguous())
        token = torch.zeros(latent.shape[0], 1, dtype=torch.long, device=latent.device)
        out = []
        for position in range(self.space.seq_len):
            logits, state = self._decoder_logits(steps, state, token, position)
            token = logits.argmax(dim=-1)
            out.append(token)
        return torch.cat(out, dim=1)

    def tokens(self, archs: Sequence[Arch]) -> Tensor:
        device = self.legal.device
        return torch.tensor([self.space.to_tokens(a) for a in archs], dtype=torch.long, device=device)

    def decode_archs(self, latent: Tensor) -> list[Arch]:
        return [self.space.from_tokens(t) for t in self.decode(latent).tolist()]


def build_controller(space: SearchSpace, cfg: ControllerConfig, seed: int) -> Controller:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Controller(space, cfg)


def random_tokens(space: SearchSpace, n: int, generator: torch.Generator) -> Tensor:
    """Token ids [n, L] of ``n`` uniformly random architectures, drawn slot by slot in one call."""
    choices = torch.tensor([slot.n_choices for slot in space.slots])
    offsets = torch.tensor([slot.token_offset for slot in space.slots])
    return (torch.rand(n, space.seq_len, generator=generator) * choices).long() + offsets


def normalise_targets(scores: Sequence[float], method: str = "minmax") -> list[float]:
    """Targets in [0, 1], the best architecture 1 (scores are higher-is-better).

    ``minmax``: min-max over the pool. ``rank``: the fraction of the other architectures each one
    beats (ties count half), so the targets are spread evenly whatever the scores' distribution.
    """
    if method == "rank":
        x = torch.tensor(scores, dtype=torch.float64)
        if len(x) < 2:
            return [0.5] * len(x)
        beaten = (x[:, None] > x[None, :]).sum(dim=1) + 0.5 * ((x[:, None] == x[None, :]).sum(dim=1) - 1)
        return (beaten / (len(x) - 1)).tolist()
    lo, hi = min(scores), max(scores)
    return [(s - lo) / (hi - lo) if hi > lo else 0.5 for s in scores]


def train_controller(controller: Controller, archs: Sequence[Arch], targets: Sequence[float],
                     cfg: ControllerTrainConfig, epochs: int, seed: int,
                     on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Fit predictor + decoder on (archs, targets in [0, 1]); returns the last epoch's losses.

    Deterministic given ``seed``: dropout draws from a torch RNG seeded here, and the caller's
    global RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_controller(controller, archs, targets, cfg, epochs, seed, on_epoch)


def _train_controller(controller: Controller, archs: Sequence[Arch], targets: Sequence[float],
                      cfg: ControllerTrainConfig, epochs: int, seed: int,
                      on_epoch: Callable[[int, dict], None] | None) -> dict:
    space = controller.space
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    device = controller.legal.device
    y = torch.tensor(targets, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(controller.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    controller.train()
    stats: dict = {}
    for epoch in range(epochs):
        variants = [space.symmetric_variant(a, rng) for a in archs] if cfg.symmetry_augment else list(archs)
        tokens = controller.tokens(variants)
        order = torch.randperm(len(archs), generator=gen).to(device)
        totals = torch.zeros(3)
        for start in range(0, len(archs), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            batch = tokens[idx]
            if cfg.unlabelled:  # appended rows are only reconstructed, never scored
                batch = torch.cat([batch, random_tokens(space, cfg.unlabelled, gen).to(device)])
            latent = controller.encode(batch)
            mse = F.mse_loss(controller.predict(latent[:len(idx)]), y[idx])
            logits = controller.reconstruction_logits(latent, batch)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.reshape(-1))
            loss = cfg.mse_weight * mse + (1 - cfg.mse_weight) * nll
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(controller.parameters(), cfg.grad_clip)
            opt.step()
            totals += torch.tensor([loss.item(), mse.item(), nll.item()]) * len(idx)
        stats = dict(zip(("loss", "mse", "nll"), (totals / len(archs)).tolist()))
        if on_epoch is not None:
            on_epoch(epoch, stats)
    controller.eval()
    return stats


@torch.no_grad()
def evaluate_controller(controller: Controller, archs: Sequence[Arch], targets: Sequence[float]) -> dict:
    """Predictor Kendall tau against targets, and decoder reconstruction accuracy."""
    controller.eval()
    latent = controller.encode(controller.tokens(archs))
    predicted = controller.predict(latent).tolist()
    # symmetric variants are equivalent: compare canonical forms, not raw token order
    canonical = controller.space.canonical
    wanted = controller.tokens([canonical(a) for a in archs])
    decoded = controller.tokens([canonical(a) for a in controller.decode_archs(latent)])
    return {
        "kendall_tau": kendall_tau(predicted, targets),
        "reconstruction_token_acc": (decoded == wanted).float().mean().item(),
        "reconstruction_arch_acc": (decoded == wanted).all(dim=1).float().mean().item(),
        "predictions": predicted,
    }
