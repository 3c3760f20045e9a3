"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG on 4 nodes: node 0 is the cell input, node 3 its output, and every pair
``j < i`` is joined by one edge carrying one of 5 ops. An architecture is the 6 edge ops in the
official order (edges into node 1, then node 2, then node 3, each by source node):

    position  0     1     2     3     4     5
    edge      0->1  0->2  1->2  0->3  1->3  2->3

Tokens: op o -> o + 1 (token 0 is SOS/EOS), vocabulary 6, one token per encoder step.
"""
from __future__ import annotations

from rnas.spaces.base import Arch, CellGraph, SearchSpace, Slot

#: official op order; an op's index is its value in an architecture
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
N_NODES = 4
#: (source, target) of each edge, in architecture order
EDGES = tuple((source, target) for target in range(1, N_NODES) for source in range(target))

# Published cells, in the official string format (NB201 CIFAR-10 test accuracy after 200 epochs).
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"  # 93.97
BEST_CIFAR10_CELL = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                     "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")  # 94.37


class NB201Space(SearchSpace):
    name = "nb201"

    def __init__(self):
        super().__init__([Slot(len(OPS), 1) for _ in EDGES])

    def canonical(self, arch: Arch) -> Arch:
        # Identity on purpose: many cells compute the same function (e.g. any cell whose
        # paths to node 3 all pass through ``none``), yet the benchmark trained each of the
        # 15,625 strings separately and reports different numbers for them. Merging
        # isomorphic cells would make some table rows unreachable and change the protocol.
        return arch

    def to_str(self, arch: Arch) -> str:
        arch = self.validate(arch)
        nodes = []
        for target in range(1, N_NODES):
            ops = [f"{OPS[arch[pos]]}~{source}" for pos, (source, t) in enumerate(EDGES) if t == target]
            nodes.append("|" + "|".join(ops) + "|")
        return "+".join(nodes)

    def from_str(self, text: str) -> Arch:
        nodes = text.strip().split("+")
        if len(nodes) != N_NODES - 1:
            raise ValueError(f"{self.name}: expected {N_NODES - 1} nodes separated by '+', "
                             f"got {len(nodes)} in {text!r}")
        arch: list[int] = []
        for target, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"{self.name}: node {target} must look like '|op~0|...|', got {node!r}")
            edges = node[1:-1].split("|")
            if len(edges) != target:
                raise ValueError(f"{self.name}: node {target} needs {target} edges, got {len(edges)} in {node!r}")
            for source, edge in enumerate(edges):
                arch.append(self._parse_edge(edge, source, target))
        return tuple(arch)

    def _parse_edge(self, edge: str, source: int, target: int) -> int:
        op, sep, written_source = edge.partition("~")
        if not sep or written_source != str(source):
            raise ValueError(f"{self.name}: edge {source}->{target} must be written 'op~{source}', got {edge!r}")
        if op not in OPS:
            raise ValueError(f"{self.name}: unknown op {op!r} on edge {source}->{target}; known: {', '.join(OPS)}")
        return OPS.index(op)

    def cell_graphs(self, arch: Arch) -> list[CellGraph]:
        # ``none`` outputs zeros, i.e. no edge: it is left out of the picture.
        edges = tuple((str(source), str(target), OPS[op])
                      for (source, target), op in zip(EDGES, self.validate(arch)) if OPS[op] != "none")
        return [CellGraph("cell", ("0",), tuple(str(n) for n in range(1, N_NODES)), edges, str(N_NODES - 1))]


SPACE = NB201Space
