"""Detectors: train a probe on one SAE's latents from labelled texts (a JSONL upload, or the atlas
examples of two feature lists), see it against a dense probe and a regex baseline on the same
held-out split, and paste text to see its per-token scores. The same code as ``python -m analysis
detector``; the model is loaded once per server (dashboard/live/service.py)."""

from __future__ import annotations

import json

import streamlit as st

from dashboard.live.model_stack import import_model_stack

import_model_stack()  # before the imports below: one session at a time (see model_stack)

from analysis.atlas.reader import feature_labels  # noqa: E402
from analysis.errors import SAEscopeError  # noqa: E402
from analysis.governance.detector_files import LabelledText, one_sae_spec, portable_spec  # noqa: E402
from analysis.governance.detector_run import score_text  # noqa: E402
from analysis.governance.detector_train import TrainSettings, train_detector  # noqa: E402
from analysis.live_model import LiveModel, LiveModelBusy, LiveSpecs  # noqa: E402
from analysis.paths import REPO_ROOT  # noqa: E402
from dashboard.governance.detector_sources import from_lists, from_upload  # noqa: E402
from dashboard.governance.detector_view import features_table, metrics_table, token_scores  # noqa: E402
from dashboard.live.service import require_live  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md, option  # noqa: E402

MAX_TEXT_CHARS = 20_000
RESULT = "detector_trained"


def _rows(page: PageContext, live: LiveModel) -> list[LabelledText] | None:
    """The labelled texts chosen above the Train button; None (with the reason shown) when there are none."""
    source = st.radio("Train from", ["JSONL upload", "Two feature lists"], horizontal=True, key="detector_source")
    if source == "JSONL upload":
        upload = st.file_uploader(
            'Labelled JSONL: one {"text": ..., "label": 0 or 1} per line ("spans" optional)',
            type=["jsonl", "json", "txt"],
            key="detector_upload",
        )
        if upload is None:
            return None
        return from_upload(upload.getvalue(), upload.name)
    names = list(page.workspace.store.lists()["name"])
    if len(names) < 2:
        st.info("Make two feature lists on the Lists page first: one whose features fire on what to detect, one not.")
        return None
    left, right = st.columns(2)
    positive = left.selectbox("Fires on: the examples of", names, format_func=option, key="detector_positive")
    negative = right.selectbox(
        "Stays quiet on: the examples of", names, index=1, format_func=option, key="detector_negative"
    )
    if positive is None or negative is None or positive == negative:
        st.warning("Choose two different lists.")
        return None
    return from_lists(
        page.workspace, page.atlas, positive, negative, lambda ids: live.tokenizer.decode(ids, skip_special_tokens=True)
    )


def _train(page: PageContext, live: LiveModel, rows: list[LabelledText], sae: str, settings: TrainSettings) -> None:
    specs = LiveSpecs.from_atlas_meta(page.atlas.meta)
    recorded = (portable_spec(specs.model, REPO_ROOT), portable_spec(one_sae_spec(live.saes[sae].spec, sae), REPO_ROOT))
    labels = feature_labels(page.workspace.atlas_cursor(page.atlas), [(sae, i) for i in range(live.saes[sae].d_sae)])
    with st.spinner(f"Encoding {len(rows)} texts and fitting the probes…"):
        st.session_state[RESULT] = (sae, train_detector(live, sae, rows, settings, recorded, labels))


def _score(live: LiveModel, sae: str, detector: dict) -> None:
    st.subheader("Score a text")
    text = st.text_area("Text to score", key="detector_text", height=90, max_chars=MAX_TEXT_CHARS)
    if not st.button("Score") or not text.strip():
        return
    try:
        result = score_text(live, detector, sae, text)
    except (SAEscopeError, LiveModelBusy) as error:
        st.error(md(error))
        return
    if result.cut:
        st.warning(f"The text is longer than the model's context: its first {result.cut} tokens were left out.")
    verdict = "flagged" if result.flagged else "not flagged"
    st.caption(f"Text score {result.score:.3f}: {verdict} (threshold {detector['threshold']:g}). Per-token scores:")
    st.html(token_scores(result.tokens, result.token_scores, result.has_bos))


page = open_page("Detectors")
live = require_live(page.atlas)
st.caption(
    "A detector is a sparse logistic probe on one SAE's latents, pooled over a text's tokens. It is always shown "
    "beside a dense probe on the raw activations at the same hook and, for PII, a regex baseline: SAE probes do not "
    "reliably beat either. `python -m analysis detector` trains and runs the same detectors."
)
try:
    rows = _rows(page, live)
except SAEscopeError as error:
    st.error(md(error))
    rows = None
names = list(live.saes)
cols = st.columns([2, 1, 1, 1, 1], vertical_alignment="bottom")
sae = cols[0].selectbox("SAE", names, index=names.index("resid-L2") if "resid-L2" in names else 0, format_func=option)
pool = cols[1].radio("Pool", ["max", "mean"], horizontal=True, key="detector_pool")
top_k = cols[2].number_input("Top-k features", 0, 10_000, 0, help="0: choose the features by L1 instead")
cost_texts = cols[3].number_input("Texts to time", 0, 5_000, 200, help="0: do not measure the cost")
regex = cols[4].toggle("PII regex baseline", value=True)
if rows is not None:
    st.caption(
        f"{len(rows)} texts: {sum(r.label for r in rows)} labelled 1, {sum(1 - r.label for r in rows)} labelled 0."
    )
if st.button("Train detector", type="primary", disabled=not rows):
    settings = TrainSettings(
        pool=pool,
        top_k=int(top_k) or None,
        regex=regex,
        cost_texts=int(cost_texts),
        dashboard_url="",
        atlas_key=page.atlas_key,
    )
    try:
        _train(page, live, rows or [], sae, settings)
    except (SAEscopeError, LiveModelBusy) as error:
        st.error(md(error))
trained = st.session_state.get(RESULT)
if trained is not None:
    trained_sae, result = trained
    st.subheader("Against the baselines")
    metrics_table(result.metrics)
    st.subheader("Features")
    features_table(result.detector)
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("detector.json", json.dumps(result.detector, indent=2), "detector.json", "application/json")
    right.download_button("metrics.json", json.dumps(result.metrics, indent=2), "metrics.json", "application/json")
    _score(live, trained_sae, result.detector)
