"""Feature: one latent's statistics, examples, logit effects, neighbours, sources and triage."""

from __future__ import annotations

import html
from typing import NoReturn

import pandas as pd
import streamlit as st

from analysis.steering_target import SteeringTarget  # noqa: E402
from dashboard.browse import charts as charts  # noqa: E402
from dashboard.browse.examples_view import CONTEXT_WIDTHS, show_examples  # noqa: E402
from dashboard.browse.feature_queries import FeatureView, feature_view  # noqa: E402
from dashboard.browse.filter_controls import url_params  # noqa: E402
from dashboard.browse.token_names import token_names  # noqa: E402
from dashboard.browse.triage_panel import triage_panel  # noqa: E402
from dashboard.live.text_test_panel import text_test_panel  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md, option, plain_frame, visible  # noqa: E402
from dashboard.shell.url_state import integer, text  # noqa: E402
from dashboard.userdata import Annotation, UserDataError  # noqa: E402

AUDIT_ROWS_SHOWN = 20


def _chosen_feature(page: PageContext) -> tuple[int, int]:
    """The (sae, latent) in the URL, or a clear message and a way back."""
    params = url_params()
    sae_name, latent = text(params, "sae"), integer(params, "latent")
    sae = page.atlas.sae_index(sae_name)
    if sae is None or latent is None:
        names = ", ".join(md(name) for name in page.atlas.saes["name"])
        _refuse(
            page,
            f"Choose a feature: the link needs sae= (one of {names}) and latent=; got sae='{md(sae_name, 80)}', "
            f"latent='{md(text(params, 'latent'), 80)}'.",
        )
    return sae, latent


def _refuse(page: PageContext, message: str) -> NoReturn:
    """Say why this link shows no feature, offer the way back, and end the page."""
    st.error(message)
    st.page_link("pages/1_Features.py", label="Back to the feature table", query_params=page.link_params())
    st.stop()


def _labelled_tokens(tokens, values, token_text) -> pd.DataFrame:
    return pd.DataFrame({"token": [visible(token_text[t]) for t in tokens], "effect": values})


def _logit_effects(view: FeatureView, token_text: tuple[str, ...]) -> None:
    stats = view.stats
    if stats.get("top_logit_tokens") is None:
        st.caption("No logit effects: this SAE's hook does not write to the residual stream path to the unembedding.")
        return
    promoted, suppressed = st.columns(2)
    promoted.dataframe(
        _labelled_tokens(stats["top_logit_tokens"], stats["top_logit_values"], token_text),
        hide_index=True,
        column_config={"token": "promotes", "effect": st.column_config.NumberColumn(format="%+.3f")},
    )
    suppressed.dataframe(
        _labelled_tokens(stats["bottom_logit_tokens"], stats["bottom_logit_values"], token_text),
        hide_index=True,
        column_config={"token": "suppresses", "effect": st.column_config.NumberColumn(format="%+.3f")},
    )
    st.plotly_chart(
        charts.logit_histogram(stats["logit_hist"], stats["logit_hist_min"], stats["logit_hist_max"]),
        key="logit_histogram",
    )


def _neighbours(page: PageContext, view: FeatureView) -> None:
    for scope, title in (("same", "In this SAE"), ("other", "In the other SAEs")):
        rows = [row for row in view.neighbours if row["scope"] == scope]
        if rows:
            st.markdown(f"**{title}** (decoder cosine)")
        for row in rows:
            label = md(
                f"{row['other_name']} #{row['other_latent']} · {row['cosine']:.2f} · {row['other_label'] or ''}", 80
            )
            st.page_link(
                "pages/2_Feature.py",
                label=label,
                query_params=page.feature_params(row["other_sae"], row["other_latent"]),
            )


def _lists(page: PageContext, sae: int, latent: int) -> None:
    """The lists this feature is in, and (for a user who may write) a form to add it to another."""
    sae_hash = str(page.atlas.sae_row(sae)["content_hash"])
    member_of = page.workspace.store.lists_with(sae_hash, latent)
    if member_of:
        st.markdown("In lists: " + " · ".join(md(name) for name in member_of))
    else:
        st.caption("In no list yet.")
    lists = [name for name in page.workspace.store.lists()["name"] if name not in member_of]
    if page.read_only or not lists:
        return
    note_key = f"list_note_{sae}_{latent}"
    with st.form(f"add_to_list_{sae}_{latent}"):
        st.selectbox("List", lists, format_func=option, key=f"list_choice_{sae}_{latent}")
        st.text_input("Note on this feature", key=note_key)
        st.form_submit_button("Add to list", on_click=_add_to_list, args=(page, sae, latent, note_key))
    if message := st.session_state.pop(f"{note_key}_error", None):
        st.error(message)


def _add_to_list(page: PageContext, sae: int, latent: int, note_key: str) -> None:
    """The form's callback (it runs before the page, so it may empty the note after a successful add)."""
    name = st.session_state[f"list_choice_{sae}_{latent}"]
    row = page.atlas.sae_row(sae)
    try:
        page.store.add_to_list(name, str(row["content_hash"]), str(row["name"]), latent, st.session_state[note_key])
    except UserDataError as error:
        st.session_state[f"{note_key}_error"] = md(error)
    else:
        st.session_state[note_key] = ""
        st.toast(f"Added to {md(name)}")


def _annotation_text(annotation: Annotation) -> None:
    """A read-only user's view of the annotation: text, not a greyed-out form."""
    if not annotation.reviewed and not (annotation.label or annotation.notes or annotation.tags):
        st.caption("Nobody has annotated this feature yet.")
        return
    lines = [f"**Status:** {md(annotation.status)}"]
    for title, value in (
        ("Label", annotation.label),
        ("Tags", ", ".join(annotation.tags)),
        ("Notes", annotation.notes),
        ("Confidence", annotation.confidence or ""),
    ):
        if value:
            lines.append(f"**{title}:** {md(value)}")
    st.markdown("  \n".join(lines))
    if annotation.reviewer and annotation.updated_at is not None:
        st.caption(f"last changed by {md(annotation.reviewer)} on {annotation.updated_at:%Y-%m-%d %H:%M}")


page = open_page("Feature")
sae, latent = _chosen_feature(page)
sae_row = page.atlas.sae_row(sae)
view = feature_view(page.workspace, page.atlas, sae, latent)
if view is None:
    _refuse(
        page,
        f"{md(sae_row['name'])} has no feature {latent}: its features are numbered 0 to {int(sae_row['d_sae']) - 1}.",  # pyright: ignore[reportArgumentType]  (pandas types a Series item as a union with Series)
    )

stats, token_text = view.stats, token_names(page.atlas)
back, steer, previous, following = st.columns([4, 1, 1, 1])
back.subheader(md(f"{sae_row['name']} · feature {latent}", 80))
steer.page_link(
    "pages/5_Steer.py",
    label="Steer ↗",
    query_params=page.link_params(steer=SteeringTarget(str(sae_row["name"]), latent).as_text()),
)
if latent > 0:
    previous.page_link("pages/2_Feature.py", label="← previous", query_params=page.feature_params(sae, latent - 1))
if latent + 1 < int(sae_row["d_sae"]):  # pyright: ignore[reportArgumentType]  (pandas types a Series item as a union with Series)
    following.page_link("pages/2_Feature.py", label="next →", query_params=page.feature_params(sae, latent + 1))
annotation = page.workspace.store.annotation(str(sae_row["content_hash"]), latent)
reviewer_label = (
    f" · <b>{html.escape(annotation.status)}</b>: {html.escape(visible(annotation.label, spaces=False))}"
    if annotation.reviewed or annotation.label
    else ""
)
auto_label = view.label or "no automatic label"
st.html(
    f'<div style="font-size: 1rem;">{html.escape(auto_label)} '
    f'<span style="font-size: 0.75rem; color: #777; border: 1px solid #bbb; border-radius: 4px; padding: 0 4px;">'
    f"automatic</span>{reviewer_label}</div>"
)
writes = sae_row["hook_name_out"] if pd.notna(sae_row["hook_name_out"]) else sae_row["hook_name"]  # pyright: ignore[reportGeneralTypeIssues]  (notna of a scalar is a bool)
st.caption(f"reads {md(sae_row['hook_name'])} · writes {md(writes)} · {md(sae_row['architecture'])}")

cols = st.columns(4)
cols[0].metric("Density", f"{stats['density']:.3e}", help="share of non-special tokens where it fires")
cols[1].metric("Fires on", f"{int(stats['fire_count']):,} tokens")
cols[2].metric("Max activation", f"{stats['max_act']:.3f}")
cols[3].metric("Mean when firing", f"{stats['mean_act']:.3f}")

left, right = st.columns([3, 2], gap="large")
with left:
    tested = text_test_panel(page.atlas, str(sae_row["name"]), latent, float(stats["max_act"]) or 1.0)
    if int(stats["fire_count"]):
        linear, logarithmic = st.tabs(["Activations", "Log-spaced"])
        with linear:
            log_y = st.toggle("log counts", key="hist_log_y")
            st.plotly_chart(
                charts.activation_histogram(
                    stats["hist"], int(stats["range_exp"]), float(stats["max_act"]), log_y, tested
                ),
                key="activation_histogram",
            )
        with logarithmic:
            st.plotly_chart(charts.log_spaced_histogram(stats["log_hist"]), key="log_histogram")
    width_key = text(url_params(), "width", "16 tokens")
    if "context_width" not in st.session_state:
        st.session_state["context_width"] = width_key if width_key in CONTEXT_WIDTHS else "16 tokens"
    width = st.segmented_control("Context", list(CONTEXT_WIDTHS), key="context_width") or "16 tokens"
    st.query_params["width"] = width
    show_examples(view, token_text, CONTEXT_WIDTHS[width])
with right:
    if not page.read_only:
        st.subheader("Triage")
        if triage_panel(page, sae, latent) is not None:
            st.rerun()
    st.subheader("Logit effects")
    _logit_effects(view, token_text)
    st.subheader("Nearest features")
    _neighbours(page, view)
    st.subheader("Where its examples come from")
    st.dataframe(plain_frame(view.domains()), hide_index=True)
    st.subheader("Lists")
    _lists(page, sae, latent)
    if page.read_only:
        st.subheader("Annotation")
        _annotation_text(annotation)
    st.subheader("Audit log")
    history = page.workspace.store.history(str(sae_row["content_hash"]), latent)
    if history.empty:
        st.caption("No edits yet.")
    else:
        st.dataframe(  # not st.table, which reads markdown in its cells
            plain_frame(
                history[["changed_at", "reviewer", "action", "field", "old_value", "new_value"]]
                .head(AUDIT_ROWS_SHOWN)
                .assign(changed_at=lambda h: h["changed_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
            ),
            hide_index=True,
            key="audit_log",
        )
        if len(history) > AUDIT_ROWS_SHOWN:
            st.caption(
                f"{len(history) - AUDIT_ROWS_SHOWN} older entries: download the whole audit log on the Lists page."
            )
