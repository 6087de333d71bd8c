"""What every page does first: page config, the read-only banner, the atlas in use (from the URL,
chosen in the sidebar), and the reviewer's name for edits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from analysis.atlas.reader import AtlasError
from analysis.paths import DEMO_ATLAS
from dashboard.shell.settings import Settings, load_settings
from dashboard.shell.workspace import Atlas, Workspace
from dashboard.userdata import UserDataError

DEMO_KEY = "demo"


@st.cache_resource(show_spinner=False)
def _workspace(settings: Settings) -> Workspace:
    return Workspace(settings)


@dataclass(frozen=True)
class PageContext:
    workspace: Workspace
    atlas: Atlas
    atlas_key: str
    read_only: bool
    reviewer: str  # empty until the user gives a name

    def link_params(self, **extra: str | int | list[str]) -> dict[str, str | list[str]]:
        """Query parameters for a link that keeps this atlas."""
        params: dict[str, str | list[str]] = {"atlas": self.atlas_key}
        params.update({key: value if isinstance(value, list) else str(value) for key, value in extra.items()})
        return params

    def feature_params(self, sae: int, latent: int) -> dict[str, str | list[str]]:
        return self.link_params(sae=str(self.atlas.sae_row(sae)["name"]), latent=latent)


def atlas_catalog(workspace: Workspace) -> dict[str, Path]:
    """URL key -> atlas file: ``demo`` for the demo atlas, the file stem for the others."""
    catalog: dict[str, Path] = {}
    for path in workspace.available_atlases():
        key = DEMO_KEY if path == DEMO_ATLAS else path.stem
        while key in catalog:
            key += "-2"
        catalog[key] = path
    return catalog


def open_page(title: str) -> PageContext:
    """Set up the page; on anything unreadable show one clear message and stop the page."""
    st.set_page_config(page_title=f"{title} · SAEscope", layout="wide")
    try:
        settings = load_settings()
        workspace = _workspace(settings)
    except (ValueError, UserDataError) as error:
        st.error(str(error))
        st.stop()
    for notice in settings.notices:
        st.caption(notice)
    if settings.read_only:
        st.info("Read-only mode: browsing only; labels, tags, notes and lists cannot be changed.", icon="🔒")
    catalog = atlas_catalog(workspace)
    if not catalog:
        st.error("No atlas to open: build one with `python -m analysis precompute` and set SAESCOPE_ATLAS_DIR.")
        st.stop()
    key = st.query_params.get("atlas", next(iter(catalog)))
    if key not in catalog:
        st.error(f"Unknown atlas {key!r}; opening {next(iter(catalog))!r} instead.")
        key = next(iter(catalog))
    chosen = st.sidebar.selectbox(
        "Atlas", list(catalog), index=list(catalog).index(key), format_func=lambda k: f"{k} ({catalog[k].name})"
    )
    if chosen != key:
        st.query_params.from_dict({"atlas": chosen})
        key = chosen
    try:
        atlas = workspace.atlas(catalog[key])
    except AtlasError as error:
        st.error(str(error))
        st.stop()
    reviewer = "" if settings.read_only else _reviewer_input()
    st.title(title)
    return PageContext(workspace=workspace, atlas=atlas, atlas_key=key, read_only=settings.read_only, reviewer=reviewer)


def _reviewer_input() -> str:
    """The reviewer's name, kept in ``st.session_state["reviewer"]`` across pages (Streamlit
    forgets a widget's own state when another page is shown)."""
    if "reviewer_name" not in st.session_state:
        st.session_state["reviewer_name"] = st.session_state.get("reviewer", "")
    name = st.sidebar.text_input(
        "Reviewer", key="reviewer_name", help="Every edit is recorded under this name in the audit log."
    )
    st.session_state["reviewer"] = name
    return name.strip()
