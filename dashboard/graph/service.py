"""Attribution graphs for the Graph page: the setup check (one transcoder per layer) and the
computed graphs, cached for the server's life by what determines them (model and transcoder
hashes, prompt, target, settings), so reopening a link or moving a slider never recomputes.

Why a module of its own: only the Graph page imports circuit-tracer, and torch stays out of the
browse pages."""

from __future__ import annotations

import duckdb
import networkx as nx
import streamlit as st

from analysis.graphs import AttributionResult, GraphSettings, GraphSetupError, GraphTarget, compute_graph, to_networkx
from analysis.graphs.replacement import layer_transcoders
from analysis.graphs.transcoder_sets import layer_names
from analysis.live_model import LiveModel, LiveSpecs
from dashboard.live.service import load_for, load_specs
from dashboard.shell.workspace import Atlas, Workspace

ADD_TRANSCODERS = (
    "To draw graphs, build an atlas whose SAEs include one transcoder per layer of the model, all reading and "
    "writing the same hooks of their layer (e.g. `blocks.L.ln2.hook_normalized` → `blocks.L.hook_mlp_out`): "
    "`python -m analysis precompute --sae TRANSCODERS_FOLDER --tokens N --out ATLAS.duckdb`, with the "
    "transcoders in sae-lens format (the demo's `data/demo/saes` has transcoder-L0…L3)."
)


def graph_model(atlas: Atlas, transcoders: str | None) -> LiveModel | str:
    """The live model graphs run on: the atlas's, plus circuit-tracer's transcoder set or CLT named
    by the ``graph_transcoders`` setting when there is one (loaded once per server)."""
    if transcoders is None:
        return load_for(atlas)
    specs = LiveSpecs.from_atlas_meta(atlas.meta)
    return load_specs(LiveSpecs(model=specs.model, saes=(*specs.saes, transcoders)))


def setup_problem(live: LiveModel, atlas: Atlas) -> str | None:
    """Why this atlas's SAEs cannot make attribution graphs (what is missing), or None. The atlas's
    SAEs are what count: its labels and examples are what the graph's features are read with
    (unless the settings name circuit-tracer transcoders, which then make the graphs)."""
    if live.circuit_transcoders is not None:
        return None
    try:
        layer_transcoders(live, {info["name"] for info in atlas.meta["saes"]})
    except GraphSetupError as error:
        return str(error)
    return None


def cache_key(live: LiveModel, prompt: str, target: GraphTarget, settings: GraphSettings) -> tuple:
    """What a graph depends on: the model and transcoder weights (by hash), the input and the knobs."""
    names = (
        layer_names(live.circuit_transcoders)
        if live.circuit_transcoders is not None
        else [loaded.name for loaded in layer_transcoders(live)]
    )
    transcoders = tuple(live.sae_hashes[name] for name in names)
    return live.model_hash, transcoders, prompt, target, settings


@st.cache_resource(show_spinner=False, max_entries=32)
def _computed(key: tuple, _live: LiveModel) -> AttributionResult:
    _, _, prompt, target, settings = key
    return compute_graph(_live, prompt, target, settings)


def cached_graph(live: LiveModel, key: tuple) -> AttributionResult:
    """The graph of a ``cache_key``, computed on first request and kept for the server's life
    (LiveInputError, LiveModelBusy and GraphSetupError pass through and are not cached)."""
    return _computed(key, live)


@st.cache_resource(show_spinner=False, max_entries=64)
def _pruned(
    key: tuple,
    node_threshold: float,
    edge_threshold: float,
    atlas_file: tuple[str, float],
    _atlas: duckdb.DuckDBPyConnection,
    _result: AttributionResult,
):
    return to_networkx(_result, node_threshold, edge_threshold, _atlas)


def pruned_graph(
    key: tuple,
    result: AttributionResult,
    node_threshold: float,
    edge_threshold: float,
    workspace: Workspace,
    atlas: Atlas,
) -> nx.DiGraph:
    """The pruned graph of the result cached under ``key``, its features labelled from the atlas
    through the workspace's connection; cached too (per atlas file and version) because every
    click redraws it. Callers get a copy, so what they add to it never reaches the cache."""
    atlas_file = (str(atlas.path), atlas.modified)
    return _pruned(key, node_threshold, edge_threshold, atlas_file, workspace.atlas_cursor(atlas), result).copy()
