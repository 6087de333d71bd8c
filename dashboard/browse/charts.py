"""Plotly figures built from the atlas's stored histograms (no raw activations needed)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from analysis.atlas.contract import HIST_BINS, LOG_BINS_PER_OCTAVE, LOG_MIN_EXP
from dashboard.shell.plain_text import visible

ACTIVATION_COLOUR = "#ff7f0e"
LOGIT_COLOURS = ("#d62728", "#1f77b4")  # suppressed, promoted
MARKER_COLOUR = "#2ca02c"


def _layout(figure: go.Figure, x_title: str, y_title: str, height: int = 260) -> go.Figure:
    figure.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title=x_title,
        yaxis_title=y_title,
        bargap=0.02,
        showlegend=False,
    )
    return figure


def activation_histogram(
    hist: Sequence[int], range_exp: int, max_act: float, log_scale: bool, marker: float | None = None
) -> go.Figure:
    """The 100 equal bins of ``[0, 2^range_exp)``, shown up to the bin holding the max; ``marker``
    draws a line at a value (the maximum on text the user typed)."""
    counts = np.asarray(hist)
    width = 2.0**range_exp / HIST_BINS
    last = min(int(max_act / width), HIST_BINS - 1) + 1 if max_act > 0 else 1
    centres = (np.arange(last) + 0.5) * width
    figure = go.Figure(
        go.Bar(
            x=centres,
            y=counts[:last],
            width=width,
            marker_color=ACTIVATION_COLOUR,
            hovertemplate="activation %{x:.3g}<br>%{y} tokens<extra></extra>",
        )
    )
    if log_scale:
        figure.update_yaxes(type="log")
    if marker is not None:
        figure.add_vline(
            x=marker,
            line_color=MARKER_COLOUR,
            line_dash="dash",
            annotation_text=f"your text {marker:.3g}",
            annotation_position="top",
        )
    return _layout(figure, "activation (where it fires)", "tokens")


def log_spaced_histogram(log_hist: Sequence[int]) -> go.Figure:
    """Quarter-octave bins: readable for latents whose activations span orders of magnitude."""
    counts = np.asarray(log_hist)
    used = np.nonzero(counts)[0]
    if len(used) == 0:
        return _layout(go.Figure(), "activation (log scale)", "tokens")
    bins = np.arange(used.min(), used.max() + 1)
    lower = 2.0 ** (bins / LOG_BINS_PER_OCTAVE + LOG_MIN_EXP)  # bin = floor(4 log2 v) + 40
    figure = go.Figure(
        go.Bar(
            x=lower * 2**0.125,
            y=counts[bins],
            marker_color=ACTIVATION_COLOUR,
            hovertemplate="activation ≈ %{x:.3g}<br>%{y} tokens<extra></extra>",
        )
    )
    figure.update_xaxes(type="log")
    return _layout(figure, "activation (log scale)", "tokens")


def logit_histogram(counts: Sequence[int], low: float, high: float) -> go.Figure:
    """The decoder direction's effect on every vocabulary logit."""
    count_array = np.asarray(counts)
    edges = np.linspace(low, high, len(count_array) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = [LOGIT_COLOURS[int(c >= 0)] for c in centres]
    figure = go.Figure(
        go.Bar(
            x=centres,
            y=count_array,
            width=(high - low) / len(count_array),
            marker_color=colours,
            hovertemplate="logit effect %{x:.3g}<br>%{y} tokens<extra></extra>",
        )
    )
    return _layout(figure, "effect on the logit", "vocabulary tokens")


def density_histogram(edges: Sequence[float], counts_by_sae: dict[str, Sequence[int]]) -> go.Figure:
    """log10 firing density across the latents of each SAE (dead latents are counted apart)."""
    edge_array = np.asarray(edges)
    centres = (edge_array[:-1] + edge_array[1:]) / 2
    figure = go.Figure(
        [
            go.Bar(
                x=centres,
                y=list(counts),
                name=html.escape(visible(name, spaces=False)),  # plotly reads HTML tags in names
                opacity=0.75,
                hovertemplate="%{fullData.name}<br>density 10^%{x:.2f}<br>%{y} latents<extra></extra>",
            )
            for name, counts in counts_by_sae.items()
        ]
    )
    figure.update_layout(barmode="overlay", showlegend=True)
    return _layout(figure, "log10 firing density", "latents", height=300).update_layout(showlegend=True)
