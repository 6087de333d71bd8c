"""How a steering comparison is drawn: the two completions as escaped token spans with the tokens
from the first divergence on marked, and the shift of the next-token distribution there."""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go

from analysis.divergence import generated_token
from dashboard.shell.plain_text import visible

DIVERGED_STYLE = "background: rgba(214, 39, 40, 0.18); border-bottom: 2px solid #d62728;"
FIRST_DIVERGED_STYLE = DIVERGED_STYLE + " outline: 2px solid #d62728; font-weight: 600;"
SHIFT_COLOURS = ("#7f7f7f", "#ff7f0e")  # default, steered


def _span(text: str, style: str, title: str) -> str:
    escaped = html.escape(visible(text, spaces=False), quote=True)
    span = f'<span style="{style}" title="{html.escape(title, quote=True)}">{escaped}</span>'
    return span + "<br>" if "\n" in text else span


def prompt_shown(record: dict) -> str:
    """A recorded run's prompt as the model saw it: an ellipsis first when its start was cut off."""
    return ("…" if record["prompt_cut"] else "") + (
        record["prompt"] if not record["prompt_cut"] else "".join(record["prompt_tokens"][1:])
    )


def completion_html(prompt: str, tokens: Sequence[str], divergence: int | None, generating: bool = False) -> str:
    """The prompt in grey, then the generated tokens; those from ``divergence`` (0-based) on are marked,
    each titled with its 1-based number (analysis/divergence.py)."""
    spans = []
    for index, token in enumerate(tokens):
        if divergence is not None and index >= divergence:
            style = FIRST_DIVERGED_STYLE if index == divergence else DIVERGED_STYLE
            title = "first token that differs" if index == divergence else "after the divergence"
        else:
            style, title = "", "same in both"
        spans.append(_span(token, style, f"{title} · {generated_token(index)}"))
    cursor = '<span style="color:#999;">▍</span>' if generating else ""
    prompt_html = html.escape(visible(prompt, spaces=False))
    return (
        f'<div style="font-family: ui-monospace, monospace; font-size: 0.9rem; line-height: 1.7; '
        f"white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #ddd; border-radius: 6px; "
        f'padding: 0.6rem; min-height: 6rem;"><span style="color:#888;">{prompt_html}</span>'
        f"{''.join(spans)}{cursor}</div>"
    )


def shift_chart(tokens: Sequence[str], before: Sequence[float], after: Sequence[float]) -> go.Figure:
    """Next-token probabilities at the first divergence, without and with steering."""
    labels = [html.escape(visible(token)) for token in tokens]  # plotly reads HTML tags in tick labels
    figure = go.Figure(
        [
            go.Bar(
                name="default",
                y=labels,
                x=list(before),
                orientation="h",
                marker_color=SHIFT_COLOURS[0],
                hovertemplate="%{y}: %{x:.3f} default<extra></extra>",
            ),
            go.Bar(
                name="steered",
                y=labels,
                x=list(after),
                orientation="h",
                marker_color=SHIFT_COLOURS[1],
                hovertemplate="%{y}: %{x:.3f} steered<extra></extra>",
            ),
        ]
    )
    figure.update_layout(
        barmode="group",
        height=max(220, 28 * len(labels) + 60),
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title="probability of the next token",
        yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", y=1.08),
    )
    return figure
