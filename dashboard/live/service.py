"""The live model behind the pages that run it (steering, search via inference, test your text):
loaded the first time such a page needs it, then kept for the server process's life.

Why here and not in page_common: browse pages never import torch, so only live pages import this
module (the feature page imports it only when someone tests text). This module itself imports
torch only inside the load, under a status box that names each stage as it runs (imports, model,
SAEs, the fit check on the device), so a fresh server shows progress at once instead of a blank page.

Why a slot per specs and not ``st.cache_resource`` on the load itself: a cached function's
elements are replayed, not drawn while it runs, so the stages could not be shown as they happen.
The slot (cached per process) holds the model, a lock that makes a second session wait for the
first one's load rather than load again, and the time of the first request, so the caption says
the real wait: from the first request to ready, imports included.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import streamlit as st

from analysis.errors import SAEscopeError
from analysis.live_specs import LiveSpecs
from dashboard.live.model_stack import import_model_stack
from dashboard.shell.plain_text import md
from dashboard.shell.workspace import Atlas

if TYPE_CHECKING:
    from analysis.live_model import LiveModel

log = logging.getLogger(__name__)


@dataclass
class LiveSlot:
    """One server process's model for one set of specs: loaded once, with how long that took."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: LiveModel | None = None
    first_request: float | None = None  # time.monotonic() of the first page that asked for it
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds), in order
    ready_seconds: float = 0.0  # from the first request until loaded, imports included


@st.cache_resource(show_spinner=False, max_entries=2)
def _slot(specs: LiveSpecs) -> LiveSlot:
    return LiveSlot()


def unavailable_reason(atlas: Atlas) -> str | None:
    """Why the live pages cannot run for this atlas (its model or SAEs are not on this machine)."""
    return LiveSpecs.from_atlas_meta(atlas.meta).unavailable_reason()


def _load_into(slot: LiveSlot, specs: LiveSpecs) -> None:
    """Import torch and the loaders, then load, with each stage and its time shown as it runs."""
    assert slot.first_request is not None, "set by load_for before the load starts"
    with st.status("Loading the live model (once per server process)…", expanded=True) as status:
        stages: list[tuple[str, float]] = []
        started = [time.monotonic()]

        def stage(name: str) -> None:
            now = time.monotonic()
            if stages:
                stages[-1] = (stages[-1][0], now - started[0])
            stages.append((name, 0.0))
            started[0] = now
            status.write(f"{name}…")

        stage("imports (torch, transformer-lens, sae-lens)")
        import_model_stack()
        from analysis.live_model import load_live

        live = load_live(specs, progress=stage)
        stages[-1] = (stages[-1][0], time.monotonic() - started[0])
        slot.stages, slot.ready_seconds = stages, time.monotonic() - slot.first_request
        slot.live = live
        status.update(label=f"Live model ready in {slot.ready_seconds:.1f} s", state="complete", expanded=False)


def load_for(atlas: Atlas) -> LiveModel | str:
    """The atlas's model and SAEs, loaded once per server process; a one-line reason when they cannot be."""
    return load_specs(LiveSpecs.from_atlas_meta(atlas.meta))


def load_specs(specs: LiveSpecs) -> LiveModel | str:
    """A model and SAEs, loaded once per server process; a one-line reason when they cannot be."""
    reason = specs.unavailable_reason()
    if reason is not None:
        return reason
    slot = _slot(specs)
    if slot.live is not None:
        return slot.live
    if slot.first_request is None:
        slot.first_request = time.monotonic()
    waiting = st.empty()
    if slot.lock.locked():
        waiting.info("Another session is loading the live model; this page continues when it is ready.")
    with slot.lock:
        waiting.empty()
        if slot.live is None:
            try:
                _load_into(slot, specs)
            except (SAEscopeError, ValueError, RuntimeError, OSError) as error:
                # The page shows one line; the server's log keeps the traceback, which a broken checkpoint needs.
                log.exception("the live model %s with SAEs %s could not be loaded", specs.model, specs.saes)
                slot.first_request = None  # the next request is a new wait
                return f"the model could not be loaded: {error}"
    assert slot.live is not None, "loaded above or by the session that held the lock"
    return slot.live


def loading_report(atlas: Atlas) -> str:
    """How long this server process waited for the live model, by stage (plain text)."""
    slot = _slot(LiveSpecs.from_atlas_meta(atlas.meta))
    parts = ", ".join(f"{name.split(' (')[0]} {seconds:.1f} s" for name, seconds in slot.stages)
    return f"ready {slot.ready_seconds:.1f} s after this server's first request for it ({parts})"


def require_live(atlas: Atlas) -> LiveModel:
    """The live model, with a caption saying where it runs; otherwise the reason, and the page stops."""
    live = load_for(atlas)
    if isinstance(live, str):
        st.warning(
            f"This page runs the model, and it is disabled for this atlas: {md(live)}. Browsing still works.",
            icon=":material/pause_circle:",
        )
        st.stop()
    changed = [
        name for name, info in _atlas_hashes(atlas).items() if name in live.sae_hashes and live.sae_hashes[name] != info
    ]
    device = live.device.upper() if live.device.startswith("cuda") else live.device
    st.caption(f"Live model on **{device}** · {len(live.saes)} SAEs · {md(loading_report(atlas))}")
    if live.model_hash != atlas.meta["model"]["content_hash"] or changed:
        st.warning(
            "The model or SAEs on disk are not the ones this atlas was built from "
            f"({', '.join(md(name) for name in changed) or 'model'}): the atlas's statistics may not describe what runs here."
        )
    return live


def _atlas_hashes(atlas: Atlas) -> dict[str, str]:
    return {info["name"]: info["content_hash"] for info in atlas.meta["saes"]}
