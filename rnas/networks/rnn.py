"""Recurrent language models of the RNN cell space (docs/algorithm.md §7): the weight-sharing
supernet and the final model of one cell, NAO-WS / DARTS style.

Both read word ids ``[T, B]``, embed them (tied with the decoder, so the embedding size is the
hidden size), run one recurrent cell over the T steps and return next-word logits ``[T, B, V]``
and the last hidden state ``[B, H]``. One step of the cell:

    c0, h0 = split(W_x x_t + W_h h_{t-1});  s0 = h_{t-1} + sigmoid(c0) * (tanh(h0) - h_{t-1})
    node i:  c, h = split(W_i s_pred);      s_i = s_pred + sigmoid(c) * (f_i(h) - s_pred)
    h_t = mean(s_1 .. s_11)

The output averages nodes 1..11 only, in the supernet too: NAO's final model did so, its search
code averaged s0 as well; one definition in both places keeps the supernet's scores about the
network that is retrained.

Dropout follows DARTS and AWD-LSTM, every mask drawn once per call (per BPTT window) and shared
by all its time steps: ``dropoute`` drops whole words of the embedding, ``dropouti`` the
embedded input, ``dropoutx`` the cell input x_t, ``dropouth`` the state each matmul reads
(h_{t-1} and every s_pred, one mask), ``dropout`` the cell output before the decoder.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnas.config import require
from rnas.spaces.base import Arch
from rnas.spaces.rnn import RNNCellSpace

#: uniform initialisation range of every weight (DARTS, NAO)
INIT_RANGE = 0.04

ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


@dataclass
class _RecurrentLMConfig:
    hidden_size: int
    dropout: float     # cell output, before the decoder
    dropouth: float    # recurrent state read by every matmul of the cell
    dropoutx: float    # cell input x_t
    dropouti: float    # embedded words
    dropoute: float    # whole words of the embedding matrix

    def check(self) -> None:
        require(self.hidden_size >= 1, "hidden_size", "must be a positive integer")
        for key in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
            require(0.0 <= getattr(self, key) < 1.0, key, "must be in [0, 1)")


@dataclass
class RNNSupernetConfig(_RecurrentLMConfig):
    """NAO-WS / DARTS search settings. ``hidden_size`` is the embedding size too (tied decoder)."""
    hidden_size: int = 300
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0


@dataclass
class RNNModelConfig(_RecurrentLMConfig):
    """NAO / DARTS final-training settings. ``hidden_size`` is the embedding size too."""
    hidden_size: int = 850
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1


@dataclass(frozen=True)
class CellPlan:
    """The order one step computes a cell in: for each state that some node reads (in
    increasing order, so it exists by then), the nodes reading it. Nodes that share a
    predecessor share one matmul against their weights concatenated."""
    activations: tuple[Callable[[Tensor], Tensor], ...]   # of nodes 1..n
    groups: tuple[tuple[int, tuple[int, ...]], ...]       # (pred, nodes reading it)

    @classmethod
    def of(cls, space: RNNCellSpace, arch: Arch) -> "CellPlan":
        nodes = space.nodes(space.validate(arch))
        readers: dict[int, list[int]] = {}
        for node, (pred, _) in enumerate(nodes, start=1):
            readers.setdefault(pred, []).append(node)
        return cls(tuple(ACTIVATION_FUNCTIONS[space.activations[act]] for _, act in nodes),
                   tuple((pred, tuple(readers[pred])) for pred in sorted(readers)))


def uniform_parameter(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-INIT_RANGE, INIT_RANGE))


def variational_mask(like: Tensor, shape: Sequence[int], p: float) -> Tensor | None:
    """A dropout mask of ``shape`` (scaled to keep the mean), or None when there is nothing to drop."""
    if p == 0.0:
        return None
    return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)


def masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


class _RecurrentLanguageModel(nn.Module):
    """Embedding, the s0 highway, the tied decoder and the time loop; subclasses supply the
    node weights of each call."""

    def __init__(self, space: RNNCellSpace, cfg: _RecurrentLMConfig, vocab_size: int):
        super().__init__()
        cfg.check()
        self.space, self.cfg = space, cfg
        size = cfg.hidden_size
        self.embedding = nn.Embedding(vocab_size, size)
        nn.init.uniform_(self.embedding.weight, -INIT_RANGE, INIT_RANGE)
        self.input_weight = uniform_parameter(size, 2 * size)    # W_x of s0
        self.hidden_weight = uniform_parameter(size, 2 * size)   # W_h of s0
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))

    def init_hidden(self, batch_size: int) -> Tensor:
        return self.decoder_bias.new_zeros(batch_size, self.cfg.hidden_size)

    def _run(self, tokens: Tensor, hidden: Tensor, plan: CellPlan, node_weights: Sequence[Tensor],
             return_states: bool) -> tuple[Tensor, ...]:
        """``node_weights``: one ``[H, 2H * len(nodes)]`` matrix per group of ``plan``."""
        cfg, drop = self.cfg, self.training
        steps, batch = tokens.shape
        x = self._embed(tokens)
        x_mask = variational_mask(x, (batch, cfg.hidden_size), cfg.dropoutx) if drop else None
        h_mask = variational_mask(x, (batch, cfg.hidden_size), cfg.dropouth) if drop else None
        # the input's share of s0 for all time steps in one matmul
        input_part = masked(x, x_mask) @ self.input_weight
        outputs = []
        for t in range(steps):
            hidden = self._cell_step(input_part[t], hidden, plan, node_weights, h_mask)
            outputs.append(hidden)
        states = torch.stack(outputs)
        output_mask = variational_mask(states, (1, batch, cfg.hidden_size), cfg.dropout) if drop else None
        logits = F.linear(masked(states, output_mask), self.embedding.weight, self.decoder_bias)
        return (logits, hidden, states) if return_states else (logits, hidden)

    def _embed(self, tokens: Tensor) -> Tensor:
        cfg, weight = self.cfg, self.embedding.weight
        x = F.embedding(tokens, weight)
        if self.training:
            # dropoute: a word dropped from the vocabulary is dropped at all its occurrences
            word_mask = variational_mask(weight, (weight.shape[0], 1), cfg.dropoute)
            if word_mask is not None:
                x = x * word_mask[tokens]
            x = masked(x, variational_mask(x, (1, tokens.shape[1], cfg.hidden_size), cfg.dropouti))
        return x

    def _cell_step(self, input_part: Tensor, h_prev: Tensor, plan: CellPlan, node_weights: Sequence[Tensor],
                   h_mask: Tensor | None) -> Tensor:
        size = self.cfg.hidden_size
        gate, candidate = (input_part + masked(h_prev, h_mask) @ self.hidden_weight).split(size, dim=-1)
        states: list[Tensor | None] = [h_prev + torch.sigmoid(gate) * (torch.tanh(candidate) - h_prev)]
        states += [None] * len(plan.activations)
        total = None
        for (pred, nodes), weight in zip(plan.groups, node_weights):
            s_pred = states[pred]
            both = (masked(s_pred, h_mask) @ weight).view(-1, len(nodes), 2, size)
            gates = torch.sigmoid(both[:, :, 0])
            for j, node in enumerate(nodes):
                state = s_pred + gates[:, j] * (plan.activations[node - 1](both[:, j, 1]) - s_pred)
                states[node] = state
                total = state if total is None else total + state
        return total / len(plan.activations)


class RNNSupernet(_RecurrentLanguageModel):
    """The weight-sharing supernet: node i keeps one ``[H, 2H]`` weight per (predecessor,
    activation), as NAO-WS does (its ``_Ws[i]`` is sliced by ``(pred * 4 + act) * H``), so an
    architecture reads exactly one slice per node. Slices are separate parameters: the ones off
    a step's path get no gradient (``None``), hence no update and no weight decay."""

    def __init__(self, space: RNNCellSpace, cfg: RNNSupernetConfig, vocab_size: int):
        super().__init__(space, cfg, vocab_size)
        size, n_acts = cfg.hidden_size, len(space.activations)
        self.node_weights = nn.ModuleList(
            nn.ParameterList(uniform_parameter(size, 2 * size) for _ in range(node * n_acts))
            for node in range(1, space.n_nodes + 1))

    def slice_of(self, node: int, pred: int, act: int) -> nn.Parameter:
        """The weight node ``node`` (1-based) uses when it reads state ``pred`` through ``act``."""
        return self.node_weights[node - 1][pred * len(self.space.activations) + act]

    def forward(self, tokens: Tensor, hidden: Tensor, arch: Arch,
                return_states: bool = False) -> tuple[Tensor, ...]:
        """``(logits [T, B, V], last hidden [B, H])`` of ``arch``, and with ``return_states`` the
        cell outputs ``[T, B, H]`` before output dropout."""
        plan = CellPlan.of(self.space, arch)
        nodes = self.space.nodes(arch)
        weights = [_concat([self.slice_of(node, *nodes[node - 1]) for node in readers])
                   for _, readers in plan.groups]
        return self._run(tokens, hidden, plan, weights, return_states)


class RNNModel(_RecurrentLanguageModel):
    """The final language model of one cell: one ``[H, 2H]`` weight per node."""

    def __init__(self, space: RNNCellSpace, arch: Arch, cfg: RNNModelConfig, vocab_size: int):
        super().__init__(space, cfg, vocab_size)
        self.arch = space.validate(arch)
        self.plan = CellPlan.of(space, self.arch)
        self.node_weights = nn.ParameterList(uniform_parameter(cfg.hidden_size, 2 * cfg.hidden_size)
                                             for _ in range(space.n_nodes))

    def forward(self, tokens: Tensor, hidden: Tensor, return_states: bool = False) -> tuple[Tensor, ...]:
        """As ``RNNSupernet.forward``, for this model's cell."""
        weights = [_concat([self.node_weights[node - 1] for node in readers])
                   for _, readers in self.plan.groups]
        return self._run(tokens, hidden, self.plan, weights, return_states)


def _concat(weights: list[Tensor]) -> Tensor:
    return weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)

