"""The NAO-WS / DARTS recurrent cell space for language modelling (docs/algorithm.md §7).

A cell has 12 states: s0 mixes the input x_t and the previous hidden state h_{t-1}; node
i = 1..11 reads one earlier state ``pred`` in [0, i) through one activation ``act``. An
architecture is 11 ``(pred, act)`` pairs, node 1 first: 22 integers, written space-separated
(``0 2 1 2 ...``: node 1 reads s0 through sigmoid, node 2 reads node 1 through sigmoid, ...).
This is the order of NAO's PyTorch code (``pred, act = arch[2 * i], arch[2 * i + 1]`` for the
node after ``i`` others) and the only one under which both published cells below are valid.
Tokens: pred p -> p + 1 (1..11), act a -> a + 12 (12..15); vocabulary 16.
"""
from __future__ import annotations

from rnas.spaces.base import Arch, CellGraph, SearchSpace, Slot

#: an activation's index is its value in an architecture (NAO's order)
ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
N_NODES = 11

# Published PTB cells, 11 (pred, act) pairs each.
RNAS_PTB = "0 2 1 2 2 1 3 3 4 1 2 0 3 2 2 1 6 2 7 1 6 0"        # RNAS, 57.5 test perplexity
NAONET_WS_PTB = "0 1 1 1 2 2 1 2 4 1 4 1 4 1 7 1 8 2 1 0 4 1"   # NAONet-WS, 56.6

INPUT_NAMES = ("x_t", "h_{t-1}")
OUTPUT_NAME = "h_t"


class RNNCellSpace(SearchSpace):
    name = "rnn"
    tokens_per_step = 2  # (pred, act) pairs

    def __init__(self, n_nodes: int = N_NODES, activations: tuple[str, ...] = ACTIVATIONS):
        self.n_nodes, self.activations = n_nodes, activations
        act_offset = n_nodes + 1  # pred tokens 1..n_nodes come first
        slots = []
        for node in range(1, n_nodes + 1):
            slots += [Slot(node, 1), Slot(len(activations), act_offset)]
        super().__init__(slots)

    def nodes(self, arch: Arch) -> list[tuple[int, int]]:
        """[(pred, act)] of nodes 1..n_nodes."""
        return [(arch[2 * i], arch[2 * i + 1]) for i in range(self.n_nodes)]

    def canonical(self, arch: Arch) -> Arch:
        # Identity. A node has a single input, so unlike a CNN node's two branches nothing can
        # be swapped inside it, and every string is its own path through the supernet (one
        # weight slice per (node, pred, act)). Numbering the nodes along another topological
        # order does give the same final network up to a permutation of its weights (the
        # output averages all nodes); like NAO we keep such strings apart, because the
        # supernet trains and scores them as different paths.
        return arch

    def cell_graphs(self, arch: Arch) -> list[CellGraph]:
        names = [str(n) for n in range(self.n_nodes + 1)]
        edges = [(source, names[0], "highway") for source in INPUT_NAMES]
        for node, (pred, act) in enumerate(self.nodes(self.validate(arch)), start=1):
            edges.append((names[pred], names[node], self.activations[act]))
        edges += [(name, OUTPUT_NAME, "mean") for name in names[1:]]
        return [CellGraph("recurrent", INPUT_NAMES, tuple(names), tuple(edges), OUTPUT_NAME)]



SPACE = RNNCellSpace
