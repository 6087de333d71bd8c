"""Triage: walk the unreviewed features of a filter one at a time, examples beside the label form and
its save buttons (in view without scrolling at 1280x800), with keys for each; every save is audited
under the reviewer's name.

The URL keeps the queue (the Features filter, ``dead``) apart from the feature in view (``feature``),
so a copied link reopens the same queue at the same feature. "Undo my last change" follows the
reviewer: it undoes their last save wherever it was and goes back to that feature.
"""

from __future__ import annotations

import html
from dataclasses import replace

import streamlit as st

from dashboard.browse.examples_view import show_examples  # noqa: E402
from dashboard.browse.feature_queries import FeatureFilter, feature_view, next_in_queue, queue_progress  # noqa: E402
from dashboard.browse.filter_controls import filter_controls, url_params, write_url  # noqa: E402
from dashboard.browse.token_names import token_names  # noqa: E402
from dashboard.browse.triage_panel import SAVE_AND_NEXT_KEY, STATUS_KEYS, new_tag_popover, triage_panel  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md, visible  # noqa: E402
from dashboard.shell.url_state import feature_ref, read_feature, text  # noqa: E402
from dashboard.userdata import UserDataError  # noqa: E402

EXAMPLE_WIDTH = 16
SKIP_KEY, BACK_KEY, UNDO_KEY = "S", "B", "U"
TRAIL = "triage_trail"  # the features this session moved on from, for Back
KEYS_HELP = (
    f"Keys: {STATUS_KEYS['interpretable']}–{len(STATUS_KEYS)} save with that status and go on · "
    f"{SAVE_AND_NEXT_KEY} save and next · {SKIP_KEY} skip · {BACK_KEY} back · {UNDO_KEY} undo my last change "
    f"(plain keys act when the cursor is not in a text field; {SAVE_AND_NEXT_KEY} works in one)"
)


def _go(page: PageContext, flt: FeatureFilter, feature: tuple[int, int] | None, dead: bool, trail: bool) -> None:
    """Show ``feature`` next (the queue's start when None); ``trail`` remembers the one in view for Back."""
    if trail and (here := st.session_state.get("triage_here")) is not None:
        st.session_state.setdefault(TRAIL, []).append(here)
    where = "" if feature is None else feature_ref(page.atlas, *feature)
    write_url(page, flt, feature=where, dead="1" if dead else "")
    st.rerun()


def _undo_last(page: PageContext, flt: FeatureFilter, dead: bool) -> None:
    """Undo the reviewer's last save in this atlas, and go to that feature with its form reloaded."""
    saes = dict(zip(page.atlas.saes["content_hash"], page.atlas.saes["sae"]))
    try:
        undone = page.store.undo_last(list(saes))
    except UserDataError as error:
        st.error(md(error))
        return
    if undone is None:
        st.toast("Nothing of yours to undo in this atlas")
        return
    sae_hash, latent, _ = undone
    sae = int(saes[sae_hash])
    prefix = f"triage_{sae}_{latent}"
    st.session_state[f"{prefix}_reload"] = True
    st.session_state[f"{prefix}_flash"] = f"Undid your last change, on {feature_ref(page.atlas, sae, latent)}."
    _go(page, flt, (sae, latent), dead, trail=True)


def _actions(page: PageContext, flt: FeatureFilter, dead: bool, here: tuple[int, int] | None) -> bool:
    """Skip (when a feature is in view), Back, Undo and New tag, with the keys listed; Back and Undo
    act at once. Returns whether Skip was pressed."""
    with st.container(horizontal=True, gap="small"):
        skip = here is not None and st.button("Skip", key=f"skip_{here[0]}_{here[1]}", shortcut=SKIP_KEY)
        back = st.button("Back", key="triage_back", shortcut=BACK_KEY, disabled=not st.session_state.get(TRAIL))
        undo = st.button("Undo my last change", key="triage_undo", shortcut=UNDO_KEY, disabled=page.read_only)
        if here is not None:
            new_tag_popover(page, st, *here)
    st.caption(KEYS_HELP)
    if undo:
        _undo_last(page, flt, dead)
    if back:
        _go(page, flt, st.session_state[TRAIL].pop(), dead, trail=False)
    return skip


page = open_page("Triage")
params = url_params()
st.session_state.setdefault("triage_dead", text(params, "dead") == "1")
with st.expander("Queue filter"):
    flt = filter_controls(page, "triage")
examples_column, form_column = st.columns([4, 5], gap="medium")  # the form starts at the top, in view
with examples_column:
    progress = st.empty()
    dead = st.toggle(
        "Include dead features",
        key="triage_dead",
        help="features that never fired on the corpus (no examples to judge)",
    )
flt = replace(flt, live_only=not dead)
reviewed, total = queue_progress(page.workspace, page.atlas, flt)
progress.progress(reviewed / total if total else 1.0, text=f"{reviewed:,} of {total:,} reviewed")

current = read_feature(params, page.atlas)
if current is None or st.session_state.get("triage_last_filter", flt) != flt:
    current = next_in_queue(page.workspace, page.atlas, flt, None)
st.session_state["triage_last_filter"] = flt
st.session_state["triage_here"] = current
if current is None:  # the queue is done: Back and Undo still reach the last feature
    write_url(page, flt, dead="1" if dead else "")
    st.success("Every feature in this queue has been reviewed." if total else "No feature matches this filter.")
    _actions(page, flt, dead, None)
    st.stop()
sae, latent = current
view = feature_view(page.workspace, page.atlas, sae, latent)
if view is None:  # a link naming a latent the SAE does not have
    st.error(
        f"{md(page.atlas.sae_row(sae)['name'])} has no feature {latent}: its features are numbered 0 to "
        f"{len(page.atlas.feature_rows[sae]) - 1}."
    )
    st.page_link(
        "pages/3_Triage.py", label="Start the queue at its first unreviewed feature", query_params=page.link_params()
    )
    st.stop()
write_url(page, flt, feature=feature_ref(page.atlas, sae, latent), dead="1" if dead else "")
stats = view.stats
with form_column:
    saved = triage_panel(page, sae, latent, save_label="Save and next", quick=True)
    skip = _actions(page, flt, dead, current)
with examples_column:
    st.subheader(md(f"{page.atlas.sae_row(sae)['name']} · feature {latent}", 80))
    st.html(
        f"<div>{html.escape(visible(view.label or 'no automatic label', spaces=False))} "
        f'<span style="font-size: 0.75rem; color: #777;">(automatic)</span> · density {stats["density"]:.2e} · '
        f"max {stats['max_act']:.3f}</div>"
    )
    st.page_link(
        "pages/2_Feature.py", label="Open the full feature page", query_params=page.feature_params(sae, latent)
    )
    show_examples(view, token_names(page.atlas), EXAMPLE_WIDTH)
if saved or skip:
    _go(page, flt, next_in_queue(page.workspace, page.atlas, flt, (sae, latent)), dead, trail=True)
