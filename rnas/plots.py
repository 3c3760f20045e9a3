"""Pictures: cell diagrams and search curves, as PNG files.

Figures are plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot), so
drawing touches no global state and needs neither a display nor graphviz.

A cell is drawn as a layered DAG: inputs in the first column, each node one column right of
its deepest predecessor, the output last. Within a column nodes are ordered by the mean height
of their predecessors (fewer crossings). Each edge is an arc whose bend is searched so that it
passes through no other node and does not run along another edge (parallel edges fan out);
each op label slides along its edge to a spot that overlaps no node or label and hides as
little of other edges as possible. Edges into the output that all share one label (``concat``,
``mean``) are drawn grey and dashed, with that label once beside the output.

One module, over 350 lines, because it is one job read top to bottom: the figures share the canvas
helpers, and the cell layout is a single algorithm.
"""
from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from rnas.artifacts import atomic_path
from rnas.judging.rank_stats import kendall_tau
from rnas.spaces.base import Arch, CellGraph, SearchSpace

DPI = 150
LAYER_GAP = 2.0        # data units between columns, plus room for the longest op label:
LABEL_UNITS_PER_CHAR = 0.12
ROW_GAP = 1.5          # data units between nodes of one column
PANEL_MARGIN = 1.5     # data units from the outer node rows to the panel edge: room for bent edges
SIDE_MARGIN = 0.3      # data units left of the input boxes
CAPTION_ROOM = 1.4     # data units right of the output node, for the caption of its edges
NODE_RADIUS = 0.36
BOX_WIDTH, BOX_HEIGHT = 1.3, 0.72  # input and output nodes
INCH_PER_UNIT = 0.55
TITLE_INCHES, PANEL_TITLE_INCHES = 0.45, 0.3
BEND_STEP = 0.35       # data units: how far an edge's midpoint may move sideways, per step
NODE_CLEARANCE = 0.2   # an edge passing closer to a node's outline touches it
EDGE_CLEARANCE = 0.15  # an edge this close to another runs along it
# Positions along an edge tried for its label, starting mid-way and moving toward the end with
# fewer edges (where this edge has separated from its neighbours).
LABEL_SPOTS = (0.5, 0.6, 0.4, 0.7, 0.3, 0.78, 0.22)
OUTPUT_EDGE_COLOUR = "0.55"
NODE_COLOURS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}


# --- cells --------------------------------------------------------------------------------

def draw_architecture(space: SearchSpace, arch: Arch, path: Path, title: str | None = None) -> None:
    """One panel per cell of ``arch`` (``space.cell_graphs``), stacked vertically."""
    graphs = space.cell_graphs(arch)
    layouts = [_CellLayout.of(graph) for graph in graphs]
    width = max(layout.width for layout in layouts)
    fig_width = width * INCH_PER_UNIT
    # long titles (an architecture string) wrap: ~0.65 em per character of bold 12 pt text
    title_lines = textwrap.wrap(title, width=int(fig_width * 72 / (0.65 * 12))) if title else []
    title_height = TITLE_INCHES + 0.22 * (len(title_lines) - 1) if title_lines else 0.0
    heights = [layout.height * INCH_PER_UNIT for layout in layouts]
    # Axes placed by hand, each exactly as wide as its data: the pixel geometry that labels are
    # measured with while drawing is the geometry that gets saved (no layout engine moves them).
    fig_height = title_height + sum(heights) + PANEL_TITLE_INCHES * len(graphs)
    fig = Figure(figsize=(fig_width, fig_height), dpi=DPI)
    FigureCanvasAgg(fig)
    colours = _op_colours(graphs)
    top = fig_height - title_height
    for graph, layout, height in zip(graphs, layouts, heights):
        top -= PANEL_TITLE_INCHES + height
        ax = fig.add_axes((0.0, top / fig_height, 1.0, height / fig_height))
        _draw_cell(ax, graph, layout, colours, width)
    if title_lines:
        fig.suptitle("\n".join(title_lines), y=1 - 0.12 / fig_height, va="top", fontsize=12, fontweight="bold")
    _save(fig, path)


@dataclass(frozen=True)
class _CellLayout:
    positions: dict[str, tuple[float, float]]
    width: float
    height: float  # the drawing spans y in [-height / 2, height / 2]

    @classmethod
    def of(cls, graph: CellGraph) -> "_CellLayout":
        sources: dict[str, list[str]] = {}
        for source, target, _ in graph.edges:
            sources.setdefault(target, []).append(source)
        depth = {name: 0 for name in graph.inputs}
        for node in graph.nodes:
            depth[node] = 1 + max((depth[s] for s in sources.get(node, ())), default=0)
        # the output gets the last column to itself, also when it is one of the nodes
        depth[graph.output] = 1 + max(d for name, d in depth.items() if name != graph.output)
        columns: list[list[str]] = [[] for _ in range(depth[graph.output] + 1)]
        for name in depth:
            columns[depth[name]].append(name)
        longest_label = max((len(edge[2]) for edge in graph.edges if not _aggregates(graph, edge)), default=0)
        layer_gap = LAYER_GAP + LABEL_UNITS_PER_CHAR * longest_label
        positions: dict[str, tuple[float, float]] = {}
        for layer, column in enumerate(columns):
            if layer:  # barycentre ordering; the sort is stable, so ties keep topological order
                column.sort(key=lambda n: -np.mean([positions[s][1] for s in sources.get(n, ())] or [0.0]))
            for row, name in enumerate(column):
                positions[name] = (layer * layer_gap, ((len(column) - 1) / 2 - row) * ROW_GAP)
        rows = max(len(column) for column in columns)
        return cls(positions, (len(columns) - 1) * layer_gap + BOX_WIDTH + CAPTION_ROOM,
                   (rows - 1) * ROW_GAP + 2 * PANEL_MARGIN)


def _aggregates(graph: CellGraph, edge: tuple[str, str, str]) -> bool:
    """Whether ``edge`` only feeds a node into the output's concat / mean (not an op of its own)."""
    return edge[1] == graph.output and graph.output not in graph.nodes


def _op_colours(graphs: list[CellGraph]) -> dict[str, str]:
    """A colour per op, shared by all panels; aggregation edges are grey."""
    ops = sorted({edge[2] for graph in graphs for edge in graph.edges if not _aggregates(graph, edge)})
    palette = [f"C{i}" for i in range(10)] + ["#8c564b", "#393b79", "#637939", "#843c39", "#7b4173"]
    return {op: palette[i % len(palette)] for i, op in enumerate(ops)}


def _draw_cell(ax: Axes, graph: CellGraph, layout: _CellLayout, colours: dict[str, str], width: float) -> None:
    ax.set_title(graph.name, fontsize=11, fontweight="bold", loc="left", x=0.01)
    ax.set_xlim(-BOX_WIDTH / 2 - SIDE_MARGIN, width - BOX_WIDTH / 2 - SIDE_MARGIN)
    ax.set_ylim(-layout.height / 2, layout.height / 2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.apply_aspect()  # fix the data->pixel transform now: labels are measured in pixels below
    patches = {name: _draw_node(ax, graph, name, xy) for name, xy in layout.positions.items()}
    renderer = ax.figure.canvas.get_renderer()
    occupied = [patch.get_window_extent(renderer) for patch in patches.values()]

    out_degree = Counter(source for source, _, _ in graph.edges)
    in_degree = Counter(target for _, target, _ in graph.edges)
    output_ops = {edge[2] for edge in graph.edges if _aggregates(graph, edge)}
    label_output_edges = len(output_ops) > 1
    bends = _edge_bends(graph, layout)
    ends = [(layout.positions[source], layout.positions[target]) for source, target, _ in graph.edges]
    pixel_curves = [ax.transData.transform(_arc_points(a, b, bend, np.linspace(0, 1, 80)))
                    for (a, b), bend in zip(ends, bends)]
    for i, ((source, target, op), (a, b), bend) in enumerate(zip(graph.edges, ends, bends)):
        to_output = _aggregates(graph, (source, target, op))
        colour = OUTPUT_EDGE_COLOUR if to_output else colours[op]
        ax.add_patch(FancyArrowPatch(
            a, b, connectionstyle=f"arc3,rad={bend}", patchA=patches[source], patchB=patches[target],
            arrowstyle="-|>", mutation_scale=11, color=colour, lw=1.0 if to_output else 1.6,
            linestyle="--" if to_output else "-", zorder=1))
        if not to_output or label_output_edges:
            towards_target = out_degree[source] > in_degree[target]
            spots = LABEL_SPOTS if towards_target else tuple(1 - t for t in LABEL_SPOTS)
            other_edges = np.concatenate([np.empty((0, 2))] + pixel_curves[:i] + pixel_curves[i + 1:])
            _place_label(ax, renderer, op, colour, _arc_points(a, b, bend, spots), occupied, other_edges)
    if output_ops and not label_output_edges:  # one caption instead of the same label on every edge
        x, y = layout.positions[graph.output]
        ax.text(x + BOX_WIDTH / 2 + 0.12, y, output_ops.pop(), ha="left", va="center", fontsize=8,
                style="italic", color=OUTPUT_EDGE_COLOUR)


def _draw_node(ax: Axes, graph: CellGraph, name: str, xy: tuple[float, float]) -> Patch:
    kind = "input" if name in graph.inputs else "output" if name == graph.output else "node"
    if kind == "node":  # sizes match _half_size
        patch = Circle(xy, NODE_RADIUS, fc=NODE_COLOURS[kind], ec="0.2", lw=1.2, zorder=3)
    else:
        patch = FancyBboxPatch((xy[0] - BOX_WIDTH / 2, xy[1] - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                               boxstyle="round,pad=0,rounding_size=0.18", fc=NODE_COLOURS[kind], ec="0.2",
                               lw=1.2, zorder=3)
    ax.add_patch(patch)
    ax.text(*xy, _math(name), ha="center", va="center", fontsize=10, zorder=4)
    return patch


def _math(name: str) -> str:
    """``c_{k-1}``, ``s_10`` -> mathtext with the subscript in braces; plain names stay plain."""
    if "_" not in name or " " in name:
        return name
    base, subscript = name.split("_", 1)
    return f"${base}_{{{subscript.strip('{}')}}}$"


def _edge_bends(graph: CellGraph, layout: _CellLayout) -> list[float]:
    """An arc3 ``rad`` per edge, chosen edge by edge (short ones first, aggregation edges
    last) to avoid, in order of importance: passing through a foreign node, running along an
    edge already routed, crossing one, and bending more than needed. Leaving the panel is not
    allowed."""
    bends = [0.0] * len(graph.edges)
    routed: list[np.ndarray] = []
    y_limit = layout.height / 2 - 0.1

    def routing_order(i: int) -> tuple[bool, float]:
        source, target, _ = graph.edges[i]
        return _aggregates(graph, graph.edges[i]), layout.positions[target][0] - layout.positions[source][0]

    for i in sorted(range(len(graph.edges)), key=routing_order):
        source, target, _ = graph.edges[i]
        a, b = np.asarray(layout.positions[source]), np.asarray(layout.positions[target])
        length = float(np.hypot(*(b - a)))
        others = [name for name in layout.positions if name not in (source, target)]
        centres = np.array([layout.positions[name] for name in others]).reshape(-1, 2)
        half_sizes = np.array([_half_size(graph, name) for name in others]).reshape(-1, 2) + NODE_CLEARANCE
        candidates = []
        for step in range(int(y_limit * 2 / BEND_STEP) + 1):
            for deviation in (step * BEND_STEP, -step * BEND_STEP) if step else (0.0,):
                rad = 2 * deviation / length  # arc3's midpoint moves rad * length / 2 sideways
                curve = _arc_points(a, b, rad, np.linspace(0.12, 0.88, 30))
                if np.abs(curve[:, 1]).max() <= y_limit:
                    cost = (10 * _nodes_crossed(curve, centres, half_sizes) + _overlaps(curve, routed)
                            + 0.3 * step)
                    candidates.append((cost, step, deviation < 0, rad, curve))
        _, _, _, bends[i], curve = min(candidates, key=lambda c: c[:3])
        routed.append(curve)
    return bends


def _half_size(graph: CellGraph, name: str) -> tuple[float, float]:
    if name in graph.inputs or name == graph.output:
        return BOX_WIDTH / 2, BOX_HEIGHT / 2
    return NODE_RADIUS, NODE_RADIUS


def _nodes_crossed(curve: np.ndarray, centres: np.ndarray, half_sizes: np.ndarray) -> int:
    """How many nodes (as padded rectangles: [n, 2] centres and half sizes) the curve enters."""
    inside = np.all(np.abs(curve[None, :, :] - centres[:, None, :]) < half_sizes[:, None, :], axis=2)
    return int(inside.any(axis=1).sum())


def _overlaps(curve: np.ndarray, routed: list[np.ndarray]) -> int:
    """1 per edge already routed that ``curve`` crosses; per point, for one it runs along."""
    total = 0
    for other in routed:
        distances = np.hypot(*(curve[:, None, :] - other[None, :, :]).transpose(2, 0, 1))
        close = int((distances.min(axis=1) < EDGE_CLEARANCE).sum())
        total += close if close > 3 else min(close, 1)
    return total


def _arc_points(a, b, rad: float, t: np.ndarray) -> np.ndarray:
    """Points ``t`` ([n] -> [n, 2]) of matplotlib's arc3 curve: a quadratic Bezier (equal aspect)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    dx, dy = b - a
    control = (a + b) / 2 + rad * np.array([dy, -dx])
    t = np.asarray(t, float)[:, None]
    return (1 - t) ** 2 * a + 2 * t * (1 - t) * control + t ** 2 * b


def _place_label(ax: Axes, renderer, text: str, colour: str, spots: np.ndarray, occupied: list[Bbox],
                 other_edges: np.ndarray) -> None:
    """Put the label at the candidate spot ([n, 2], data) overlapping no node or label, and as few
    points of other edges (pixels) as possible; earlier spots win ties."""
    label = ax.text(0, 0, text, ha="center", va="center", fontsize=7.5, color=colour, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=colour, lw=0.6, alpha=0.95))
    candidates = []
    for order, spot in enumerate(spots):
        label.set_position(spot)
        extent = label.get_window_extent(renderer).expanded(1.15, 1.3)
        overlap = sum(_overlap_area(extent, other) for other in occupied)
        hidden = ((other_edges >= (extent.x0, extent.y0)) & (other_edges <= (extent.x1, extent.y1))).all(axis=1)
        edges_hidden = int(hidden.sum())
        candidates.append(((overlap > 0, edges_hidden, overlap, order), spot, extent))
    _, spot, extent = min(candidates, key=lambda c: c[0])
    label.set_position(spot)
    occupied.append(extent)


def _overlap_area(first: Bbox, second: Bbox) -> float:
    width = min(first.x1, second.x1) - max(first.x0, second.x0)
    height = min(first.y1, second.y1) - max(first.y0, second.y0)
    return max(width, 0.0) * max(height, 0.0)


# --- curves -----------------------------------------------------------------------------------

def plot_curves(frame: pd.DataFrame, x: str, ys: list[str], path: Path, title: str, ylabel: str,
                xlabel: str | None = None, secondary: Sequence[str] = (), secondary_label: str = "",
                integer_x: bool = False, empty_note: str = "no data") -> None:
    """One line per column in ``ys`` against ``x``; rows missing a value are skipped per line.

    ``secondary`` columns go on a right-hand axis of their own scale (``secondary_label``);
    ``integer_x`` ticks only whole numbers (rounds, iterations). A frame with no rows is drawn as
    empty axes carrying ``empty_note``, so the picture always exists and says why it is blank.
    """
    fig, ax = _figure()
    axes = [(ax, y) for y in ys]
    if secondary:
        right = ax.twinx()
        right.set_ylabel(secondary_label)
        axes += [(right, y) for y in secondary]
    lines = []
    for i, (target, y) in enumerate(axes):
        points = frame[[x, y]].dropna().sort_values(x)
        lines += target.plot(points[x], points[y], label=y, color=f"C{i}",
                             marker="o" if len(points) <= 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel or x, ylabel=ylabel)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if frame.empty:
        ax.text(0.5, 0.5, empty_note, transform=ax.transAxes, ha="center", va="center", color="0.4")
    elif len(axes) > 1:
        ax.legend(lines, [line.get_label() for line in lines])
    _save(fig, path)


def plot_scatter(x: Sequence[float], y: Sequence[float], path: Path, xlabel: str, ylabel: str, title: str,
                 annotate_tau: bool = True, identity_line: bool = False) -> None:
    """Scatter of paired values; the title gives Kendall's tau over the finite pairs.
    ``identity_line``: draw y = x (for a prediction against what it predicts, in the same units)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    fig, ax = _figure()
    ax.scatter(x[finite], y[finite], s=14, alpha=0.7, edgecolors="none")
    if identity_line and finite.any():
        lo, hi = min(x[finite].min(), y[finite].min()), max(x[finite].max(), y[finite].max())
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, linestyle="--", label="y = x")
        ax.legend()
    if annotate_tau:
        tau = kendall_tau(x[finite].tolist(), y[finite].tolist())
        title = f"{title}\nKendall τ = {tau:.3f} (n = {int(finite.sum())})"
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    _save(fig, path)


def plot_band(frame: pd.DataFrame, x: str, group: str, y_mean: str, y_std: str, path: Path, title: str,
              xlabel: str, ylabel: str) -> None:
    """Per value of ``group``: the mean curve with a band of plus/minus one standard deviation."""
    fig, ax = _figure()
    for name, rows in frame.groupby(group, sort=True):
        rows = rows.sort_values(x)
        mean, std = rows[y_mean].to_numpy(float), rows[y_std].fillna(0.0).to_numpy(float)
        (line,) = ax.plot(rows[x], mean, label=str(name))
        ax.fill_between(rows[x], mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(title=group)
    _save(fig, path)


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
