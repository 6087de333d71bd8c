"""The attribution graph as a plotly figure: token position across, layer up (embeddings at the
bottom, logits at the top), edges drawn in width and colour by weight and sign, nodes hoverable
and clickable (each point carries its node id).

Layout as circuit-tracer's frontend lays it out: a token position's column is as wide as its most
crowded (position, layer) cell needs, so the last position with ~30 features in a layer gets
that much room while a position with one embedding stays narrow, and the nodes of a cell sit a fixed
gap apart (wrapped into a few rows when even that does not fit). Token names sit under their
columns, shortened with the full text on hover; logit tokens, supernode names and the labels of
the most influential features are written on the canvas. Labels and tokens are data: escaped
before plotly renders its text and hover HTML.

Why our own layout: plotly has none for layered graphs, and networkx's ``multipartite_layout``
spreads every layer over the same width, which is what made one position a solid bar."""

from __future__ import annotations

import html
import math
from collections.abc import Set
from dataclasses import dataclass

import networkx as nx
import numpy as np
import plotly.graph_objects as go

from dashboard.shell.plain_text import visible

MAX_DRAWN_NODES = 400
MAX_DRAWN_EDGES = 1500
KIND_STYLE = {  # kind -> (marker symbol, colour)
    "embedding": ("square", "#6b7280"),
    "feature": ("circle", "#ff7f0e"),
    "error": ("diamond", "#9ca3af"),
    "logit": ("square", "#2563eb"),
    "supernode": ("hexagon", "#7c3aed"),
}
POSITIVE, NEGATIVE = "37, 99, 235", "220, 38, 38"  # blue raises the target, red lowers it
WIDTH_BINS = (0.5, 1.5, 3.0, 5.0)
NODE_GAP = 16.0  # x units between neighbours in a cell; the figure is ~PLOT_WIDTH units wide
PLOT_WIDTH = 850.0  # the x extent the layout aims to fit (the chart's px width in a 1400 px window)
MIN_COLUMN = 36.0  # a position's narrowest column
MAX_ROWS = 4  # rows a crowded cell may wrap into before columns grow past PLOT_WIDTH
ROW_GAP = 0.2  # layer units between the wrapped rows of a cell
LAYER_PX = 95.0  # px per layer band at the figure's height, to keep canvas labels apart
LABELLED_FEATURES = 15  # the most influential features get their label written on the canvas
TOKEN_CHARS, LOGIT_CHARS, LABEL_CHARS = 10, 14, 22
DIM_NODE, DIM_EDGE = 0.25, "rgba(156, 163, 175, 0.12)"
DIM_EDGE_OPACITY = 0.15  # the other edges' opacity while a node is hovered


@dataclass
class Shown:
    """The graph to draw and how many feature nodes each filter hid."""

    graph: nx.DiGraph
    hidden_dense: int
    hidden_beyond_max: int


@dataclass
class Layout:
    """Where each node sits, and each token column's centre and width (in x units)."""

    placed: dict[str, tuple[float, float]]
    centres: list[float]
    widths: list[float]


def filtered(
    graph: nx.DiGraph, max_features: int, max_density: float | None, densities: dict[str, np.ndarray]
) -> Shown:
    """``graph`` without features denser than ``max_density`` (by the atlas's densities) and with
    at most ``max_features`` feature nodes, the most influential kept (smallest cumulative influence)."""
    features = [(node, data) for node, data in graph.nodes(data=True) if data["kind"] == "feature"]
    dense = set()
    if max_density is not None:
        for node, data in features:
            values = densities.get(data.get("transcoder", ""))
            if values is not None and data["latent"] < len(values) and values[data["latent"]] > max_density:
                dense.add(node)
    kept = sorted((n for n, _ in features if n not in dense), key=lambda n: graph.nodes[n].get("influence") or 0.0)
    beyond = set(kept[max_features:])
    shown = graph.subgraph([n for n in graph if n not in dense and n not in beyond]).copy()
    return Shown(shown, hidden_dense=len(dense), hidden_beyond_max=len(beyond))


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (what a canvas label has room for)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def node_text(node: str, data: dict, label: str) -> str:
    """A node's hover text, escaped: its label or token, layer, position and activation."""
    kind = data["kind"]
    if kind == "embedding":
        title = f"token {visible(data.get('token', ''))!s}"
    elif kind == "logit":
        title = f"logit {visible(data.get('token') or '')}"
        if data.get("probability") is not None:
            title += f" · p {data['probability']:.3f}"
    elif kind == "feature":
        title = f"{data.get('transcoder', 'L' + str(data['layer']))} #{data['latent']}"
    elif kind == "supernode":
        title = f"supernode of {len(data['members'])}"
    else:
        title = f"error L{data['layer']}"
    lines = [title, visible(label, spaces=False) if label else "", f"position {data['position']:g}"]
    if data.get("activation") is not None:
        lines.append(f"activation {data['activation']:.3f}")
    if data.get("influence") is not None:
        lines.append(f"cumulative influence {data['influence']:.3f}")
    return "<br>".join(html.escape(line) for line in lines if line)


def _cell_order(graph: nx.DiGraph, nodes: list[str]) -> list[str]:
    """Logits most likely first; the rest by id, so a node keeps its place as thresholds change."""
    return sorted(nodes, key=lambda n: (-(graph.nodes[n].get("probability") or 0.0), n))


def layout(graph: nx.DiGraph, n_positions: int) -> Layout:
    """Column widths by node count and every node's place: x in units (``NODE_GAP`` between cell
    neighbours), y = layer + 1 (embeddings at 0) with a crowded cell wrapped into rows around it."""
    cells: dict[tuple[int, float], list[str]] = {}
    for node, data in graph.nodes(data=True):
        cells.setdefault((round(float(data["position"])), float(data["layer"]) + 1), []).append(node)
    n_positions = max([n_positions, *(p + 1 for p, _ in cells)])
    crowd = [0] * n_positions
    for (position, _), nodes in cells.items():
        crowd[position] = max(crowd[position], len(nodes))

    def widths(per_row: int) -> list[float]:
        return [max(MIN_COLUMN, min(count, per_row) * NODE_GAP) for count in crowd]

    per_row = max(crowd, default=1)
    while per_row > 1 and sum(widths(per_row)) > PLOT_WIDTH and math.ceil(max(crowd) / (per_row - 1)) <= MAX_ROWS:
        per_row -= 1
    column_widths = widths(per_row)
    edges = np.cumsum([0.0, *column_widths])
    centres = [float(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    placed = {}
    for (position, y), nodes in cells.items():
        rows = math.ceil(len(nodes) / per_row)
        for index, node in enumerate(_cell_order(graph, nodes)):
            row, column = divmod(index, per_row)
            in_row = min(per_row, len(nodes) - row * per_row)
            x = centres[position] + (column - (in_row - 1) / 2) * NODE_GAP
            placed[node] = (x, y + (row - (rows - 1) / 2) * ROW_GAP)
    return Layout(placed, centres, column_widths)


def drawn_edges(graph: nx.DiGraph) -> list[tuple[str, str, float, int]]:
    """The edges the figure draws, strongest first (at most ``MAX_DRAWN_EDGES``), each as
    (source, target, weight, width band)."""
    edges = sorted(graph.edges(data="weight"), key=lambda e: -abs(e[2]))[:MAX_DRAWN_EDGES]
    scale = max((abs(w) for _, _, w in edges), default=0.0) or 1.0
    return [(s, t, w, min(int(abs(w) / scale * len(WIDTH_BINS)), len(WIDTH_BINS) - 1)) for s, t, w in edges]


def _lit_line(positive: bool, band: int) -> dict:
    """How a highlighted edge is drawn (a selected or hovered node's edge)."""
    return {"width": WIDTH_BINS[band] + 1.0, "color": f"rgba({POSITIVE if positive else NEGATIVE}, 0.90)"}


def _edge_traces(graph: nx.DiGraph, placed: dict[str, tuple[float, float]], focus: str | None) -> list[go.Scatter]:
    """Edges in a few traces (one per sign and width band); with a ``focus`` node, only its edges in
    colour and the rest dimmed grey."""
    bands: dict[tuple[bool, bool, int], tuple[list, list]] = {}
    for source, target, weight, band in drawn_edges(graph):
        dimmed = focus is not None and focus not in (source, target)
        xs, ys = bands.setdefault((not dimmed, weight >= 0, band), ([], []))
        (x0, y0), (x1, y1) = placed[source], placed[target]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    traces = []
    for (lit, positive, band), (xs, ys) in sorted(bands.items()):
        if not lit:
            line = {"width": WIDTH_BINS[band], "color": DIM_EDGE}
        elif focus is not None:
            line = _lit_line(positive, band)
        else:
            line = {
                "width": WIDTH_BINS[band],
                "color": f"rgba({POSITIVE if positive else NEGATIVE}, {0.25 + 0.15 * band:.2f})",
            }
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False, line=line))
    return traces


def hover_edges(graph: nx.DiGraph) -> dict:
    """What the chart's script needs to light a hovered node's edges without asking Python: the
    drawn edges as [source, target, line style] and, for each node, the indices of its edges."""
    edges, touching = [], {}
    for index, (source, target, weight, band) in enumerate(drawn_edges(graph)):
        edges.append([source, target, _lit_line(weight >= 0, band)])
        touching.setdefault(source, []).append(index)
        touching.setdefault(target, []).append(index)
    return {"edges": edges, "touching": touching, "dim_node": DIM_NODE, "dim_edges": DIM_EDGE_OPACITY}


def _boxes_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _feature_labels(
    graph: nx.DiGraph, labels: dict[str, str], placed: dict[str, tuple[float, float]], scale: float
) -> list[dict]:
    """Annotations for the labels of the ``LABELLED_FEATURES`` most influential labelled features
    (and every supernode), each skipped where it would cover one already written."""
    supernodes = [n for n, d in graph.nodes(data=True) if d["kind"] == "supernode"]
    features = sorted(
        (n for n, d in graph.nodes(data=True) if d["kind"] == "feature" and labels.get(n)),
        key=lambda n: graph.nodes[n].get("influence") or 0.0,
    )[:LABELLED_FEATURES]
    taken: list[tuple[float, float, float, float]] = []
    annotations = []
    for node in [*supernodes, *features]:
        text = shorten(visible(labels.get(node) or node, spaces=False), LABEL_CHARS)
        x, y = placed[node]
        half = (len(text) * 6.2 + 8) / 2 / scale  # ~6.2 px per character at font size 10, in x units
        for shift in (14, -14):  # above the node, else below it
            centre = y * LAYER_PX + shift
            box = (x - half, centre - 8, x + half, centre + 8)
            if node in supernodes or not any(_boxes_overlap(box, other) for other in taken):
                break
        else:
            continue
        taken.append(box)
        annotations.append(
            {
                "x": x,
                "y": y,
                "text": html.escape(text),
                "showarrow": False,
                "yshift": shift,
                "font": {
                    "size": 11 if node in supernodes else 10,
                    "color": "#4c1d95" if node in supernodes else "#374151",
                },
                "bgcolor": "rgba(255, 255, 255, 0.8)",
            }
        )
    return annotations


def _logit_labels(graph: nx.DiGraph, placed: dict[str, tuple[float, float]]) -> list[dict]:
    """Every logit's token above it, slanted so ten neighbours do not collide."""
    return [
        {
            "x": placed[node][0],
            "y": placed[node][1],
            "text": html.escape(shorten(visible(data.get("token") or ""), LOGIT_CHARS)),
            "showarrow": False,
            "textangle": -60,
            "xanchor": "left",
            "yanchor": "bottom",
            "yshift": 8,
            "font": {"size": 12, "color": "#1e3a8a"},
        }
        for node, data in graph.nodes(data=True)
        if data["kind"] == "logit"
    ]


def _token_labels(tokens: list[str], placed: Layout) -> list[dict]:
    """Token names under their columns, shortened, the full token on hover; staggered on two lines
    where a name is wider than its column."""
    shown = [shorten(visible(token), TOKEN_CHARS) for token in tokens]
    stagger = any(len(text) * 7 + 6 > width for text, width in zip(shown, placed.widths))
    return [
        {
            "x": placed.centres[position],
            "y": 0,
            "xref": "x",
            "yref": "paper",
            "yanchor": "top",
            "yshift": -4 - (16 if stagger and position % 2 else 0),
            "text": html.escape(text),
            "hovertext": html.escape(f"token {position}: {visible(tokens[position])}"),
            "showarrow": False,
            "font": {"size": 12, "family": "monospace"},
        }
        for position, text in enumerate(shown)
        if position < len(placed.centres)
    ]


def graph_figure(
    graph: nx.DiGraph,
    labels: dict[str, str],
    tokens: list[str],
    n_layers: int,
    pinned: Set[str] = frozenset(),
    selected: str | None = None,
) -> go.Figure:
    """The figure; every node point's ``customdata`` is its node id (what a click returns). With a
    ``selected`` node, its edges are drawn in colour and everything it does not touch is dimmed."""
    placed = layout(graph, len(tokens))
    focus = selected if selected in graph else None
    near = {focus, *graph.predecessors(focus), *graph.successors(focus)} if focus is not None else set(graph)
    figure = go.Figure(_edge_traces(graph, placed.placed, focus))
    for kind, (symbol, colour) in KIND_STYLE.items():
        nodes = [n for n, d in graph.nodes(data=True) if d["kind"] == kind]
        if not nodes:
            continue
        figure.add_trace(
            go.Scatter(
                x=[placed.placed[n][0] for n in nodes],
                y=[placed.placed[n][1] for n in nodes],
                mode="markers",
                name=kind,
                customdata=nodes,
                hovertext=[node_text(n, graph.nodes[n], labels.get(n, "")) for n in nodes],
                hoverinfo="text",
                marker={
                    "symbol": symbol,
                    "color": colour,
                    "opacity": [1.0 if n in near else DIM_NODE for n in nodes],
                    "size": [16 if n == focus else 18 if kind == "supernode" else 11 for n in nodes],
                    "line": {
                        "width": [3 if n in pinned or n == focus else 0.5 for n in nodes],
                        "color": ["#111827" if n in pinned or n == focus else "white" for n in nodes],
                    },
                },
            )
        )
    extent = float(sum(placed.widths)) or 1.0
    annotations = [
        *_token_labels(tokens, placed),
        *_logit_labels(graph, placed.placed),
        *_feature_labels(graph, labels, placed.placed, max(PLOT_WIDTH / extent, 0.2)),
    ]
    layer_names = ["embeddings", *(f"layer {layer}" for layer in range(n_layers)), "logits"]
    figure.update_layout(
        height=660,
        margin={"l": 10, "r": 10, "t": 80, "b": 60},
        template="plotly_white",
        clickmode="event",
        dragmode="pan",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.12},
        annotations=annotations,
        xaxis={"range": [0, extent], "showgrid": False, "zeroline": False, "showticklabels": False},
        yaxis={
            "range": [-0.5, n_layers + 1.5],
            "tickvals": list(range(n_layers + 2)),
            "ticktext": layer_names,
            "showgrid": True,
            "zeroline": False,
        },
    )
    return figure
