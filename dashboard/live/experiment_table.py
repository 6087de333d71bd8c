"""The recorded experiments of one kind (steering runs, saved graphs) as a table, newest first, one
selectable row: the Steer history and the Graph page's saved graphs both start from it."""

from __future__ import annotations

import streamlit as st

from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import plain_frame

ROWS = 200


def chosen_experiment(
    page: PageContext, kind: str, key: str, names: dict[str, str], empty: str, hint: str
) -> str | None:
    """The id of the selected experiment, or None (with ``empty`` or ``hint`` said); ``names``
    titles the title and id columns."""
    recorded = page.workspace.store.experiments(kind, limit=ROWS)
    if recorded.empty:
        st.caption(empty)
        return None
    shown = recorded.assign(
        created_at=recorded["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S"), id=recorded["id"].str[:8]
    )
    selection = st.dataframe(
        plain_frame(shown[["created_at", "reviewer", "title", "id"]]),  # pyright: ignore[reportArgumentType]  (pandas types a column list selection as a union with Series)
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=key,
        column_config={"created_at": "when", **names},
    )
    rows = selection.selection.rows if selection else []
    if not rows:
        st.caption(hint)
        return None
    return str(recorded.iloc[rows[0]]["id"])
