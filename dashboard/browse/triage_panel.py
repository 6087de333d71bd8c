"""The triage form for one feature (status, label, tags, notes, confidence) with save and undo,
shared by the Feature and Triage pages; every save goes through the user store, which audits it."""

from __future__ import annotations

import streamlit as st

from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, option
from dashboard.userdata import CONFIDENCES, STATUSES, Annotation, UserDataError


def _feature_key(page: PageContext, sae: int) -> tuple[str, str]:
    row = page.atlas.sae_row(sae)
    return str(row["content_hash"]), str(row["name"])


def triage_panel(page: PageContext, sae: int, latent: int, save_label: str = "Save") -> Annotation | None:
    """Draw the form; returns the saved annotation after a save (the caller reruns or moves on)."""
    sae_hash, sae_name = _feature_key(page, sae)
    store = page.workspace.store
    current = store.annotation(sae_hash, latent)
    locked = page.read_only or not page.reviewer
    if page.read_only:
        st.caption("Read-only mode: annotations are shown, not editable.")
    elif not page.reviewer:
        st.warning("Enter your name as Reviewer in the sidebar to label features.")
    key = f"triage_{sae}_{latent}_{current.updated_at}"  # fresh widgets whenever the stored annotation changes
    vocabulary = store.tags()
    with st.form(key, border=True):
        status = st.radio("Status", STATUSES, index=STATUSES.index(current.status), horizontal=True, disabled=locked)
        label = st.text_input("Label", value=current.label, max_chars=500, disabled=locked)
        tags = st.multiselect(
            "Tags",
            vocabulary,
            default=[t for t in current.tags if t in vocabulary],
            disabled=locked,
            format_func=option,
        )
        notes = st.text_area("Notes", value=current.notes, max_chars=5000, height=80, disabled=locked)
        options = ["—", *CONFIDENCES]
        confidence = st.select_slider(
            "Confidence", options, value=current.confidence if current.confidence else "—", disabled=locked
        )
        saved = st.form_submit_button(save_label, type="primary", disabled=locked)
    changed = None
    if saved:
        try:
            changed = store.annotate(
                sae_hash,
                sae_name,
                latent,
                page.reviewer,
                status=status,
                label=label,
                tags=tags,
                notes=notes,
                confidence=None if confidence == "—" else confidence,
            )
            st.toast(f"Saved {md(sae_name)} #{latent}")
        except UserDataError as error:
            st.error(md(error))
    undo_column, tag_column = st.columns(2)
    if undo_column.button("Undo my last change", key=f"undo_{sae}_{latent}", disabled=locked):
        try:
            restored = store.undo(sae_hash, latent, page.reviewer)
        except UserDataError as error:
            st.error(md(error))
        else:
            st.toast("Undone" if restored else "Nothing of yours to undo on this feature")
            if restored:
                st.rerun()
    with tag_column.popover("New tag", disabled=locked):
        new_tag = st.text_input("Tag name", key=f"new_tag_{sae}_{latent}")
        if st.button("Add to the vocabulary", key=f"add_tag_{sae}_{latent}") and new_tag.strip():
            try:
                st.toast(f"Added tag {md(store.add_tag(new_tag, page.reviewer))}")
            except UserDataError as error:
                st.error(md(error))
    return changed
