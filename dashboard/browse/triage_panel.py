"""The triage form for one feature (status, label, tags, notes, confidence) with save and undo,
shared by the Feature and Triage pages; every save goes through the user store as the signed-in
user, which audits it.

No silent loss: the form remembers the version of the feature it opened on (``base``), and a save
is refused by the store when somebody changed the feature since (:class:`EditConflict`). The user's
typed values stay in the form; the panel shows who changed what and lets them overwrite with theirs
or keep the other's. Widgets have stable keys, so another session's save never resets the form.
"""

from __future__ import annotations

import streamlit as st

from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, option
from dashboard.userdata import CONFIDENCES, STATUSES, Annotation, EditConflict, UserDataError

NO_CONFIDENCE = "—"
CONFIDENCE, CONFIDENCE_OPTIONS = "Confidence", [NO_CONFIDENCE, *CONFIDENCES]


def _feature_key(page: PageContext, sae: int) -> tuple[str, str]:
    row = page.atlas.sae_row(sae)
    return str(row["content_hash"]), str(row["name"])


def _open_form(prefix: str, annotation: Annotation, vocabulary: list[str]) -> None:
    """Fill the form's widgets with ``annotation`` and remember it as the version the form is based on."""
    state = st.session_state
    state[f"{prefix}_base"] = annotation
    state[f"{prefix}_status"] = annotation.status
    state[f"{prefix}_label"] = annotation.label
    state[f"{prefix}_tags"] = [t for t in annotation.tags if t in vocabulary]
    state[f"{prefix}_notes"] = annotation.notes
    state[f"{prefix}_confidence"] = annotation.confidence or NO_CONFIDENCE
    state.pop(f"{prefix}_conflict", None)
    state.pop(f"{prefix}_reload", None)


def _typed(prefix: str) -> dict:
    """The values in the form as last submitted (the user's, kept through a conflict)."""
    state = st.session_state
    confidence = state[f"{prefix}_confidence"]
    return {
        "status": state[f"{prefix}_status"],
        "label": state[f"{prefix}_label"],
        "tags": state[f"{prefix}_tags"],
        "notes": state[f"{prefix}_notes"],
        "confidence": None if confidence == NO_CONFIDENCE else confidence,
    }


def _save(page: PageContext, prefix: str, sae_hash: str, sae_name: str, latent: int, expected) -> Annotation | None:
    """Save the form against ``expected``; on a conflict keep it for the user to resolve."""
    try:
        saved = page.store.annotate(sae_hash, sae_name, latent, expected=expected, **_typed(prefix))
    except EditConflict as conflict:
        st.session_state[f"{prefix}_conflict"] = conflict
        return None
    except UserDataError as error:
        st.error(str(error))
        return None
    st.session_state[f"{prefix}_base"] = saved
    st.session_state.pop(f"{prefix}_conflict", None)
    st.session_state[f"{prefix}_flash"] = f"Saved feature #{latent} as {page.user.name}."  # names are [A-Za-z0-9._@+-]
    st.toast(f"Saved {sae_name} #{latent}")
    return saved


def _conflict_panel(page: PageContext, prefix: str, sae_hash: str, sae_name: str, latent: int) -> Annotation | None:
    """Who changed what since the form opened, and the user's choice: overwrite, or keep theirs."""
    conflict: EditConflict = st.session_state[f"{prefix}_conflict"]
    st.warning(
        "Not saved yet: this feature changed after you opened it. Your values are still in the form.",
        icon=":material/warning:",
    )
    st.text(str(conflict))  # names and values as plain text, never markdown
    if len(conflict.changes):
        st.dataframe(
            conflict.changes[["changed_at", "reviewer", "action", "field", "old_value", "new_value"]], hide_index=True
        )
    mine, theirs = st.columns(2)
    if mine.button("Overwrite with mine", key=f"{prefix}_overwrite", type="primary"):
        return _save(page, prefix, sae_hash, sae_name, latent, conflict.current.updated_at)
    if theirs.button("Keep theirs", key=f"{prefix}_keep"):
        st.session_state[f"{prefix}_reload"] = True
        st.rerun()
    return None


# The Triage page's keys (Streamlit's own button shortcuts): a status key saves with that status and
# moves on; plain keys act only when the cursor is not in a text field, Ctrl+Enter works in one too.
STATUS_KEYS = {status: str(number) for number, status in enumerate(STATUSES[1:], start=1)}
SAVE_AND_NEXT_KEY = "Ctrl+Enter"


def _choose_status(prefix: str, status: str) -> None:
    """A status button's click: the form saves with this status (set before the script reads it)."""
    st.session_state[f"{prefix}_status"] = status


def _details(prefix: str, vocabulary: list[str], locked: bool, notes_height: int) -> None:
    st.multiselect("Tags", vocabulary, key=f"{prefix}_tags", disabled=locked, format_func=option)
    st.text_area("Notes", key=f"{prefix}_notes", max_chars=5000, height=notes_height, disabled=locked)
    st.select_slider(CONFIDENCE, CONFIDENCE_OPTIONS, key=f"{prefix}_confidence", disabled=locked)


def _form(prefix: str, vocabulary: list[str], locked: bool, save_label: str, quick: bool) -> bool:
    """The form's widgets; True when it was submitted. ``quick`` (Triage) keeps status, label and the
    save buttons in view beside the examples at 1280x800 (tags, notes and confidence fold away, open
    when the feature has any) and adds a save button per status, each with its number key."""
    state = st.session_state
    with st.form(prefix, border=True):
        st.radio("Status", STATUSES, key=f"{prefix}_status", horizontal=True, disabled=locked)
        st.text_input("Label", key=f"{prefix}_label", max_chars=500, disabled=locked)
        if not quick:
            _details(prefix, vocabulary, locked, notes_height=80)
            return st.form_submit_button(save_label, type="primary", disabled=locked)
        filled = state[f"{prefix}_tags"] or state[f"{prefix}_notes"] or state[f"{prefix}_confidence"] != NO_CONFIDENCE
        with st.expander("Tags, notes, confidence", expanded=bool(filled)):
            _details(prefix, vocabulary, locked, notes_height=68)
        with st.container(horizontal=True, gap="small"):
            submitted = st.form_submit_button(save_label, type="primary", disabled=locked, shortcut=SAVE_AND_NEXT_KEY)
            for status, key in STATUS_KEYS.items():
                submitted |= st.form_submit_button(
                    status.capitalize(),
                    key=f"{prefix}_as_{status}",
                    help=f"Save as {status} and go to the next feature",
                    disabled=locked,
                    shortcut=key,
                    on_click=_choose_status,
                    args=(prefix, status),
                )
        return submitted


def new_tag_popover(page: PageContext, where, sae: int, latent: int) -> None:
    """Add a tag to the vocabulary (it is then offered in every form)."""
    with where.popover("New tag", disabled=page.read_only):
        new_tag = st.text_input("Tag name", key=f"new_tag_{sae}_{latent}")
        if st.button("Add to the vocabulary", key=f"add_tag_{sae}_{latent}") and new_tag.strip():
            try:
                st.toast(f"Added tag {md(page.store.add_tag(new_tag))}")
            except UserDataError as error:
                st.error(md(error))


def triage_panel(
    page: PageContext, sae: int, latent: int, save_label: str = "Save", quick: bool = False
) -> Annotation | None:
    """Draw the form; returns the saved annotation after a save (the caller reruns or moves on).

    ``quick`` is the Triage page's compact form with a save button (and key) per status; its undo
    follows the reviewer across features, so the page draws it and this panel leaves it out."""
    sae_hash, sae_name = _feature_key(page, sae)
    store = page.workspace.store
    current = store.annotation(sae_hash, latent)
    vocabulary = store.tags()
    prefix = f"triage_{sae}_{latent}"
    if st.session_state.get(f"{prefix}_reload") or f"{prefix}_status" not in st.session_state:
        _open_form(prefix, current, vocabulary)
    base: Annotation = st.session_state[f"{prefix}_base"]
    locked = page.read_only
    if locked:
        st.caption(f"{page.user.name} ({page.user.role}): annotations are shown, not editable.")
    if flash := st.session_state.pop(f"{prefix}_flash", None):
        st.success(flash)
    if current.updated_at != base.updated_at and f"{prefix}_conflict" not in st.session_state:
        st.info("This feature changed after you opened it; saving will show you what changed and let you choose.")
    submitted = _form(prefix, vocabulary, locked, save_label, quick)
    changed = _save(page, prefix, sae_hash, sae_name, latent, base.updated_at) if submitted else None
    if f"{prefix}_conflict" in st.session_state:
        changed = _conflict_panel(page, prefix, sae_hash, sae_name, latent) or changed
    if quick:
        return changed
    undo_column, tag_column = st.columns(2)
    if undo_column.button("Undo my last change", key=f"undo_{sae}_{latent}", disabled=locked):
        try:
            restored = page.store.undo(sae_hash, latent)
        except UserDataError as error:
            st.error(md(error))
        else:
            st.toast("Undone" if restored else "Nothing of yours to undo on this feature")
            if restored:
                st.session_state[f"{prefix}_reload"] = True
                st.rerun()
    new_tag_popover(page, tag_column, sae, latent)
    return changed
