"""What every page does first: page config, sign-in (the signed-in user is the reviewer of every
edit), the read-only banner, and the atlas in use (from the URL, chosen in the sidebar, among those
the user may open)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from analysis.atlas.reader import AtlasError
from analysis.errors import SAEscopeError
from analysis.paths import DEMO_ATLAS
from dashboard.shell.identity import ActingStore, Identity, visible_atlases
from dashboard.shell.plain_text import md, option
from dashboard.shell.settings import Settings, load_settings
from dashboard.shell.signin import current_identity, sign_out
from dashboard.shell.workspace import Atlas, Workspace

DEMO_KEY = "demo"


@st.cache_resource(show_spinner=False)
def _workspace(settings: Settings) -> Workspace:
    return Workspace(settings)


@dataclass(frozen=True)
class PageContext:
    workspace: Workspace
    atlas: Atlas
    atlas_key: str
    read_only: bool  # the server is read-only, or the user's role may not write
    reviewer: str  # the signed-in user's name when they may write, else empty
    user: Identity
    store: ActingStore  # writes as the signed-in user; read through workspace.store

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
    except SAEscopeError as error:  # settings, user data
        st.error(md(error))
        st.stop()
    for notice in settings.notices:
        st.caption(notice)
    user = current_identity(settings, workspace.store)
    _signed_in_sidebar(user)
    read_only = settings.read_only or not user.at_least("reviewer")
    if settings.read_only:
        st.info(
            "Read-only mode: browsing only; labels, tags, notes and lists cannot be changed.", icon=":material/lock:"
        )
    elif read_only:
        st.info(
            f"Signed in as {user.role}: browsing only; labels, tags, notes and lists cannot be changed.",
            icon=":material/lock:",
        )
    everything = atlas_catalog(workspace)
    shown = visible_atlases(user, everything, workspace.store.atlas_grants())
    catalog = {key: everything[key] for key in shown}
    if not catalog:
        st.error(
            "No atlas you may open: build one with `python -m analysis precompute` and set SAESCOPE_ATLAS_DIR, "
            "or ask an admin for access."
        )
        st.stop()
    key = st.query_params.get("atlas", next(iter(catalog)))
    if key not in catalog:
        st.error(
            f"Unknown atlas '{md(key, 200)}' (or one you may not open); opening '{md(next(iter(catalog)))}' instead."
        )
        key = next(iter(catalog))
    chosen = st.sidebar.selectbox(
        "Atlas",
        list(catalog),
        index=list(catalog).index(key),
        format_func=lambda k: option(f"{k} ({catalog[k].name})"),
    )
    if chosen != key:
        st.query_params.from_dict({"atlas": chosen})
        key = chosen
    try:
        atlas = workspace.atlas(catalog[key])
    except AtlasError as error:
        st.error(md(error))
        st.stop()
    st.title(title)
    return PageContext(
        workspace=workspace,
        atlas=atlas,
        atlas_key=key,
        read_only=read_only,
        reviewer="" if read_only else user.name,
        user=user,
        store=ActingStore(workspace.store, user),
    )


def _signed_in_sidebar(user: Identity) -> None:
    """Who is signed in (every edit is recorded under this name), and a way out."""
    where = "" if user.source != "local" else " (no sign-in configured: this machine only)"
    st.sidebar.text(f"Signed in as {user.name} · {user.role}{where}")  # text: never rendered as markdown
    if user.source in ("account", "oidc") and st.sidebar.button("Sign out", key="sign_out"):
        sign_out()
        st.rerun()
