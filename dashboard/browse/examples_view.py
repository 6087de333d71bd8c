"""A feature's examples as highlighted token lines: the top windows, then the interval groups
(random firing tokens from each slice of the activation range), each line saying where its text
came from."""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from dashboard.browse.feature_queries import FeatureView
from dashboard.browse.token_html import highlighted_tokens, window_slice
from dashboard.shell.plain_text import visible

CONTEXT_WIDTHS = {"5 tokens": 5, "16 tokens": 16, "whole window": None}
INTERVALS = 20


def _dense(positions: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    acts = np.zeros(length, dtype=np.float32)
    acts[np.asarray(positions, dtype=np.int64)] = values
    return acts


def example_html(
    view: FeatureView,
    example: dict,
    token_text: tuple[str, ...],
    width: int | None,
    scale: float,
    documents: dict[int, str],
) -> str:
    """One example: its source, its activation at the marked token, and the highlighted tokens."""
    tokens = view.windows[int(example["window_id"])]
    acts = _dense(example["act_positions"], example["acts"], len(tokens))
    centre = int(example["position"])
    line = highlighted_tokens(
        [token_text[t] for t in tokens], acts, centre, scale, window_slice(len(tokens), centre, width)
    )
    source = html.escape(visible(documents.get(int(example["document"]), "?"), spaces=False))
    return (
        f'<div style="margin: 0 0 0.6rem 0;"><div style="font-size: 0.75rem; color: #555;">'
        f"{float(example['value']):.3f} · {source} · window {int(example['window_id'])}</div>{line}</div>"
    )


def show_examples(view: FeatureView, token_text: tuple[str, ...], width: int | None, intervals: bool = True) -> None:
    """Top examples in full, then (unless ``intervals`` is False, as in a narrow side panel)
    interval groups in expanders (highest interval first)."""
    scale = float(view.stats["max_act"]) or 1.0
    documents = {document: f"{row['domain']}: {row['source']}" for document, row in view.documents.items()}
    top = [e for e in view.examples if e["kind"] == "top"]
    st.subheader(f"Top {len(top)} examples")
    if not top:
        st.info("This feature never fired on the atlas's tokens, so it has no examples.")
        return
    st.html("".join(example_html(view, example, token_text, width, scale, documents) for example in top))
    if not intervals:
        return
    st.subheader("Across the activation range")
    fire_count = max(int(view.stats["fire_count"]), 1)
    interval_width = 2.0 ** int(view.stats["range_exp"]) / INTERVALS
    samples = [e for e in view.examples if e["kind"] == "interval"]
    for interval in sorted({e["interval_index"] for e in samples}, reverse=True):
        group = [e for e in samples if e["interval_index"] == interval]
        share = view.stats["interval_count"][interval] / fire_count
        low, high = interval * interval_width, (interval + 1) * interval_width
        with st.expander(f"activation {low:.3g}–{high:.3g} · {share:.1%} of firing tokens · {len(group)} samples"):
            st.html("".join(example_html(view, example, token_text, width, scale, documents) for example in group))
