"""The feature page's "test your text": type text, see this latent's activation on every token,
highlighted like the atlas's examples, and where its maximum falls on the histogram.

The model is imported and loaded only when someone submits text, so the feature page stays a
browse page (no torch) until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from dashboard.browse.token_html import highlighted_tokens
from dashboard.shell.plain_text import md
from dashboard.shell.workspace import Atlas

if TYPE_CHECKING:
    from analysis.text_activations import LatentActivations

MAX_TEXT_CHARS = 20_000


def _run(atlas: Atlas, sae_name: str, latent: int, text: str) -> LatentActivations | str:
    from analysis.live_model import LiveInputError, LiveModelBusy
    from analysis.text_activations import latent_activations
    from dashboard.live.service import load_for

    live = load_for(atlas)
    if isinstance(live, str):
        return f"Testing text needs the model, and it is not available for this atlas: {live}"
    try:
        return latent_activations(live, text, sae_name, latent)
    except (LiveInputError, LiveModelBusy) as error:
        return str(error)


def text_test_panel(atlas: Atlas, sae_name: str, latent: int, scale: float) -> float | None:
    """The form and the last result for this feature (kept across reruns of the page); returns the
    text's maximum activation for the histogram marker, None when nothing was tested."""
    key = f"text_test::{atlas.path}::{sae_name}::{latent}"
    with st.form(f"text_test_form_{sae_name}_{latent}"):
        text = st.text_area(
            "Test your text",
            max_chars=MAX_TEXT_CHARS,
            height=80,
            placeholder="Type text to see this feature's activation on each token",
        )
        if st.form_submit_button("Test"):
            st.session_state[key] = _run(atlas, sae_name, latent, text)
    result = st.session_state.get(key)
    if result is None:
        return None
    if isinstance(result, str):
        st.error(md(result))
        return None
    if result.cut:
        st.warning(f"The text is longer than the model's context: its first {result.cut} tokens were left out.")
    peak = result.peak if result.peak is not None else -1
    st.html(highlighted_tokens(result.tokens, result.values, peak, scale))
    if result.peak is None:
        st.caption("This feature does not fire on this text.")
        return 0.0
    top = result.values[peak]
    st.caption(
        f"max {top:.3f} on token {peak} ({top / scale:.0%} of the atlas max {scale:.3f}); marked on the histogram below"
    )
    return top
