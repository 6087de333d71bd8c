"""The Graph page's side panels: the clicked node (its label, pin, the reader's own label, and a
feature's top examples with a link to its page), the pins and supernodes editor, and interventions
on chosen features beside what the graph's edges predicted."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import streamlit as st

from analysis.graphs import AttributionResult
from analysis.graphs.intervention import intervene
from analysis.live_model import LiveInputError, LiveModel, LiveModelBusy
from dashboard.browse.examples_view import show_examples
from dashboard.browse.feature_queries import feature_view
from dashboard.graph.state import GraphState, GraphStateError
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, visible

EXAMPLE_WIDTH = 5


def node_name(graph: nx.DiGraph, node: str, state: GraphState) -> str:
    """A node's one-line name: the reader's label, else the automatic one, else what it is."""
    data = graph.nodes[node]
    label = state.labels.get(node) or data.get("label") or ""
    if data["kind"] == "feature":
        what = f"{data.get('transcoder') or 'L' + str(data['layer'])} #{data['latent']} @{data['position']}"
    elif data["kind"] in ("embedding", "logit"):
        what = f"{data['kind']} {visible(str(data.get('token') or ''))} @{data['position']}"
    else:
        what = f"{data['kind']} L{data['layer']} @{data['position']}"
    return f"{what} · {visible(label, spaces=False)}" if label else what


def node_panel(page: PageContext, graph: nx.DiGraph, node: str, state: GraphState) -> None:
    """What a click on ``node`` opens."""
    data = graph.nodes[node]
    st.markdown(f"**{md(node_name(graph, node, state), 120)}**")
    facts = [
        f"{key} {data[key]:.3f}"
        for key in ("activation", "influence", "probability")
        if isinstance(data.get(key), (int, float))
    ]
    st.caption(" · ".join(facts) or data["kind"])
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
    if data["kind"] != "feature":
        return
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


def intervention_panel(live: LiveModel, result: AttributionResult, graph: nx.DiGraph, state: GraphState) -> None:
    """Ablate or scale chosen feature nodes and show the target logits and top tokens before and
    after, beside the change the graph's direct edges predicted."""
    features = [n for n, d in graph.nodes(data=True) if d["kind"] == "feature"]
    chosen = st.multiselect(
        "Features",
        features,
        default=[p for p in state.pins if p in features],
        format_func=lambda n: node_name(graph, n, state),
        key="graph_intervene_features",
    )
    cols = st.columns([2, 2, 1], vertical_alignment="bottom")
    how = cols[0].radio("How", ["ablate", "scale"], horizontal=True, key="graph_intervene_how")
    factor = cols[1].number_input(
        "scale by", -20.0, 20.0, 2.0, 0.5, key="graph_intervene_factor", disabled=how == "ablate"
    )
    if not cols[2].button("Intervene", disabled=not chosen):
        return
    keys = [(graph.nodes[n]["layer"], graph.nodes[n]["position"], graph.nodes[n]["latent"]) for n in chosen]
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
