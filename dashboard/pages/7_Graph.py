"""Graph: the attribution graph of a prompt (circuit-tracer on the atlas's per-layer transcoders),
pruned by the reader's thresholds, drawn by token position and layer; click a node for its edges,
top inputs and outputs and examples, pin nodes into a subgraph with named supernodes and labels,
intervene on features and supernodes, save, export and import. The URL holds the prompt, target,
thresholds, pins, supernodes, labels, the selected node and the subgraph switch, so a copied link
reopens the same view. Saved and imported graphs open without the model."""

from __future__ import annotations

import math
from functools import partial

import networkx as nx
import streamlit as st

from dashboard.live.model_stack import import_model_stack

import_model_stack()  # before the imports below: one session at a time (see model_stack)

from analysis.graphs import AttributionResult, GraphSettings, GraphSetupError, GraphTarget  # noqa: E402
from analysis.live_model import LiveInputError, LiveModel, LiveModelBusy  # noqa: E402
from dashboard.browse.filter_controls import url_params  # noqa: E402
from dashboard.graph.chart import graph_chart  # noqa: E402
from dashboard.graph.files import neuronpedia_json  # noqa: E402
from dashboard.graph.library import (  # noqa: E402
    LoadedGraph,
    export_buttons,
    import_form,
    save_form,
    saved_graphs,
    unknown_model_warning,
)
from dashboard.graph.panels import intervention_panel, node_name, node_panel, pins_editor, take_goto  # noqa: E402
from dashboard.graph.service import (  # noqa: E402
    ADD_TRANSCODERS,
    cache_key,
    cached_graph,
    graph_model,
    pruned_graph,
    setup_problem,
)
from dashboard.graph.state import GraphState, from_url, state_params, subgraph  # noqa: E402
from dashboard.graph.view import MAX_DRAWN_NODES, filtered, graph_figure, hover_edges  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md  # noqa: E402
from dashboard.shell.url_state import integer, text  # noqa: E402

DEFAULT_PROMPT = "And God said, Let there be light: and there was"
TARGET_MODES = ("automatic", "a chosen token", "logit difference")
TARGET_HELP = [
    "the most likely next tokens (up to 95% probability, at most 10)",
    "one token's logit",
    "logit(token) − logit(versus)",
]
NODE_THRESHOLD, EDGE_THRESHOLD, MAX_FEATURES = (0.5, 0.95, 0.8), (0.65, 0.98, 0.98), 200
MAX_FEATURES_LIMIT = 2000


def _number_in_url(key: str, bounds: tuple[float, float, float]) -> float:
    low, high, default = bounds
    try:
        value = float(text(url_params(), key, str(default)))
    except ValueError:
        return default
    return min(max(value, low), high) if math.isfinite(value) else default


def _seed_from_url() -> None:
    """The first time the page is drawn in a session, take prompt, target and thresholds from the URL
    and compute the graph the URL describes."""
    if "graph_prompt" in st.session_state:
        return
    params = url_params()
    st.session_state["graph_prompt"] = text(params, "prompt", DEFAULT_PROMPT)
    token, versus = text(params, "token"), text(params, "versus")
    st.session_state["graph_target_mode"] = TARGET_MODES[2 if versus else 1 if token else 0]
    st.session_state["graph_token"], st.session_state["graph_versus"] = token, versus
    st.session_state["graph_node_threshold"] = _number_in_url("node_threshold", NODE_THRESHOLD)
    st.session_state["graph_edge_threshold"] = _number_in_url("edge_threshold", EDGE_THRESHOLD)
    st.session_state["graph_max_features"] = min(
        max(1, integer(params, "max_features", MAX_FEATURES) or MAX_FEATURES), MAX_FEATURES_LIMIT
    )
    st.session_state["graph_max_density"] = text(params, "max_density")
    if "prompt" in params:
        st.session_state["graph_request"] = _request()
        st.session_state["graph_url_state"] = from_url(params)
        st.session_state["graph_subgraph_only"] = text(params, "subgraph") == "1"
        if text(params, "clickedId"):
            st.session_state["graph_node"] = text(params, "clickedId")


def _request() -> tuple[str, str, str, str]:
    return (
        st.session_state["graph_prompt"],
        st.session_state["graph_target_mode"],
        st.session_state["graph_token"],
        st.session_state["graph_versus"],
    )


def _target(mode: str, token: str, versus: str) -> GraphTarget:
    if mode == TARGET_MODES[0]:
        return GraphTarget()
    if not token:
        raise LiveInputError("type the target token (with its leading space, e.g. ' light')")
    if mode == TARGET_MODES[1]:
        return GraphTarget(token=token)
    if not versus:
        raise LiveInputError("a logit difference needs the second token too (versus)")
    return GraphTarget(token=token, versus=versus)


def _prompt_form() -> None:
    with st.form("graph_prompt_form"):
        st.text_area(
            "Prompt",
            key="graph_prompt",
            height=70,
            max_chars=2000,
            help="at most 64 tokens: the graph explains the next token after it",
        )
        cols = st.columns([3, 2, 2], vertical_alignment="bottom")
        cols[0].radio("Target", TARGET_MODES, key="graph_target_mode", horizontal=True, captions=TARGET_HELP)
        cols[1].text_input("token", key="graph_token", placeholder="e.g. ' light'")
        cols[2].text_input("versus", key="graph_versus", placeholder="for a logit difference")
        if st.form_submit_button("Compute graph", type="primary"):
            st.session_state["graph_request"] = _request()
            st.session_state.pop("graph_loaded", None)


def _compute(live: LiveModel) -> tuple[tuple, AttributionResult] | None:
    """The requested graph (computed with progress shown, or from the cache), or None with a message."""
    request = st.session_state.get("graph_request")
    if request is None:
        return None
    prompt, mode, token, versus = request
    try:
        key = cache_key(live, prompt, _target(mode, token, versus), GraphSettings())
        with st.status("Computing the attribution graph…", expanded=False) as status:
            status.write("circuit-tracer attributes the top logits, then the most influential features")
            result = cached_graph(live, key)
            status.update(
                label=f"Attribution graph of {len(result.tokens)} tokens ({result.seconds:.1f} s "
                "when computed; cached for this server)",
                state="complete",
            )
    except (LiveInputError, LiveModelBusy, GraphSetupError) as error:
        st.error(md(error))
        return None
    return key, result


def _pruning_controls(fixed: bool) -> tuple[float, float, int, float | None]:
    cols = st.columns(4)
    node_threshold = cols[0].slider(
        "node threshold",
        *NODE_THRESHOLD[:2],
        key="graph_node_threshold",
        step=0.01,
        disabled=fixed,
        help="keep the nodes holding this share of the influence",
    )
    edge_threshold = cols[1].slider(
        "edge threshold",
        *EDGE_THRESHOLD[:2],
        key="graph_edge_threshold",
        step=0.01,
        disabled=fixed,
        help="keep the edges holding this share of the influence",
    )
    max_features = cols[2].number_input(
        "max feature nodes", 1, MAX_FEATURES_LIMIT, key="graph_max_features", help="the most influential are drawn"
    )
    density_text = cols[3].text_input(
        "max density",
        key="graph_max_density",
        placeholder="e.g. 0.05",
        help="hide features denser than this (densities from the atlas)",
    )
    try:
        max_density = float(density_text) if density_text.strip() else None
    except ValueError:
        st.warning(f"max density: '{md(density_text, 80)}' is not a number; ignored.")
        max_density = None
    return node_threshold, edge_threshold, int(max_features), max_density


def _scores(graph: nx.DiGraph) -> None:
    values = [
        ("replacement (full)", "replacement_score"),
        ("replacement (pruned)", "pruned_replacement_score"),
        ("completeness (full)", "completeness_score"),
        ("completeness (pruned)", "pruned_completeness_score"),
    ]
    cols = st.columns(len(values))
    for column, (title, key) in zip(cols, values):
        value = graph.graph.get(key)
        column.metric(title, "—" if value is None else f"{value:.3f}")


def _state_for(identity: str, graph: nx.DiGraph) -> GraphState:
    """The reader's pins, supernodes and labels for this graph: for the first graph of a session
    the ones its URL gave (those the graph has), new ones for another graph."""
    if st.session_state.get("graph_state_for") != identity:
        url_state = st.session_state.pop("graph_url_state", None) or GraphState()
        st.session_state["graph_state"] = url_state.restricted_to(graph)
        st.session_state["graph_state_for"] = identity
    return st.session_state["graph_state"]


def _n_layers(graph: nx.DiGraph) -> int:
    return int(max((d["layer"] for _, d in graph.nodes(data=True) if d["kind"] == "logit"), default=0))


def _take_click() -> None:
    """The node a click on the chart chose becomes the selected node, so this run draws its edges lit."""
    clicked = st.session_state["graph_chart"].get("clicked")
    if clicked:
        st.session_state["graph_node"] = clicked


def _draw(
    page: PageContext, graph: nx.DiGraph, state: GraphState, max_features: int, max_density: float | None
) -> None:
    """The figure (all or the subgraph) beside the clicked node's panel."""
    transcoders = [d.get("transcoder") for _, d in graph.nodes(data=True) if d["kind"] == "feature"]
    names = sorted({name for name in transcoders if name and page.atlas.sae_index(name) is not None})
    densities = page.workspace.latent_densities(page.atlas, names) if max_density is not None else {}
    others = sum(1 for _, d in graph.nodes(data=True) if d["kind"] != "feature")
    limit = min(max_features, max(MAX_DRAWN_NODES - others, 1))
    shown = filtered(graph, limit, max_density, densities)
    hidden = []
    if shown.hidden_beyond_max:
        hidden.append(f"{shown.hidden_beyond_max} hidden beyond the {limit} most influential")
    if shown.hidden_dense:
        hidden.append(f"{shown.hidden_dense} denser than {max_density:g}")
    drawn_features = len(transcoders) - shown.hidden_beyond_max - shown.hidden_dense
    st.caption(
        f"{graph.number_of_nodes()} nodes and {graph.number_of_edges()} edges after pruning; "
        f"{drawn_features} of {len(transcoders)} feature nodes drawn"
        + (f" ({', '.join(hidden)})" if hidden else "")
        + "."
    )
    only_pinned = st.toggle(
        "Subgraph only (pinned nodes, supernodes and logits)", key="graph_subgraph_only", disabled=not state.pins
    )
    drawn = subgraph(graph, state) if only_pinned and state.pins else shown.graph
    labels = {n: state.labels.get(n) or d.get("label") or "" for n, d in drawn.nodes(data=True)}
    choices = [*graph, *(n for n in drawn if n not in graph)]  # the subgraph's supernodes are selectable too
    take_goto()
    if st.session_state.get("graph_node") not in choices:
        st.session_state.pop("graph_node", None)
    figure = graph_figure(
        drawn,
        labels,
        list(graph.graph.get("tokens", [])),
        _n_layers(graph),
        set(state.pins),
        st.session_state.get("graph_node"),
    )
    graph_chart(figure, hover_edges(drawn), "graph_chart", _take_click)
    node = st.selectbox(
        "Node",
        choices,
        index=None,
        key="graph_node",
        placeholder="click a node in the graph, or choose one here",
        format_func=lambda n: node_name(graph, n, state),
    )
    if node is not None:
        node_panel(page, graph, drawn, node, state)
    pins_editor(graph, state)


def _write_url(
    page: PageContext,
    request: tuple | None,
    thresholds: tuple[float, float, int, float | None],
    state: GraphState | None,
) -> None:
    extra: dict[str, str] = {}
    if request is not None:
        prompt, mode, token, versus = request
        extra["prompt"] = prompt
        if mode != TARGET_MODES[0]:
            extra["token"] = token
        if mode == TARGET_MODES[2]:
            extra["versus"] = versus
    node_threshold, edge_threshold, max_features, max_density = thresholds
    extra.update(
        node_threshold=f"{node_threshold:g}", edge_threshold=f"{edge_threshold:g}", max_features=str(max_features)
    )
    if max_density is not None:
        extra["max_density"] = f"{max_density:g}"
    if request is not None and state is not None:  # a loaded graph's state lives in its file or record
        extra.update(state_params(state))
        if st.session_state.get("graph_node"):
            extra["clickedId"] = st.session_state["graph_node"]
        if st.session_state.get("graph_subgraph_only") and state.pins:
            extra["subgraph"] = "1"
    st.query_params.from_dict(page.link_params(**extra))


page = open_page("Graph")
_seed_from_url()
live = graph_model(page.atlas, page.workspace.settings.graph_transcoders)
problem = None
if isinstance(live, str):
    st.warning(
        f"Graphs cannot be computed for this atlas: {md(live)}. Saved and imported graphs still open.",
        icon=":material/pause_circle:",
    )
    live = None
elif (problem := setup_problem(live, page.atlas)) is not None:
    st.warning(
        f"This atlas's SAEs cannot make attribution graphs: {md(problem)}.\n\n{ADD_TRANSCODERS}",
        icon=":material/extension:",
    )
if live is not None and problem is None:
    st.caption(f"Live model on **{live.device}** · transcoders of every layer · graphs cached for this server")
    _prompt_form()

loaded: LoadedGraph | None = st.session_state.get("graph_loaded")
computed = _compute(live) if live is not None and problem is None and loaded is None else None
thresholds = _pruning_controls(fixed=loaded is not None)

graph: nx.DiGraph | None = None
state = GraphState()
if loaded is not None:
    graph = loaded.graph
    st.info(f"Showing the {md(loaded.origin)} graph as it was pruned; compute a graph to change its thresholds.")
    unknown_model_warning(page, graph)
    state = _state_for(loaded.origin, graph)
elif computed is not None:
    key, result = computed
    assert live is not None, "a graph is computed only with the live model"
    graph = pruned_graph(key, result, thresholds[0], thresholds[1], page.workspace, page.atlas)
    graph.graph.update(
        model_hash=live.model_hash,  # so a saved or exported graph says what it was computed with
        transcoder_hashes={name: live.sae_hashes[name] for name in result.transcoders},
    )
    state = _state_for(repr(key), graph)

if graph is not None:
    _scores(graph)
    _draw(page, graph, state, thresholds[2], thresholds[3])
_write_url(
    page,
    st.session_state.get("graph_request") if loaded is None else None,
    thresholds,
    state if graph is not None else None,
)
if graph is not None:
    if computed is not None:
        with st.expander("Intervene: ablate or scale features"):
            assert live is not None, "a graph is computed only with the live model"
            intervention_panel(live, computed[1], graph, state)
    st.subheader("Save and export")
    view = {
        "node_threshold": graph.graph.get("node_threshold"),
        "edge_threshold": graph.graph.get("edge_threshold"),
        "max_features": thresholds[2],
        "max_density": thresholds[3],
    }
    model_hash = live.model_hash if live is not None else str(page.atlas.meta["model"]["content_hash"])
    request = st.session_state.get("graph_request")
    if computed is not None:
        assert request is not None, "a graph is computed from the request in the session"
        origin = request[0]
    else:
        assert loaded is not None, "a graph shown but not computed here was loaded"
        origin = loaded.origin
    save_form(page, graph, state, view, model_hash, origin)
    neuronpedia = None
    if computed is not None:  # written when the button is pressed: it prunes again with circuit-tracer's builders
        assert live is not None, "a graph is computed only with the live model"
        neuronpedia = partial(
            neuronpedia_json,
            computed[1],
            live.tokenizer,
            "graph",
            thresholds[0],
            thresholds[1],
            page.workspace.atlas_cursor(page.atlas),
            state,
        )
    export_buttons(graph, state, neuronpedia)
st.subheader("Saved graphs")
saved_graphs(page)
import_form(page)
