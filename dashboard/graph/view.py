"""The attribution graph as a plotly figure: token position across, layer up (embeddings at the
bottom, logits at the top), edges drawn in width and colour by weight and sign, nodes hoverable
and clickable (each point carries its node id). Labels and tokens are data: escaped before plotly
renders its hover HTML."""

from __future__ import annotations

import html
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


@dataclass
class Shown:
    """The graph to draw and how many feature nodes each filter hid."""

    graph: nx.DiGraph
    hidden_dense: int
    hidden_beyond_max: int


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


def _coordinates(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x = token position with the nodes of one (position, layer) cell spread across it; y = layer + 1
    (embeddings at 0). Cells are spread in id order so a node keeps its place as thresholds change."""
    cells: dict[tuple[float, float], list[str]] = {}
    for node, data in graph.nodes(data=True):
        cells.setdefault((float(data["position"]), float(data["layer"]) + 1), []).append(node)
    placed = {}
    for (x, y), nodes in cells.items():
        nodes.sort()
        offsets = np.linspace(-0.35, 0.35, len(nodes)) if len(nodes) > 1 else [0.0]
        for node, offset in zip(nodes, offsets):
            placed[node] = (x + float(offset), y)
    return placed


def _edge_traces(graph: nx.DiGraph, placed: dict[str, tuple[float, float]]) -> list[go.Scatter]:
    """Edges in a few traces (one per sign and width band), the strongest ``MAX_DRAWN_EDGES``."""
    edges = sorted(graph.edges(data="weight"), key=lambda e: -abs(e[2]))[:MAX_DRAWN_EDGES]
    if not edges:
        return []
    scale = max(abs(w) for _, _, w in edges) or 1.0
    bands: dict[tuple[bool, int], tuple[list, list]] = {}
    for source, target, weight in edges:
        band = min(int(abs(weight) / scale * len(WIDTH_BINS)), len(WIDTH_BINS) - 1)
        xs, ys = bands.setdefault((weight >= 0, band), ([], []))
        (x0, y0), (x1, y1) = placed[source], placed[target]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    return [
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            hoverinfo="skip",
            showlegend=False,
            line={
                "width": WIDTH_BINS[band],
                "color": f"rgba({POSITIVE if positive else NEGATIVE}, {0.25 + 0.15 * band:.2f})",
            },
        )
        for (positive, band), (xs, ys) in sorted(bands.items())
    ]


def graph_figure(
    graph: nx.DiGraph,
    labels: dict[str, str],
    tokens: list[str],
    n_layers: int,
    pinned: Set[str] = frozenset(),
    selected: str | None = None,
) -> go.Figure:
    """The figure; every node point's ``customdata`` is its node id (what a click returns)."""
    placed = _coordinates(graph)
    figure = go.Figure(_edge_traces(graph, placed))
    for kind, (symbol, colour) in KIND_STYLE.items():
        nodes = [n for n, d in graph.nodes(data=True) if d["kind"] == kind]
        if not nodes:
            continue
        figure.add_trace(
            go.Scatter(
                x=[placed[n][0] for n in nodes],
                y=[placed[n][1] for n in nodes],
                mode="markers",
                name=kind,
                customdata=nodes,
                hovertext=[node_text(n, graph.nodes[n], labels.get(n, "")) for n in nodes],
                hoverinfo="text",
                marker={
                    "symbol": symbol,
                    "color": colour,
                    "size": [16 if n == selected else 11 for n in nodes],
                    "line": {
                        "width": [3 if n in pinned or n == selected else 0.5 for n in nodes],
                        "color": ["#111827" if n in pinned or n == selected else "white" for n in nodes],
                    },
                },
            )
        )
    layer_names = ["embeddings", *(f"layer {layer}" for layer in range(n_layers)), "logits"]
    figure.update_layout(
        height=620,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        clickmode="event+select",
        dragmode="pan",
        legend={"orientation": "h", "y": -0.08},
        xaxis={
            "tickvals": list(range(len(tokens))),
            "showgrid": False,
            "zeroline": False,
            "ticktext": [html.escape(visible(t)) for t in tokens],
        },
        yaxis={"tickvals": list(range(n_layers + 2)), "ticktext": layer_names, "showgrid": True, "zeroline": False},
    )
    return figure
