"""The NAO / ENAS convolutional cell space (docs/algorithm.md §1).

An architecture is a normal cell followed by a reduction cell; each cell has B = 5 nodes
(ids 2..6, after the two cell inputs 0 and 1), each node two branches ``(input, op)``:
40 integers ``x_in x_op y_in y_op`` per node. Tokens: input n -> n + 1, op o -> o + 7.
"""
from __future__ import annotations

import random

from rnas.spaces.base import Arch, CellGraph, SearchSpace, Slot

OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
N_NODES = 5
N_INPUTS = 2
CELL_LEN = 4 * N_NODES

# Published cells (docs/algorithm.md §9): normal then reduction, per node x_in x_op y_in y_op.
NAONET_WS = "0 1 0 4 2 2 1 3 1 0 2 0 2 3 1 3 1 2 0 4 1 1 0 3 2 3 2 3 1 0 0 1 0 4 2 4 2 3 2 3"
NAONET_B_36 = "0 1 0 2 0 1 2 2 1 3 0 2 4 0 1 3 2 1 0 3 1 1 1 0 2 1 2 4 1 0 2 3 3 1 2 2 0 2 0 2"


class NAOCellSpace(SearchSpace):
    name = "nao_cnn"
    tokens_per_step = 2  # (input, op) pairs

    def __init__(self, n_nodes: int = N_NODES, ops: tuple[str, ...] = OPS):
        self.n_nodes, self.ops = n_nodes, ops
        node_offset = 1
        op_offset = N_INPUTS + n_nodes  # inputs 0..n_nodes (node tokens 1..6), then ops (7..)
        cell = []
        for node in range(N_INPUTS, N_INPUTS + n_nodes):
            for _branch in range(2):
                cell += [Slot(node, node_offset), Slot(len(ops), op_offset)]
        super().__init__(cell * 2)

    @property
    def cell_len(self) -> int:
        return 4 * self.n_nodes

    def cells(self, arch: Arch) -> tuple[Arch, Arch]:
        return arch[:self.cell_len], arch[self.cell_len:]

    def nodes(self, cell: Arch) -> list[tuple[int, int, int, int]]:
        """[(x_in, x_op, y_in, y_op)] for each node of one cell."""
        return [tuple(cell[4 * i:4 * i + 4]) for i in range(self.n_nodes)]

    def loose_ends(self, cell: Arch) -> list[int]:
        """Nodes (inputs included) that no node reads: concatenated as the cell's output."""
        used = {x for x_in, _, y_in, _ in self.nodes(cell) for x in (x_in, y_in)}
        return [n for n in range(N_INPUTS + self.n_nodes) if n not in used]

    def canonical(self, arch: Arch) -> Arch:
        out: list[int] = []
        for node in self.nodes(arch[:self.cell_len]) + self.nodes(arch[self.cell_len:]):
            first, second = sorted([node[:2], node[2:]])
            out += first + second
        return tuple(out)

    def symmetric_variant(self, arch: Arch, rng: random.Random) -> Arch:
        out: list[int] = []
        for node in self.nodes(arch[:self.cell_len]) + self.nodes(arch[self.cell_len:]):
            out += (node[2:] + node[:2]) if rng.random() < 0.5 else node
        return tuple(out)

    def cell_graphs(self, arch: Arch) -> list[CellGraph]:
        graphs = []
        for title, cell in zip(("normal", "reduction"), self.cells(arch)):
            names = ["c_{k-2}", "c_{k-1}"] + [str(n) for n in range(N_INPUTS, N_INPUTS + self.n_nodes)]
            edges = []
            for node, (x_in, x_op, y_in, y_op) in enumerate(self.nodes(cell), start=N_INPUTS):
                edges += [(names[x_in], names[node], self.ops[x_op]), (names[y_in], names[node], self.ops[y_op])]
            edges += [(names[n], "c_{k}", "concat") for n in self.loose_ends(cell)]
            graphs.append(CellGraph(title, tuple(names[:N_INPUTS]), tuple(names[N_INPUTS:]),
                                    tuple(edges), "c_{k}"))
        return graphs


SPACE = NAOCellSpace
