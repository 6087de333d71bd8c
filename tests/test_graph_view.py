"""The Graph page's figure on graphs shaped like real ones (no model needed): column widths follow
node counts, no two nodes overlap, token names are shortened with the full text on hover, logit
tokens and the strongest features' labels are on the canvas as text, a selected node's edges
stand out, and the URL form of the reader's state reads back to the same state."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

from dashboard.graph import view
from dashboard.graph.state import GraphState, from_url, state_params
from dashboard.graph.view import LABELLED_FEATURES, MAX_ROWS, NODE_GAP, PLOT_WIDTH, graph_figure, hover_edges, layout

TOKENS = ["<|endoftext|>", *(f" w{i}" for i in range(14)), " capital"]  # a 16-token prompt
N_LAYERS = 4


def crowded_graph(per_layer: tuple[int, ...] = (17, 21, 32, 12), tokens: list[str] = TOKENS) -> nx.DiGraph:
    """Embeddings at every position, a few features early, ``per_layer`` features and 10 logits at
    the last position, each feature linked to the next layer's first feature and to the top logit."""
    graph = nx.DiGraph()
    last = len(tokens) - 1
    for position, token in enumerate(tokens):
        graph.add_node(f"embed@{position}", kind="embedding", layer=-1, position=position, token=token)
    for position in (1, 4, 6):
        graph.add_node(f"feature/0/{position}@{position}", kind="feature", layer=0, position=position, latent=position)
    for layer, count in enumerate(per_layer):
        for latent in range(count):
            node = f"feature/{layer}/{latent}@{last}"
            graph.add_node(
                node,
                kind="feature",
                layer=layer,
                position=last,
                latent=latent,
                influence=(layer * 100 + latent) / 1000,
                label=f"<b>feature</b> {layer}/{latent} with a long label",
            )
    for token in range(10):
        graph.add_node(
            f"logit/{token}", kind="logit", layer=N_LAYERS, position=last, token=f" t{token}", probability=0.1
        )
    for node, data in list(graph.nodes(data=True)):
        if data["kind"] == "feature":
            graph.add_edge(f"embed@{data['position']}", node, weight=0.5)
            graph.add_edge(node, "logit/0", weight=-0.2 if data["latent"] % 2 else 0.3)
    return graph


def no_overlaps(graph: nx.DiGraph, placed) -> None:
    for a, b in itertools.combinations(graph, 2):
        (xa, ya), (xb, yb) = placed.placed[a], placed.placed[b]
        assert abs(xa - xb) >= NODE_GAP - 1e-9 or abs(ya - yb) >= 0.2 - 1e-9, (a, b)


@pytest.mark.parametrize("tokens", [TOKENS[:8], TOKENS], ids=["8 tokens", "16 tokens"])
def test_the_crowded_position_gets_the_width_its_nodes_need_and_no_two_nodes_overlap(tokens):
    graph = crowded_graph(tokens=tokens)
    placed = layout(graph, len(tokens))
    assert len(placed.widths) == len(tokens) and sum(placed.widths) <= PLOT_WIDTH
    rows = len({y for n, (_, y) in placed.placed.items() if n.startswith("feature/2/")})
    assert placed.widths[-1] >= 32 / rows * NODE_GAP, "32 features in one layer get 32 gaps of room, in rows"
    assert rows == (1 if len(tokens) == 8 else 2)
    assert placed.widths[-1] > 5 * max(placed.widths[:-1]), "a position with one embedding stays narrow"
    no_overlaps(graph, placed)
    edges = [0.0, *itertools.accumulate(placed.widths)]
    for node, data in graph.nodes(data=True):  # every node inside its own token's column
        assert edges[data["position"]] <= placed.placed[node][0] <= edges[data["position"] + 1], node


def test_a_cell_too_crowded_for_the_width_wraps_into_rows_without_overlaps():
    graph = crowded_graph(per_layer=(120, 5, 5, 5))
    placed = layout(graph, len(TOKENS))
    rows = {placed.placed[n][1] for n in graph if n.startswith("feature/0/") and n.endswith("@15")}
    assert len(rows) == MAX_ROWS, "as many rows as a layer band holds; then the column grows past the width"
    assert placed.widths[-1] == 120 / MAX_ROWS * NODE_GAP
    no_overlaps(graph, placed)


def test_the_canvas_names_tokens_logits_and_the_strongest_features_as_text():
    graph = crowded_graph()
    labels = {n: d.get("label", "") for n, d in graph.nodes(data=True)}
    spec = graph_figure(graph, labels, TOKENS, N_LAYERS).to_plotly_json()
    notes = spec["layout"]["annotations"]
    tokens = [n for n in notes if n.get("yref") == "paper"]
    assert len(tokens) == len(TOKENS) and tokens[0]["text"] == "&lt;|endofte…", "shortened, escaped"
    assert tokens[0]["hovertext"] == "token 0: &lt;|endoftext|&gt;", "the whole token on hover"
    assert all(n.get("textangle") in (None, 0) for n in tokens), "no rotated, clipped tick labels"
    logits = [n["text"] for n in notes if n.get("textangle") == -60]
    assert sorted(logits) == sorted(f"·t{i}" for i in range(10))
    features = [n["text"] for n in notes if n.get("yref") != "paper" and n.get("textangle") is None]
    assert 3 <= len(features) <= LABELLED_FEATURES
    assert all(text.startswith("&lt;b&gt;feature&lt;/b&gt;") for text in features), "labels are text, not HTML"
    assert "&lt;b&gt;feature&lt;/b&gt; 0/0" in features[0], "the most influential feature is labelled first"


def test_a_selected_node_keeps_its_edges_in_colour_and_dims_the_rest():
    graph = crowded_graph()
    node = "feature/2/5@15"
    spec = graph_figure(graph, {}, TOKENS, N_LAYERS, selected=node).to_plotly_json()
    lines = [t for t in spec["data"] if t["mode"] == "lines"]
    lit = [t for t in lines if not t["line"]["color"].endswith("0.12)")]
    assert sum(len(t["x"]) for t in lit) == 3 * graph.degree(node), "exactly the node's edges stand out"
    features = next(t for t in spec["data"] if t.get("name") == "feature")
    opacity = dict(zip(features["customdata"], features["marker"]["opacity"]))
    assert opacity[node] == 1.0 and opacity["feature/2/6@15"] < 1.0


def test_the_reader_state_reads_back_from_its_url_and_bad_parts_are_dropped():
    state = GraphState()
    for node in ("feature/1/2@3", "feature/1/5@3", "logit/7"):
        state.pin(node)
    state.group("France, capital", ["feature/1/2@3", "feature/1/5@3"])
    state.set_label("logit/7", 'a "quoted" <label>')
    params = state_params(state)
    assert from_url(params).to_dict() == state.to_dict()
    broken = {**params, "supernodes": "[[not json", "clerps": '{"x": 1}'}
    assert from_url(broken).to_dict() == {
        "pins": ["feature/1/2@3", "feature/1/5@3", "logit/7"],
        "supernodes": {},
        "labels": {},
    }
    assert not from_url({"supernodes": '[["one", "a"]]'}).supernodes, "a group of one is no supernode"


def test_the_hover_index_lists_exactly_each_nodes_drawn_edges_in_their_lit_style():
    graph = crowded_graph()
    graph.add_edge("embed@0", "logit/3", weight=1e-6)  # the weakest edge is drawn, so it lights too
    hover = hover_edges(graph)
    assert len(hover["edges"]) == graph.number_of_edges()
    for node in graph:
        listed = {tuple(hover["edges"][i][:2]) for i in hover["touching"].get(node, [])}
        assert listed == set(graph.in_edges(node)) | set(graph.out_edges(node)), node
    spec = graph_figure(graph, {}, TOKENS, N_LAYERS, selected="logit/0").to_plotly_json()
    lines = [t["line"] for t in spec["data"] if t["mode"] == "lines"]
    lit = {(line["color"], line["width"]) for line in lines if not line["color"].endswith("0.12)")}
    hovered = {(e[2]["color"], e[2]["width"]) for i in hover["touching"]["logit/0"] for e in [hover["edges"][i]]}
    assert hovered == lit, "a hovered node's edges look as a selected node's do"
    assert {e[2]["color"] for e in hover["edges"]} == {"rgba(37, 99, 235, 0.90)", "rgba(220, 38, 38, 0.90)"}

    assert hover_edges(nx.DiGraph(graph.subgraph(["embed@0", "logit/0"])))["touching"] == {}, "no edges, none lit"


def test_the_hover_index_keeps_only_the_edges_the_figure_draws(monkeypatch):
    graph = crowded_graph()
    monkeypatch.setattr(view, "MAX_DRAWN_EDGES", 10)
    hover = hover_edges(graph)
    weights = sorted((abs(w) for _, _, w in graph.edges(data="weight")), reverse=True)
    assert len(hover["edges"]) == 10
    assert sorted(abs(graph.edges[s, t]["weight"]) for s, t, _ in hover["edges"]) == sorted(weights[:10])
    drawn = graph_figure(graph, {}, TOKENS, N_LAYERS).to_plotly_json()
    assert sum(len(t["x"]) for t in drawn["data"] if t["mode"] == "lines") == 3 * 10
