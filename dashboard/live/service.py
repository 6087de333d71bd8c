"""The live model behind the pages that run it (steering, search via inference, test your text):
loaded lazily the first time such a page needs it, then kept for the server process's life.

Why here and not in page_common: browse pages never import torch, so only live pages import this
module (the feature page imports it only when someone tests text).
"""

from __future__ import annotations

import logging

import streamlit as st

from analysis.errors import SAEscopeError
from analysis.live_model import LiveModel, LiveSpecs, load_live
from dashboard.shell.plain_text import md
from dashboard.shell.workspace import Atlas

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False, max_entries=2)
def _load(specs: LiveSpecs) -> LiveModel:
    return load_live(specs)


def unavailable_reason(atlas: Atlas) -> str | None:
    """Why the live pages cannot run for this atlas (its model or SAEs are not on this machine)."""
    return LiveSpecs.from_atlas_meta(atlas.meta).unavailable_reason()


def load_for(atlas: Atlas) -> LiveModel | str:
    """The atlas's model and SAEs, loaded once per server; a one-line reason when they cannot be."""
    return load_specs(LiveSpecs.from_atlas_meta(atlas.meta))


def load_specs(specs: LiveSpecs) -> LiveModel | str:
    """A model and SAEs, loaded once per server; a one-line reason when they cannot be."""
    reason = specs.unavailable_reason()
    if reason is not None:
        return reason
    try:
        with st.spinner("Loading the model and its SAEs (once per server)…"):
            return _load(specs)
    except (SAEscopeError, ValueError, RuntimeError, OSError) as error:
        # The page shows one line; the server's log keeps the traceback, which a broken checkpoint needs.
        log.exception("the live model %s with SAEs %s could not be loaded", specs.model, specs.saes)
        return f"the model could not be loaded: {error}"


def require_live(atlas: Atlas) -> LiveModel:
    """The live model, with a caption saying where it runs; otherwise the reason, and the page stops."""
    live = load_for(atlas)
    if isinstance(live, str):
        st.warning(
            f"This page runs the model, and it is disabled for this atlas: {md(live)}. Browsing still works.", icon="⏸️"
        )
        st.stop()
    changed = [
        name for name, info in _atlas_hashes(atlas).items() if name in live.sae_hashes and live.sae_hashes[name] != info
    ]
    device = live.device.upper() if live.device.startswith("cuda") else live.device
    st.caption(f"Live model on **{device}** · {len(live.saes)} SAEs · loaded in {live.load_seconds:.1f} s")
    if live.model_hash != atlas.meta["model"]["content_hash"] or changed:
        st.warning(
            "The model or SAEs on disk are not the ones this atlas was built from "
            f"({', '.join(md(name) for name in changed) or 'model'}): the atlas's statistics may not describe what runs here."
        )
    return live


def _atlas_hashes(atlas: Atlas) -> dict[str, str]:
    return {info["name"]: info["content_hash"] for info in atlas.meta["saes"]}
