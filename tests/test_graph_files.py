"""Graphs as files and the reader's state on them: node-link and Neuronpedia JSON written from a
computed graph read back to the same nodes, edges, pins, supernodes and labels; broken files are
refused in one message; supernodes and the subgraph behave as a reader expects."""

from __future__ import annotations

import json

import pytest

from analysis.graphs import GraphSettings, compute_graph, to_networkx
from dashboard.graph.files import (
    GraphFileError,
    neuronpedia_ids,
    neuronpedia_json,
    node_link_json,
    read_graph_file,
    unknown_transcoders,
)
from dashboard.graph.state import GraphState, GraphStateError, subgraph

pytestmark = pytest.mark.model

PROMPT = "And God said, Let there be light"


@pytest.fixture(scope="module")
def result(live):
    return compute_graph(live, PROMPT, settings=GraphSettings(max_feature_nodes=128))


@pytest.fixture(scope="module")
def graph(result, demo_dir):
    return to_networkx(result, atlas=demo_dir / "atlas.duckdb")


def two_features(graph) -> list[str]:
    return sorted(n for n, d in graph.nodes(data=True) if d["kind"] == "feature")[:2]


def reader_state(graph) -> GraphState:
    first, second = two_features(graph)
    state = GraphState()
    state.pin(first)
    state.pin(second)
    state.pin("embed@1")
    state.group("light words", [first, second])
    state.set_label(first, "<b>my</b> label")
    return state


def edges(graph, rename=lambda node: node) -> dict[tuple[str, str], float]:
    return {(rename(a), rename(b)): w for a, b, w in graph.edges(data="weight")}


def test_node_link_json_reads_back_to_the_same_graph_and_state(graph):
    state = reader_state(graph)
    back, back_state = read_graph_file(node_link_json(graph, state).encode())
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert edges(back) == edges(graph)
    assert back_state == state
    assert back.graph["replacement_score"] == graph.graph["replacement_score"]


def test_neuronpedia_json_reads_back_to_the_same_nodes_edges_and_qparams(live, result, graph, demo_dir):
    state = reader_state(graph)
    data = json.loads(
        neuronpedia_json(result, live.tokenizer, "light", 0.8, 0.98, str(demo_dir / "atlas.duckdb"), state)
    )
    ids = neuronpedia_ids(result)
    first, second = two_features(graph)
    assert data["qParams"]["pinnedIds"] == f"{ids[first]},{ids[second]},{ids['embed@1']}"
    assert data["qParams"]["supernodes"] == [["light words", ids[first], ids[second]]]
    back, back_state = read_graph_file(json.dumps(data).encode())
    assert set(back) == {ids[node] for node in graph}
    assert edges(back) == pytest.approx(edges(graph, ids.get))
    for node, attributes in graph.nodes(data=True):
        assert back.nodes[ids[node]]["kind"] == attributes["kind"]
        assert back.nodes[ids[node]]["layer"] == attributes["layer"]
        assert back.nodes[ids[node]]["position"] == attributes["position"]
    assert back_state.pins == [ids[first], ids[second], ids["embed@1"]]
    assert back_state.supernodes == {"light words": [ids[first], ids[second]]}
    assert back_state.labels == {ids[first]: "<b>my</b> label"}
    assert back.nodes[ids[first]]["transcoder"] == graph.nodes[first]["transcoder"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG not json", "the file is not JSON"),
        (b"[1, 2, 3]", "not a graph: it needs a list of nodes"),
        (b'{"nodes": [], "links": []}', "the graph has no nodes"),
        (b'{"nodes": [{"id": "a", "kind": "poem", "layer": 0, "position": 0}], "links": []}', "has kind 'poem'"),
        (b'{"nodes": [{"id": "a", "kind": "error", "layer": "x", "position": 0}], "links": []}', "no numeric layer"),
        (b'{"metadata": {"prompt": "p"}, "nodes": [{"node_id": "1_2_3"}], "links": []}', "the graph JSON is malformed"),
        (
            b'{"directed": true, "nodes": [{"id": "a", "kind": "error", "layer": 0, "position": 0}], '
            b'"links": [{"source": "a", "target": "a", "weight": "heavy"}]}',
            "has no numeric weight",
        ),
    ],
)
def test_broken_graph_files_are_refused_with_what_is_wrong(content, message):
    with pytest.raises(GraphFileError, match=message):
        read_graph_file(content)


def test_a_neuronpedia_graph_of_another_model_names_its_scan(live, result, demo_dir):
    data = json.loads(
        neuronpedia_json(result, live.tokenizer, "x", 0.8, 0.98, str(demo_dir / "atlas.duckdb"), GraphState())
    )
    del data["metadata"]["transcoder_list"]
    data["metadata"]["scan"] = "gemma-2-2b"  # what Neuronpedia's own files hold
    graph, _ = read_graph_file(json.dumps(data).encode())
    assert "gemma-2-2b (layer 0)" in unknown_transcoders(graph, ["transcoder-L0", "transcoder-L1"])


def test_a_graph_from_other_transcoders_names_them(graph):
    foreign = graph.copy()
    for _, data in foreign.nodes(data=True):
        if data["kind"] == "feature":
            data["transcoder"] = "gemma-clt-L" + str(data["layer"])
    assert unknown_transcoders(graph, ["transcoder-L0", "transcoder-L1", "transcoder-L2", "transcoder-L3"]) == []
    assert "gemma-clt-L0" in unknown_transcoders(foreign, ["transcoder-L0"])


def test_a_supernode_groups_pinned_nodes_and_the_subgraph_sums_their_edges(graph):
    first, second = two_features(graph)
    state = GraphState()
    with pytest.raises(GraphStateError, match="pin these nodes first"):
        state.group("pair", [first, second])
    for node in (first, second, "embed@1"):
        state.pin(node)
    with pytest.raises(GraphStateError, match="needs a name"):
        state.group("  ", [first, second])
    state.group("pair", [first, second])
    shown = subgraph(graph, state)
    logits = {n for n, d in graph.nodes(data=True) if d["kind"] == "logit"}
    assert set(shown) == {"supernode/pair", "embed@1", *logits}, "the targets stay in the subgraph"
    for other in set(shown) - {"supernode/pair"}:  # every summed edge equals its members' edges added up
        into = sum(graph.edges[m, other]["weight"] for m in (first, second) if graph.has_edge(m, other))
        out_of = sum(graph.edges[other, m]["weight"] for m in (first, second) if graph.has_edge(other, m))
        assert shown.get_edge_data("supernode/pair", other, {"weight": 0.0})["weight"] == pytest.approx(into)
        assert shown.get_edge_data(other, "supernode/pair", {"weight": 0.0})["weight"] == pytest.approx(out_of)
    assert any(shown.has_edge("supernode/pair", logit) for logit in logits), "its edges to the logits are drawn"
    state.unpin(first)
    assert state.supernodes == {}, "a supernode of one node is no group"
    assert set(subgraph(graph, state)) == {second, "embed@1", *logits}
