"""Saved and shared graphs: save the graph on screen with its reader state and thresholds to the
user store (kind 'graph'), list, reopen and delete saved graphs, and export / import node-link and
Neuronpedia graph JSON. Reopening and importing need no model: the pruned graph is in the record."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import streamlit as st

from dashboard.graph.files import GraphFileError, node_link_json, other_weights, read_graph_file, unknown_transcoders
from dashboard.graph.state import GraphState
from dashboard.live.experiment_table import chosen_experiment
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md
from dashboard.userdata import UserDataError

RECORD_FORMAT = "saescope-graph/1"


@dataclass
class LoadedGraph:
    """A graph opened from the store or a file: drawn as it was pruned, thresholds fixed."""

    graph: nx.DiGraph
    origin: str


def graph_record(graph: nx.DiGraph, state: GraphState, view: dict) -> dict:
    """What a saved graph holds: the pruned graph as node-link data, the reader's state and the view
    settings (thresholds, max feature nodes, density filter)."""
    return {
        "format": RECORD_FORMAT,
        "graph": json.loads(node_link_json(graph, GraphState())),
        "state": state.to_dict(),
        "view": view,
    }


def open_loaded(graph: nx.DiGraph, state: GraphState, origin: str) -> None:
    """Show ``graph`` instead of a computed one, with its state."""
    st.session_state["graph_loaded"] = LoadedGraph(graph, origin)
    st.session_state["graph_state"] = state
    st.session_state["graph_state_for"] = origin
    st.session_state.pop("graph_request", None)


def save_form(page: PageContext, graph: nx.DiGraph, state: GraphState, view: dict, model_hash: str, title: str) -> None:
    if page.read_only:
        st.caption("Read-only mode: graphs cannot be saved.")
        return
    with st.form("graph_save_form"):
        cols = st.columns([4, 1], vertical_alignment="bottom")
        title = cols[0].text_input("Title", value=title[:80], max_chars=200)
        if cols[1].form_submit_button("Save graph"):
            try:
                saved = page.store.record_experiment("graph", title, model_hash, graph_record(graph, state, view))
            except UserDataError as error:
                st.error(md(error))
            else:
                st.success(f"Saved as graph {saved[:8]} under {md(page.user.name)}.")


def saved_graphs(page: PageContext) -> None:
    """The saved graphs, newest first; select one to open or delete it."""
    chosen = chosen_experiment(
        page,
        "graph",
        "graph_library",
        {"id": "graph"},
        "No saved graphs yet.",
        "Select a saved graph to open or delete it.",
    )
    if chosen is None:
        return
    cols = st.columns([1, 1, 5])
    if cols[0].button("Open", key="graph_open_saved"):
        try:
            record = page.workspace.store.experiment(chosen)["record"]
            graph, _ = read_graph_file(json.dumps(record["graph"]).encode())
        except (UserDataError, GraphFileError, KeyError) as error:
            st.error(f"This saved graph cannot be opened: {md(error)}")
            return
        open_loaded(graph, GraphState.from_dict(record.get("state", {})).restricted_to(graph), f"saved {chosen[:8]}")
        st.rerun()
    if cols[1].button("Delete", key="graph_delete_saved", disabled=page.read_only):
        try:
            page.store.delete_experiment(chosen)
        except UserDataError as error:
            st.error(md(error))
            return
        st.session_state.pop("graph_library", None)
        st.rerun()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "graph"


def export_buttons(graph: nx.DiGraph, state: GraphState, neuronpedia: Callable[[], str] | None) -> None:
    """Downloads of the graph on screen (Neuronpedia JSON only for a graph computed here)."""
    slug = _slug(graph.graph.get("prompt", ""))
    cols = st.columns(2)
    cols[0].download_button(
        "networkx node-link JSON", node_link_json(graph, state), file_name=f"{slug}.json", mime="application/json"
    )
    if neuronpedia is not None:
        cols[1].download_button(
            "Neuronpedia graph JSON", neuronpedia, file_name=f"{slug}-neuronpedia.json", mime="application/json"
        )
    else:
        cols[1].caption("Neuronpedia JSON is written from a graph computed here (compute it again to export).")


def import_form(page: PageContext) -> None:
    """Open a node-link or Neuronpedia graph JSON file (no model needed)."""
    upload = st.file_uploader("Import a graph (node-link or Neuronpedia JSON)", type=["json"], key="graph_upload")
    if upload is None or st.session_state.get("graph_upload_done") == upload.file_id:
        return
    try:
        graph, state = read_graph_file(upload.getvalue())
    except GraphFileError as error:
        st.error(f"Cannot import {md(upload.name, 80)}: {md(error)}")
        return
    st.session_state["graph_upload_done"] = upload.file_id
    open_loaded(graph, state, f"imported {upload.name}")
    st.rerun()


def unknown_model_warning(page: PageContext, graph: nx.DiGraph) -> None:
    """Say when a saved or imported graph comes from weights this atlas does not describe."""
    unknown = unknown_transcoders(graph, list(page.atlas.saes["name"]))
    if unknown:
        st.warning(
            "This graph's features come from transcoders this atlas does not have ("
            + ", ".join(md(name, 60) for name in unknown)
            + "): it is drawn, but its features have no examples or pages here."
        )
    differ = other_weights(graph, page.atlas.meta)
    if differ:
        st.warning(
            "This graph was computed with other weights than this atlas was built from ("
            + ", ".join(md(name, 60) for name in differ)
            + "): the examples shown for its features may not describe them."
        )
