"""How the Detectors page shows a detector: its metrics beside the baselines, its features with
weights and links, and a text's per-token scores highlighted (tokens as data, never markup)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.governance.detector_metrics import METHODS
from dashboard.browse.token_html import highlighted_tokens
from dashboard.shell.plain_text import md, plain_frame


def metrics_table(metrics: dict) -> None:
    split = metrics["split"]
    st.caption(
        f"Held-out split: {split['test']} rows ({split['test_positives']} positive); trained on {split['train']} "
        f"(seed {split['seed']}). Each method is scored on the same held-out rows, threshold 0.5."
    )
    frame = pd.DataFrame(
        [
            {
                "method": METHODS[name],
                "precision": row["precision"],
                "recall": row["recall"],
                "F1": row["f1"],
                "AUROC": row["auroc"],
                "features": row.get("features"),
            }
            for name, row in metrics["methods"].items()
        ]
    )
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="%.3f") for name in ("precision", "recall", "F1", "AUROC")
        },
    )
    _token_table(metrics)
    cost = metrics.get("cost")
    if cost:
        st.caption(
            f"Cost per 1,000 texts ({cost['texts']} timed on {cost['device']}, load average "
            f"{cost['load_average_1min']}): detector {cost['detector_ms_per_1000_texts']:,.0f} ms "
            f"({cost['blocks_run']} of {cost['n_layers']} blocks, encode, dot) against "
            f"{cost['full_forward_ms_per_1000_texts']:,.0f} ms for a full forward: {cost['full_over_detector']:.2f}x cheaper."
        )


def _token_table(metrics: dict) -> None:
    """Per-token precision, recall and F1 against the rows' spans, or why they are not scored."""
    tokens = metrics.get("tokens")
    if not tokens:
        st.caption(f"Per token: not scored ({md(metrics.get('tokens_skipped') or 'no spans')}).")
        return
    counts = tokens["tokens"]
    st.caption(
        f"Per token, against the spans: {counts['test']:,} held-out tokens of {tokens['rows']['test']} rows, "
        f"{counts['test_positive']:,} inside a span; each probe's threshold is the F1-best on the training split's "
        f"{counts['train']:,} tokens, the regexes flag the tokens their matches overlap."
    )
    frame = pd.DataFrame(
        [
            {
                "method": METHODS[name],
                "token precision": row["precision"],
                "token recall": row["recall"],
                "token F1": row["f1"],
                "token AUROC": row["auroc"],
                "threshold": row["threshold"],
            }
            for name, row in tokens["methods"].items()
        ]
    )
    st.dataframe(
        frame,
        hide_index=True,
        column_config={name: st.column_config.NumberColumn(format="%.3f") for name in frame.columns[1:]},
    )


def features_table(detector: dict) -> None:
    frame = pd.DataFrame(
        {
            "feature": [f["url"] for f in detector["features"]],
            "latent": [f["latent"] for f in detector["features"]],
            "weight": [f["weight"] for f in detector["features"]],
            "automatic label": [f["label"] for f in detector["features"]],
        }
    )
    st.caption(f"{len(frame)} features on {md(detector['sae']['name'])}, largest |weight| first")
    st.dataframe(
        plain_frame(frame),
        hide_index=True,
        column_config={
            "feature": st.column_config.LinkColumn("open", display_text="open"),
            "weight": st.column_config.NumberColumn(format="%+.4f"),
        },
    )


def token_scores(tokens: list[str], scores: list[float], has_bos: bool) -> str:
    """The text's tokens coloured by the detector's per-token score (BOS left out); the highest outlined."""
    first = int(has_bos) if len(tokens) > int(has_bos) else 0
    shown, values = tokens[first:], scores[first:]
    peak = max(range(len(values)), key=values.__getitem__)
    return highlighted_tokens(shown, values, peak, 1.0, measure="detector score")
