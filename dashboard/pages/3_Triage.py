"""Triage: walk the unreviewed features of a filter one at a time, examples in view and the label
form in reach; every save is audited under the reviewer's name."""

from __future__ import annotations

import html

import streamlit as st

from dashboard.browse.examples_view import show_examples  # noqa: E402
from dashboard.browse.feature_queries import feature_view, next_in_queue, queue_progress  # noqa: E402
from dashboard.browse.filter_controls import filter_controls, url_params, write_url  # noqa: E402
from dashboard.browse.triage_panel import triage_panel  # noqa: E402
from dashboard.shell.page import open_page  # noqa: E402
from dashboard.shell.plain_text import md, visible  # noqa: E402
from dashboard.shell.url_state import integer, text  # noqa: E402

EXAMPLE_WIDTH = 16

page = open_page("Triage")
params = url_params()
with st.expander("Queue filter", expanded=not params.get("sae") and not params.get("latent")):
    flt = filter_controls(page, "triage")
reviewed, total = queue_progress(page.workspace, page.atlas, flt)
st.progress(reviewed / total if total else 1.0, text=f"{reviewed:,} of {total:,} reviewed")

current_sae, current_latent = page.atlas.sae_index(text(params, "sae")), integer(params, "latent")
if current_sae is None or current_latent is None or st.session_state.get("triage_last_filter", flt) != flt:
    following = next_in_queue(page.workspace, page.atlas, flt, None)
else:
    following = (current_sae, current_latent)
st.session_state["triage_last_filter"] = flt
if following is None:
    write_url(page, flt)
    st.success("Every feature in this queue has been reviewed." if total else "No feature matches this filter.")
    st.stop()
sae, latent = following
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
write_url(page, flt, sae=str(page.atlas.sae_row(sae)["name"]), latent=latent)
stats = view.stats
examples_column, form_column = st.columns([3, 2], gap="large")
with examples_column:
    st.subheader(md(f"{page.atlas.sae_row(sae)['name']} · feature {latent}", 80))
    st.html(
        f"<div>{html.escape(visible(stats['label'] or 'no automatic label', spaces=False))} "
        f'<span style="font-size: 0.75rem; color: #777;">(automatic)</span> · density {stats["density"]:.2e} · '
        f"max {stats['max_act']:.3f}</div>"
    )
    st.page_link(
        "pages/2_Feature.py", label="Open the full feature page", query_params=page.feature_params(sae, latent)
    )
    show_examples(view, page.atlas.token_text, EXAMPLE_WIDTH)
with form_column:
    saved = triage_panel(page, sae, latent, save_label="Save and next")
    if st.button("Skip", key=f"skip_{sae}_{latent}"):
        saved = True
if saved:
    following = next_in_queue(page.workspace, page.atlas, flt, (sae, latent))
    if following is not None:
        write_url(page, flt, sae=str(page.atlas.sae_row(following[0])["name"]), latent=following[1])
    st.rerun()
