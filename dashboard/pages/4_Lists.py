"""Lists: named sets of features with a note on each (shown and exported with each feature's
automatic label, density and a link to its page), and downloads of lists, labels and the audit log
(CSV and JSON)."""

from __future__ import annotations

from urllib.parse import urlencode, urljoin

import pandas as pd
import streamlit as st

from dashboard.browse.exports import as_csv, as_json  # noqa: E402
from dashboard.browse.feature_queries import feature_summaries  # noqa: E402
from dashboard.browse.filter_controls import url_params  # noqa: E402
from dashboard.governance.evidence_button import evidence_button  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md, option, plain_frame  # noqa: E402
from dashboard.shell.url_state import text  # noqa: E402
from dashboard.userdata import UserDataError  # noqa: E402


def _downloads(title: str, frame, stem: str, key: str) -> None:
    """A row: what is downloaded, then a CSV and a JSON button (short labels that fit any width)."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**{title}**", width="content")
        st.download_button(
            "CSV",
            as_csv(frame),
            f"{stem}.csv",
            "text/csv",
            key=f"{key}_csv",
            icon=":material/table:",
            help=f"{title} as CSV, for a spreadsheet",
        )
        st.download_button(
            "JSON",
            as_json(frame),
            f"{stem}.json",
            "application/json",
            key=f"{key}_json",
            icon=":material/data_object:",
            help=f"{title} as JSON, for a script",
        )


def _described(page: PageContext, items: pd.DataFrame) -> pd.DataFrame:
    """A list's items with the URL of each feature's page, its density and automatic label (empty for
    an SAE this atlas does not have), after the feature's number: the short columns first."""
    sae_of = {str(h): int(sae) for h, sae in zip(page.atlas.saes["content_hash"], page.atlas.saes["sae"])}
    keys = [(sae_of[h], int(latent)) if h in sae_of else None for h, latent in zip(items["sae_hash"], items["latent"])]
    summaries = feature_summaries(page.workspace, page.atlas, [key for key in keys if key is not None])
    found = [summaries.get(key) if key is not None else None for key in keys]
    here = st.context.url or ""
    described = items.copy()
    at = list(described.columns).index("latent") + 1
    described.insert(at, "automatic_label", [f.label if f is not None else "" for f in found])
    described.insert(at, "density", [f.density if f is not None else None for f in found])
    links = [
        urljoin(here, "Feature?" + urlencode(page.feature_params(*key))) if key is not None and key in summaries else ""
        for key in keys
    ]
    described.insert(at, "link", links)
    return described


def _create_list(page: PageContext) -> None:
    with st.form("create_list", clear_on_submit=True):
        name = st.text_input("New list name")
        description = st.text_input("What the list is for")
        if st.form_submit_button("Create list", disabled=page.read_only):
            try:
                created = page.store.create_list(name, description)
            except UserDataError as error:
                st.error(md(error))
            else:
                st.query_params["list"] = created.name
                st.rerun()


def _show_list(page: PageContext, name: str) -> None:
    store = page.workspace.store
    items = _described(page, store.list_frame(name))
    st.caption(f"{len(items)} features")
    hashes = dict(zip(page.atlas.saes["content_hash"], page.atlas.saes["sae"]))
    selection = st.dataframe(
        plain_frame(items.drop(columns=["list", "sae_hash"])),
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"list_items_{name}",
        column_config={
            "sae_name": "SAE",
            "latent": st.column_config.NumberColumn("feature", format="%d"),
            "automatic_label": "automatic label",
            "density": st.column_config.NumberColumn(format="%.2e"),
            "link": st.column_config.LinkColumn("page", display_text="open"),
            "label": "reviewer label",
        },
    )
    rows = selection.selection.rows if selection else []
    if rows:
        item = items.iloc[rows[0]]
        if item["sae_hash"] in hashes:
            st.switch_page(
                "pages/2_Feature.py",
                query_params=page.feature_params(int(hashes[item["sae_hash"]]), int(item["latent"])),
            )
        st.warning(f"{md(item['sae_name'])} is not in this atlas; open an atlas built from it to see the feature.")
    if len(items) and not page.read_only:
        with st.form(f"remove_from_{name}"):
            choices = [f"{sae_name} #{latent}" for sae_name, latent in zip(items["sae_name"], items["latent"])]
            chosen = st.selectbox("Feature", choices, format_func=option)
            if st.form_submit_button("Remove from the list"):
                item = items.iloc[choices.index(chosen)]
                page.store.remove_from_list(name, item["sae_hash"], int(item["latent"]))
                st.rerun()
    _downloads("This list", items, f"list-{name}", f"list_{name}")
    evidence_button(page, name)


page = open_page("Lists")
lists = page.workspace.store.lists()
left, right = st.columns([1, 2], gap="large")
with left:
    _create_list(page)
    if not lists.empty:
        st.dataframe(plain_frame(lists), hide_index=True, key="all_lists")
with right:
    if lists.empty:
        st.info("No lists yet. Create one, then add features to it from their feature pages.")
    else:
        names = list(lists["name"])
        wanted = text(url_params(), "list", names[0])
        name = st.selectbox("List", names, index=names.index(wanted) if wanted in names else 0, format_func=option)
        assert name is not None, "a selectbox over the (non-empty) lists with an index always has one chosen"
        st.query_params["list"] = name
        _show_list(page, name)

st.header("Exports")
store = page.workspace.store
_downloads("Labels", store.annotations_frame(), "saescope-labels", "labels")
_downloads("Audit log", store.audit_frame(), "saescope-audit-log", "audit")
