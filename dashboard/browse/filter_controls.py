"""The feature filter as widgets, initialised from the URL and written back to it (Features and
Triage share it, so a queue is just a filtered table walked one feature at a time)."""

from __future__ import annotations

import streamlit as st

from dashboard.browse.feature_queries import FeatureFilter
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, option
from dashboard.shell.url_state import filter_params, read_filter
from dashboard.userdata import STATUSES


def url_params() -> dict[str, list[str]]:
    """The current query string, every key as a list (repeated keys kept)."""
    return {key: st.query_params.get_all(key) for key in st.query_params}


def _initial(key: str, value) -> None:
    """Seed a widget from the URL the first time it is drawn on this page."""
    if key not in st.session_state:
        st.session_state[key] = value


def _parsed_number(label: str, key: str, value: float | None, placeholder: str) -> float | None:
    _initial(key, "" if value is None else f"{value:g}")
    raw = st.text_input(label, key=key, placeholder=placeholder).strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        st.warning(f"{label}: '{md(raw, 80)}' is not a number; ignored.")
        return None


def filter_controls(page: PageContext, prefix: str) -> FeatureFilter:
    """Draw the filter (seeded from the URL) and return what it now says."""
    start = read_filter(url_params(), page.atlas)
    names = list(page.atlas.saes["name"])
    _initial(f"{prefix}_saes", [str(page.atlas.sae_row(i)["name"]) for i in start.saes])
    _initial(f"{prefix}_text", start.text)
    _initial(f"{prefix}_token", start.top_token)
    _initial(f"{prefix}_statuses", list(start.statuses))
    _initial(f"{prefix}_tags", list(start.tags))
    _initial(f"{prefix}_reviewer", start.reviewer)
    top = st.columns([3, 1, 1, 1])
    chosen = top[0].multiselect("SAE / layer", names, key=f"{prefix}_saes", placeholder="all SAEs", format_func=option)
    with top[1]:
        min_density = _parsed_number("Density at least", f"{prefix}_min_density", start.min_density, "e.g. 1e-4")
    with top[2]:
        max_density = _parsed_number("Density at most", f"{prefix}_max_density", start.max_density, "e.g. 0.1")
    with top[3]:
        min_max_act = _parsed_number("Max activation at least", f"{prefix}_min_max_act", start.min_max_act, "e.g. 2")
    second = st.columns([2, 1, 2, 2, 1])
    text = second[0].text_input(
        "Label or note",
        key=f"{prefix}_text",
        help="words that start words of the automatic label (all of them), or text in a reviewer's label or notes",
    )
    token = second[1].text_input("Top token", key=f"{prefix}_token", help="a token it fires on or promotes, exactly")
    statuses = second[2].multiselect("Triage status", list(STATUSES), key=f"{prefix}_statuses", placeholder="any")
    vocabulary = page.workspace.store.tags()
    st.session_state[f"{prefix}_tags"] = [t for t in st.session_state[f"{prefix}_tags"] if t in vocabulary]
    tags = second[3].multiselect("Tags", vocabulary, key=f"{prefix}_tags", placeholder="any", format_func=option)
    reviewer = second[4].text_input(
        "Last edited by",
        key=f"{prefix}_reviewer",
        placeholder="anyone",
        help="a filter: only features whose annotation this user saved last (you are who the sidebar says)",
    )
    return FeatureFilter(
        # the names are the atlas's own options, so every one has an index
        saes=tuple(i for name in chosen if (i := page.atlas.sae_index(name)) is not None),
        min_density=min_density,
        max_density=max_density,
        min_max_act=min_max_act,
        text=text.strip(),
        top_token=token,
        statuses=tuple(statuses),
        tags=tuple(tags),
        reviewer=reviewer.strip(),
    )


def write_url(context: PageContext, flt: FeatureFilter, **extra: str | int) -> None:
    """Put the atlas, the filter and page-specific state into the query string."""
    params = context.link_params(**{k: v for k, v in extra.items() if v not in ("", None)})
    params.update(filter_params(flt, context.atlas))
    if dict(url_params()) != {k: v if isinstance(v, list) else [v] for k, v in params.items()}:
        st.query_params.from_dict(params)
