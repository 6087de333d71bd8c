"""The evidence report's pictures as inline SVG: a feature's activation histogram, where its density
lies among its SAE's latents, and an attribution graph.

Why our own SVG rather than plotly: the report must open offline and print to PDF with no request
anywhere, and plotly's offline HTML carries 3 MB of JavaScript per report while its static export
needs kaleido and a browser of its own. Bars, a marker and a layered graph are a few lines of SVG.
Every text in a picture is ``html.escape``-d: labels and tokens come from users and atlases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from dashboard.shell.plain_text import visible

ORANGE, GREY, INK, BLUE, RED = "#ff7f0e", "#c8c8c8", "#333333", "#2563eb", "#dc2626"
KIND_COLOURS = {"embedding": "#6b7280", "feature": ORANGE, "error": "#a3a3a3", "logit": "#059669"}


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" font-family="Helvetica, Arial, sans-serif" font-size="10">'
        f"{body}</svg>"
    )


def bars(
    counts: Sequence[float],
    left: float,
    right: float,
    x_title: str,
    label: str,
    marker: float | None = None,
    width: int = 320,
    height: int = 140,
) -> str:
    """A histogram of ``counts`` over equal bins of [left, right], with an optional vertical marker at x = ``marker``."""
    pad_l, pad_r, pad_t, pad_b = 34, 8, 8, 28
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(max(counts, default=0), 1)
    step = plot_w / max(len(counts), 1)
    parts = [f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#e5e5e5"/>']
    for i, count in enumerate(counts):
        if count > 0:
            h = max(plot_h * count / top, 1.0)
            parts.append(
                f'<rect x="{pad_l + i * step:.2f}" y="{pad_t + plot_h - h:.2f}" width="{max(step - 0.5, 0.5):.2f}" '
                f'height="{h:.2f}" fill="{ORANGE}"><title>{count:g}</title></rect>'
            )
    if marker is not None and right > left:
        x = pad_l + plot_w * min(max((marker - left) / (right - left), 0.0), 1.0)
        parts.append(
            f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{pad_t}" y2="{pad_t + plot_h}" stroke="{RED}" stroke-width="2"/>'
        )
    parts += [
        f'<text x="{pad_l}" y="{height - 16}" fill="{INK}">{left:.3g}</text>',
        f'<text x="{width - pad_r}" y="{height - 16}" fill="{INK}" text-anchor="end">{right:.3g}</text>',
        f'<text x="{pad_l + plot_w / 2}" y="{height - 3}" fill="{INK}" text-anchor="middle">{escape(x_title)}</text>',
        f'<text x="{pad_l - 3}" y="{pad_t + 8}" fill="{INK}" text-anchor="end">{top:g}</text>',
        f'<text x="{pad_l - 3}" y="{pad_t + plot_h}" fill="{INK}" text-anchor="end">0</text>',
    ]
    return _svg(width, height, "".join(parts), label)


def activation_histogram(hist: Sequence[int], range_exp: int, max_act: float) -> str:
    """The atlas's 100 equal bins of [0, 2^range_exp), cut after the bin holding the max."""
    top = 2.0**range_exp
    shown = min(len(hist), max(1, math.floor(max_act / top * len(hist)) + 1))
    return bars(list(hist[:shown]), 0.0, top * shown / len(hist), "activation when firing", "activation histogram")


def density_position(edges: Sequence[float], counts: Sequence[int], density: float) -> str:
    """The SAE's histogram of log10 density over its firing latents, the feature's own density marked in red."""
    marker = math.log10(density) if density > 0 else None
    return bars(list(counts), edges[0], edges[-1], "log10 density (share of tokens firing)", "density", marker)


@dataclass
class _Layout:
    """Where each node is drawn, each position's column (start, width) and each layer's row height."""

    where: dict[str, tuple[float, float]]
    columns: dict[int, tuple[float, float]]
    rows: dict[int, float]


LEFT, BOTTOM = 46, 40  # room for the layer names and the tokens


def _graph_layout(nodes: list[dict], width: int, height: int) -> _Layout:
    """Columns by token position, as wide as the most nodes any of its cells holds (the logits share
    one); rows by layer, embeddings at the bottom and logits on top; a cell's nodes spread across it."""
    cells: dict[tuple[int, int], list[str]] = {}
    for node in nodes:
        cells.setdefault((int(node["position"]), int(node["layer"])), []).append(node["id"])
    positions = sorted({position for position, _ in cells})
    layers = sorted({layer for _, layer in cells})
    weight = {p: max(len(ids) for (q, _), ids in cells.items() if q == p) ** 0.7 for p in positions}
    unit = (width - LEFT - 10) / max(sum(weight.values()), 1)
    columns, x = {}, float(LEFT)
    for position in positions:
        columns[position] = (x, unit * weight[position])
        x += unit * weight[position]
    cell_h = (height - BOTTOM - 10) / max(len(layers), 1)
    rows = {layer: height - BOTTOM - cell_h * (i + 0.5) for i, layer in enumerate(layers)}
    where = {}
    for (position, layer), ids in cells.items():
        start, span = columns[position]
        for k, node_id in enumerate(ids):
            where[node_id] = (start + span * (k + 1) / (len(ids) + 1), rows[layer])
    return _Layout(where, columns, rows)


def attribution_graph(data: dict, highlight: set[tuple[str, int]], max_edges: int = 200, width: int = 760) -> str:
    """A saved graph (node-link data) as layers over token positions: edges blue when they excite and
    red when they inhibit, wider with more weight (the ``max_edges`` strongest); feature nodes on the
    pack's list ringed in red."""
    nodes = [n for n in data.get("nodes", []) if "position" in n and "layer" in n]
    layers = {int(n["layer"]) for n in nodes}
    height = max(220, 46 * len(layers) + 60)
    layout = _graph_layout(nodes, width, height)
    where = layout.where
    links = sorted(
        (
            link
            for link in data.get("links", data.get("edges", []))
            if link["source"] in where and link["target"] in where
        ),
        key=lambda link: -abs(float(link.get("weight", 0))),
    )[:max_edges]
    strongest = max((abs(float(link.get("weight", 0))) for link in links), default=1.0) or 1.0
    parts = []
    top_layer = max(layers, default=0)
    for layer, y in layout.rows.items():
        name = "emb" if layer < 0 else "logit" if layer == top_layer and layer > 0 else f"L{layer}"
        parts.append(f'<text x="4" y="{y + 3:.1f}" fill="{INK}">{name}</text>')
    for link in links:
        (x1, y1), (x2, y2) = where[link["source"]], where[link["target"]]
        weight = float(link.get("weight", 0))
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{BLUE if weight >= 0 else RED}" '
            f'stroke-opacity="0.45" stroke-width="{0.4 + 3.0 * abs(weight) / strongest:.2f}"/>'
        )
    for node in nodes:
        x, y = where[node["id"]]
        kind = node.get("kind", "")
        ringed = kind == "feature" and (str(node.get("transcoder")), int(node.get("latent", -1))) in highlight
        stroke = f'stroke="{RED}" stroke-width="2.5"' if ringed else 'stroke="#ffffff" stroke-width="0.8"'
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{6 if ringed else 4.5}" fill="{KIND_COLOURS.get(kind, GREY)}" '
            f"{stroke}><title>{escape(_node_title(node))}</title></circle>"
        )
    tokens = data.get("graph", {}).get("tokens") or []
    for position, (start, span) in layout.columns.items():
        token = tokens[position] if 0 <= position < len(tokens) else str(position)
        parts.append(
            f'<text x="{start + span / 2:.1f}" y="{height - 14}" text-anchor="middle" fill="{INK}">'
            f"{escape(_short(token))}</text>"
        )
    return _svg(width, height, "".join(parts), "attribution graph")


def _node_title(node: dict) -> str:
    kind = node.get("kind", "")
    if kind == "feature":
        return f"{node.get('transcoder')} #{node.get('latent')} at {node.get('position')}: {node.get('label') or ''}"
    if kind in ("embedding", "logit"):
        return f"{kind} {node.get('token')!r}"
    return f"{kind} layer {node.get('layer')} at {node.get('position')}"


def _short(token: str, limit: int = 10) -> str:
    shown = visible(token, spaces=False)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
