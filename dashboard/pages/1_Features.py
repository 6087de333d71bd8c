"""Features: every latent of the chosen SAEs, filtered, sorted and paged in DuckDB; pick a row to
open it."""

from __future__ import annotations

import streamlit as st

from dashboard.browse.feature_queries import SORTS, USEFUL_FIRST, feature_table  # noqa: E402
from dashboard.browse.filter_controls import filter_controls, url_params, write_url  # noqa: E402
from dashboard.shell.page import open_page  # noqa: E402
from dashboard.shell.plain_text import option, plain_frame  # noqa: E402
from dashboard.shell.url_state import integer, read_sort  # noqa: E402

PAGE_SIZE = 50
MAX_PAGE = 10**9  # a page number from the URL beyond this is clamped (the last page is shown)

page = open_page("Features")
params = url_params()
flt = filter_controls(page, "features")
sort_column, page_column = st.columns([3, 1])
if "features_sort" not in st.session_state:
    st.session_state["features_sort"] = read_sort(params) if "sort" in params else USEFUL_FIRST
sort = sort_column.selectbox(
    "Sort by",
    list(SORTS),
    key="features_sort",
    help="live and labelled first: features with an automatic label that fired on at least 20 tokens and on at "
    "most 10% of tokens, in feature order; then the rarer or denser ones; then those that never fired or have "
    "no label",
)
if "features_page" not in st.session_state:
    st.session_state["features_page"] = min(max(integer(params, "page", 1), 1), MAX_PAGE)
    st.session_state["features_last_query"] = (flt, sort)
if st.session_state["features_last_query"] != (flt, sort):
    st.session_state["features_page"] = 1  # a new filter or order starts at its first page
st.session_state["features_last_query"] = (flt, sort)

result = feature_table(page.workspace, page.atlas, flt, sort, st.session_state["features_page"] - 1, PAGE_SIZE)
pages = max(1, -(-result.total // PAGE_SIZE))
if st.session_state["features_page"] > pages:
    st.session_state["features_page"] = pages
    result = feature_table(page.workspace, page.atlas, flt, sort, pages - 1, PAGE_SIZE)
page_number = page_column.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, key="features_page")
write_url(page, flt, sort=sort if sort != USEFUL_FIRST else "", page=page_number if page_number > 1 else "")

st.caption(f"{result.total:,} features match · showing {len(result.rows)} · select a row to open it")
shown = result.rows.drop(columns=["sae"]).fillna({"label": "", "reviewer": ""})
selection = st.dataframe(
    plain_frame(shown),
    hide_index=True,
    width="stretch",
    height=min(38 + 35 * len(shown), 900),
    on_select="rerun",
    selection_mode="single-row",
    key="feature_table",
    column_config={
        "sae_name": "SAE",
        "latent": st.column_config.NumberColumn("feature", format="%d"),
        "density": st.column_config.NumberColumn(format="%.2e"),
        "max_act": st.column_config.NumberColumn("max act", format="%.3f"),
        "mean_act": st.column_config.NumberColumn("mean act", format="%.3f"),
        "auto_label": "automatic label",
        "label": "reviewer label",
    },
)
rows = selection.selection.rows if selection else []
if rows:
    chosen = result.rows.iloc[rows[0]]
    st.switch_page("pages/2_Feature.py", query_params=page.feature_params(int(chosen["sae"]), int(chosen["latent"])))

with st.form("open_feature"):
    cols = st.columns([2, 2, 1])
    names = list(page.atlas.saes["name"])
    sae_name = cols[0].selectbox("SAE", names, format_func=option)
    latent = cols[1].number_input("Feature number", min_value=0, step=1)
    if cols[2].form_submit_button("Open feature"):
        assert sae_name is not None, "a selectbox over the atlas's (non-empty) SAE names always has one chosen"
        sae = page.atlas.sae_index(sae_name)
        assert sae is not None, "the selectbox offers only this atlas's SAE names"
        st.switch_page("pages/2_Feature.py", query_params=page.feature_params(sae, latent))
