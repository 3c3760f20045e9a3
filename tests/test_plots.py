"""Plots: every function writes a valid PNG; cell layouts are sane for CNN and RNN-like cells."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rnas.plots import _CellLayout, draw_architecture, plot_band, plot_curves, plot_scatter
from rnas.spaces.base import Arch, CellGraph, SearchSpace, Slot
from rnas.spaces.nao_cnn import NAONET_B_36, NAONET_WS, NAOCellSpace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
RNAS_PTB_CELL = "0 2 1 2 2 1 3 3 4 1 2 0 3 2 2 1 6 2 7 1 6 0"


class RecurrentLikeSpace(SearchSpace):
    """docs/algorithm.md §7's cell, built by hand: s_0 from the inputs, s_1..s_11 each pick a
    predecessor and an activation, the output is the mean of s_1..s_11 (12 nodes in all)."""
    name = "recurrent_like"

    def __init__(self):
        super().__init__([slot for node in range(1, 12) for slot in (Slot(node, 1), Slot(4, 12))])

    def canonical(self, arch: Arch) -> Arch:
        return arch

    def to_str(self, arch: Arch) -> str:
        return " ".join(map(str, arch))

    def from_str(self, text: str) -> Arch:
        return self.validate(text.split())

    def cell_graphs(self, arch: Arch) -> list[CellGraph]:
        states = [f"s_{i}" for i in range(12)]
        edges = [("x_t", "s_0", "highway"), ("h_{t-1}", "s_0", "highway")]
        edges += [(states[arch[2 * i]], states[i + 1], ACTIVATIONS[arch[2 * i + 1]]) for i in range(11)]
        edges += [(state, "h_t", "mean") for state in states[1:]]
        return [CellGraph("recurrent", ("x_t", "h_{t-1}"), tuple(states), tuple(edges), "h_t")]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path
    with Image.open(path) as image:
        image.verify()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [], "temporary file left"


@pytest.mark.parametrize("space_class, archs", [
    (NAOCellSpace, [NAONET_WS, NAONET_B_36]),
    (RecurrentLikeSpace, [RNAS_PTB_CELL]),
])
def test_draw_architecture_writes_png_for_published_and_random_cells(tmp_path, space_class, archs):
    space = space_class()
    rng = random.Random(0)
    for i, arch in enumerate([space.from_str(a) for a in archs] + [space.random(rng) for _ in range(2)]):
        path = tmp_path / f"cell_{i}.png"
        draw_architecture(space, arch, path, title=space.to_str(arch))
        assert_png(path)


@pytest.mark.parametrize("space_class", [NAOCellSpace, RecurrentLikeSpace])
def test_cell_layout_puts_inputs_first_output_last_and_no_two_nodes_together(space_class):
    space = space_class()
    rng = random.Random(1)
    for arch in [space.random(rng) for _ in range(20)]:
        for graph in space.cell_graphs(arch):
            positions = _CellLayout.of(graph).positions
            assert set(positions) == {*graph.inputs, *graph.nodes, graph.output}
            xs = {name: x for name, (x, _) in positions.items()}
            assert all(xs[name] == 0 for name in graph.inputs)
            assert all(xs[graph.output] > x for name, x in xs.items() if name != graph.output)
            assert all(xs[source] < xs[target] for source, target, _ in graph.edges), "an edge points left"
            points = np.array(list(positions.values()))
            gaps = np.hypot(*(points[:, None] - points[None]).transpose(2, 0, 1)) + np.eye(len(points)) * 99
            assert gaps.min() >= 1.4, "two nodes overlap"


def test_draw_architecture_when_the_output_is_one_of_the_nodes(tmp_path):
    graph = CellGraph("cell", ("0",), ("1", "2", "3"),
                      (("0", "1", "conv_3x3"), ("0", "3", "skip"), ("1", "2", "conv_1x1"), ("2", "3", "skip")), "3")

    class OneCell(RecurrentLikeSpace):
        def cell_graphs(self, arch: Arch) -> list[CellGraph]:
            return [graph]

    assert _CellLayout.of(graph).positions["3"][0] > _CellLayout.of(graph).positions["2"][0]
    draw_architecture(OneCell(), OneCell().random(random.Random(0)), tmp_path / "cell.png")
    assert_png(tmp_path / "cell.png")


def test_curves_scatter_and_band_write_png(tmp_path):
    rng = np.random.default_rng(0)
    history = pd.DataFrame({"epoch": range(1, 41), "train_accuracy": np.linspace(0.3, 0.9, 40),
                            "valid_accuracy": [v if i % 5 == 0 else np.nan  # logged every 5th epoch
                                               for i, v in enumerate(np.linspace(0.3, 0.8, 40))]})
    plot_curves(history, "epoch", ["train_accuracy", "valid_accuracy"], tmp_path / "curves.png",
                "Retraining", "accuracy")
    measured = rng.random(60)
    predicted = measured + 0.2 * rng.standard_normal(60)
    predicted[3] = np.nan
    plot_scatter(measured, predicted, tmp_path / "scatter.png", "measured", "predicted", "Predictor",
                 identity_line=True)
    plot_scatter([0.5], [0.5], tmp_path / "scatter_one.png", "measured", "predicted", "One point")
    bands = pd.DataFrame([{"strategy": s, "query": q, "mean": q / (10 + k), "std": 0.05}
                          for k, s in enumerate(("random", "rnas")) for q in range(0, 100, 10)])
    plot_band(bands, "query", "strategy", "mean", "std", tmp_path / "band.png", "Search", "queries", "best")
    trace = pd.DataFrame({"step": range(1, 11), "gamma": np.linspace(0, 1, 10), "max_sigma": np.linspace(1, 0.1, 10)})
    plot_curves(trace, "step", ["gamma"], tmp_path / "twin.png", "MRAS", "target", secondary=["max_sigma"],
                secondary_label="sigma", integer_x=True)
    plot_curves(trace.iloc[:0], "step", ["gamma"], tmp_path / "empty.png", "MRAS", "target",
                empty_note="no MRAS trace")
    for name in ("curves", "scatter", "scatter_one", "band", "twin", "empty"):
        assert_png(tmp_path / f"{name}.png")
