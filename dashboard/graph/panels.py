"""The Graph page's side panels: the clicked node (its label, pin, the reader's own label, its
strongest inputs and outputs, and a feature's top examples, collapsed, with a link to its page),
the pins and supernodes editor, and interventions on chosen features and supernodes beside what the
graph's edges predicted."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import streamlit as st

from analysis.graphs import AttributionResult
from analysis.graphs.intervention import intervene
from analysis.live_model import LiveInputError, LiveModel, LiveModelBusy
from dashboard.browse.examples_view import show_examples
from dashboard.browse.feature_queries import feature_view
from dashboard.graph.state import GraphState, GraphStateError, supernode_id
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, visible

EXAMPLE_WIDTH = 5
TOP_EDGES = 8
GOTO = "graph_goto"


def node_name(graph: nx.DiGraph, node: str, state: GraphState) -> str:
    """A node's one-line name: the reader's label, else the automatic one, else what it is."""
    supernode = node.removeprefix("supernode/")
    if node.startswith("supernode/") and supernode in state.supernodes:
        return f"supernode {visible(supernode, spaces=False)} ({len(state.supernodes[supernode])} nodes)"
    data = graph.nodes[node]
    label = state.labels.get(node) or data.get("label") or ""
    if data["kind"] == "feature":
        what = f"{data.get('transcoder') or 'L' + str(data['layer'])} #{data['latent']} @{data['position']}"
    elif data["kind"] in ("embedding", "logit"):
        what = f"{data['kind']} {visible(str(data.get('token') or ''))} @{data['position']}"
    else:
        what = f"{data['kind']} L{data['layer']} @{data['position']}"
    return f"{what} · {visible(label, spaces=False)}" if label else what


def _edge_table(graph: nx.DiGraph, edges: list[tuple[str, float]], title: str, key: str, state: GraphState) -> None:
    """The strongest ``TOP_EDGES`` of ``edges`` (other node, weight), a row click selecting the node."""
    edges = sorted(edges, key=lambda edge: -abs(edge[1]))[:TOP_EDGES]
    if not edges:
        st.caption(f"No {title.lower()} after pruning.")
        return
    nodes = [other for other, _ in edges]
    st.markdown(f"**{title}** · select a row to go there")
    event = st.dataframe(
        pd.DataFrame({"weight": [w for _, w in edges], "node": [node_name(graph, n, state) for n in nodes]}),
        hide_index=True,
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        column_config={"weight": st.column_config.NumberColumn(format="%+.3f", width="small")},
    )
    if event.selection.rows:  # the page selects it before drawing the next run (see take_goto)
        st.session_state[GOTO] = (nodes[event.selection.rows[0]], key)
        st.rerun()


def take_goto() -> None:
    """Select the node a row of an inputs / outputs table asked for (called before the node selector
    is drawn), clearing that row's selection so coming back to the node does not jump again."""
    goto = st.session_state.pop(GOTO, None)
    if goto is not None:
        st.session_state["graph_node"] = goto[0]
        st.session_state.pop(goto[1], None)


def node_panel(page: PageContext, graph: nx.DiGraph, drawn: nx.DiGraph, node: str, state: GraphState) -> None:
    """What a click on ``node`` opens (a supernode's edges are the summed ones ``drawn`` holds)."""
    source = drawn if node.startswith("supernode/") else graph
    data = source.nodes[node]
    about, inputs, outputs = st.columns([2, 2, 2])
    with about:
        st.markdown(f"**{md(node_name(graph, node, state), 120)}**")
        facts = [
            f"{key} {data[key]:.3f}"
            for key in ("activation", "influence", "probability")
            if isinstance(data.get(key), (int, float))
        ]
        st.caption(" · ".join(facts) or data["kind"])
        if data["kind"] == "supernode":
            members = [md(node_name(graph, m, state), 60) for m in data["members"] if m in graph]
            st.caption("Members: " + ", ".join(members))
        else:
            _pin_and_label(node, state)
        if data["kind"] == "feature":
            _feature_examples(page, data)
    safe = node.replace("/", "_")
    with inputs:
        incoming = [(s, w) for s, _, w in source.in_edges(node, data="weight")]
        _edge_table(graph, incoming, "Top inputs", f"graph_in_{safe}", state)
    with outputs:
        outgoing = [(t, w) for _, t, w in source.out_edges(node, data="weight")]
        _edge_table(graph, outgoing, "Top outputs", f"graph_out_{safe}", state)


def _pin_and_label(node: str, state: GraphState) -> None:
    pinned = node in state.pins
    if st.button("Unpin" if pinned else "Pin to subgraph", key="graph_pin_toggle"):
        state.unpin(node) if pinned else state.pin(node)
        st.rerun()
    with st.form("graph_label_form"):
        label = st.text_input(
            "Your label",
            value=state.labels.get(node, ""),
            max_chars=200,
            help="shown instead of the automatic label; empty restores it",
        )
        if st.form_submit_button("Set label"):
            state.set_label(node, label)
            st.rerun()


def _feature_examples(page: PageContext, data: dict) -> None:
    """A link to the feature's page and its top examples, collapsed so the editors stay in view."""
    sae = page.atlas.sae_index(str(data.get("transcoder") or ""))
    if sae is None:
        st.caption("This atlas does not have this feature's transcoder, so it has no examples here.")
        return
    st.page_link(
        "pages/2_Feature.py", label="Open the feature page", query_params=page.feature_params(sae, int(data["latent"]))
    )
    view = feature_view(page.workspace, page.atlas, sae, int(data["latent"]))
    if view is None:
        st.caption("The atlas has no such latent.")
        return
    with st.expander("Top examples"):
        show_examples(view, page.atlas.token_text, EXAMPLE_WIDTH, intervals=False)


def pins_editor(graph: nx.DiGraph, state: GraphState) -> None:
    """The pinned nodes and supernodes, and a form to group pinned nodes into a named supernode."""
    if not state.pins:
        st.caption("No pinned nodes: click a node in the graph and press Pin to build a subgraph.")
        return
    st.markdown("**Pinned:** " + ", ".join(md(node_name(graph, p, state), 60) for p in state.pins if p in graph))
    for name, members in state.supernodes.items():
        st.markdown(
            f"**Supernode {md(name, 60)}:** "
            + ", ".join(md(node_name(graph, m, state), 60) for m in members if m in graph)
        )
    with st.form("graph_supernode_form", clear_on_submit=True):
        cols = st.columns([2, 4, 1], vertical_alignment="bottom")
        name = cols[0].text_input("Supernode name", max_chars=80)
        members = cols[1].multiselect(
            "Pinned nodes to group",
            [p for p in state.pins if p in graph],
            format_func=lambda n: node_name(graph, n, state),
        )
        if cols[2].form_submit_button("Group"):
            try:
                state.group(name, members)
            except GraphStateError as error:
                st.error(md(error))
            else:
                st.rerun()


def intervention_targets(graph: nx.DiGraph, state: GraphState) -> dict[str, list[str]]:
    """What can be intervened on: each supernode (its feature members) and each feature node."""
    features = [n for n, d in graph.nodes(data=True) if d["kind"] == "feature"]
    targets = {supernode_id(name): [m for m in members if m in features] for name, members in state.supernodes.items()}
    targets = {name: members for name, members in targets.items() if members}
    return targets | {node: [node] for node in features}


def intervention_panel(live: LiveModel, result: AttributionResult, graph: nx.DiGraph, state: GraphState) -> None:
    """Ablate or scale chosen feature nodes and supernodes (a supernode scales all its feature
    members) and show the target logits and top tokens before and after, beside the change the
    graph's direct edges predicted."""
    targets = intervention_targets(graph, state)
    grouped = {m for members in state.supernodes.values() for m in members}
    default = [n for n in targets if n.startswith("supernode/")] + [
        p for p in state.pins if p in targets and p not in grouped
    ]
    signature = (tuple(state.pins), tuple((k, tuple(v)) for k, v in state.supernodes.items()))
    if st.session_state.get("graph_intervene_for") != signature:  # new pins or groups: they are the default choice
        st.session_state["graph_intervene_for"] = signature
        st.session_state["graph_intervene_features"] = default
    chosen = st.multiselect(
        "Features",
        list(targets),
        format_func=lambda n: node_name(graph, n, state),
        key="graph_intervene_features",
        help="a supernode scales all its feature members together",
    )
    cols = st.columns([2, 2, 1], vertical_alignment="bottom")
    how = cols[0].radio("How", ["ablate", "scale"], horizontal=True, key="graph_intervene_how")
    factor = cols[1].number_input(
        "scale by", -20.0, 20.0, 2.0, 0.5, key="graph_intervene_factor", disabled=how == "ablate"
    )
    if not cols[2].button("Intervene", disabled=not chosen):
        return
    nodes = list(dict.fromkeys(member for choice in chosen for member in targets[choice]))
    keys = [(graph.nodes[n]["layer"], graph.nodes[n]["position"], graph.nodes[n]["latent"]) for n in nodes]
    try:
        outcome = intervene(live, result, keys, 0.0 if how == "ablate" else float(factor))
    except (LiveInputError, LiveModelBusy) as error:
        st.error(md(error))
        return
    st.markdown("**Target logits** (demeaned, as the graph measures them)")
    st.dataframe(
        pd.DataFrame([{**row, "token": visible(row["token"])} for row in outcome.targets]),
        hide_index=True,
        key="graph_intervention_targets",
        column_config={
            "predicted": st.column_config.NumberColumn(
                "predicted by the edges", help="sum over the features of direct edge × (scale − 1)"
            )
        },
    )
    left, right = st.columns(2)
    for column, title, rows in (
        (left, "Top tokens before", outcome.top_before),
        (right, "Top tokens after", outcome.top_after),
    ):
        column.markdown(f"**{title}**")
        column.dataframe(
            pd.DataFrame([(visible(t), p) for t, p in rows], columns=["token", "probability"]), hide_index=True
        )
