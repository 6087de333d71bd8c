"""Graphs in and out of the Graph page as files: networkx node-link JSON (SAEscope's own, with the
reader's pins, supernodes and labels under ``graph.saescope_state``) and Neuronpedia graph JSON
(the same state as ``qParams``). Reading needs no model; anything malformed is one clear message."""

from __future__ import annotations

import json

import networkx as nx

from analysis.atlas.reader import AtlasSource
from analysis.errors import SAEscopeError
from analysis.graphs import AttributionResult, from_neuronpedia, to_neuronpedia
from dashboard.graph.state import GraphState

NODE_KINDS = ("embedding", "feature", "error", "logit")


class GraphFileError(SAEscopeError, ValueError):
    """A graph file that cannot be read, with what is wrong with it."""


def node_link_json(graph: nx.DiGraph, state: GraphState) -> str:
    """The graph as node-link JSON with the reader's state kept beside its attributes."""
    data = nx.node_link_data(graph, edges="links")
    data["graph"] = {**data["graph"], "saescope_state": state.to_dict()}
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def neuronpedia_ids(result: AttributionResult) -> dict[str, str]:
    """SAEscope node id -> Neuronpedia node id for every node ``to_networkx`` can make of ``result``
    (circuit-tracer's formats: LAYER_LATENT_POS, 0_LAYER_POS, E_TOKEN_POS, LOGITLAYER_TOKEN_POS)."""
    graph = result.graph
    n_layers, n_pos = graph.cfg.n_layers, graph.n_pos
    ids = {}
    for layer, position, latent in graph.active_features[graph.selected_features].tolist():
        ids[f"feature/{layer}/{latent}@{position}"] = f"{layer}_{latent}_{position}"
    for layer in range(n_layers):
        for position in range(n_pos):
            ids[f"error/{layer}@{position}"] = f"0_{layer}_{position}"
    for position, token in enumerate(graph.input_tokens.tolist()):
        ids[f"embed@{position}"] = f"E_{token}_{position}"
    for target in graph.logit_targets:
        name = f"logit/{target.vocab_idx}" if target.vocab_idx < graph.cfg.d_vocab else "logit/custom"
        ids[name] = f"{n_layers + 1}_{target.vocab_idx}_{n_pos - 1}"
    return ids


def neuronpedia_json(
    result: AttributionResult,
    tokenizer,
    slug: str,
    node_threshold: float,
    edge_threshold: float,
    atlas: AtlasSource,
    state: GraphState,
) -> str:
    """Neuronpedia graph JSON of the pruned graph with the state as ``qParams``."""
    data = to_neuronpedia(result, tokenizer, slug, node_threshold, edge_threshold, atlas)
    data["qParams"] = state.to_qparams(rename=neuronpedia_ids(result))
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def read_graph_file(content: bytes) -> tuple[nx.DiGraph, GraphState]:
    """A graph and its reader state from node-link or Neuronpedia JSON; GraphFileError otherwise."""
    try:
        data = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GraphFileError(f"the file is not JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise GraphFileError(
            "the file is JSON but not a graph: it needs a list of nodes (node-link or Neuronpedia graph JSON)"
        )
    try:
        if isinstance(data.get("metadata"), dict):
            graph = from_neuronpedia(data)
            state = GraphState.from_qparams(data.get("qParams") or {})
            _name_transcoders(graph)
        else:
            graph = nx.node_link_graph(data, edges="links" if "links" in data else "edges")
            saved_state = graph.graph.pop("saescope_state", None) or graph.graph.pop("glassbox_state", None)
            state = GraphState.from_dict(saved_state or {})  # files written before the rename say glassbox_state
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, nx.NetworkXError) as error:
        raise GraphFileError(f"the graph JSON is malformed: {type(error).__name__} {error}") from None
    _check(graph)
    return graph, state.restricted_to(graph)


def _name_transcoders(graph: nx.DiGraph) -> None:
    """Give Neuronpedia's feature nodes their transcoder's name by layer: from the file's list of
    transcoders (ours write one) or its comma-separated scan, else "SCAN (layer L)" (Neuronpedia's
    own files name only a model or transcoder release as the scan)."""
    n_layers = max((data["layer"] for _, data in graph.nodes(data=True) if data["kind"] == "logit"), default=0)
    scan = str(graph.graph.get("scan") or "")
    names = graph.graph.get("transcoders") or [name for name in scan.split(",") if name]
    if len(names) != n_layers:
        names = [f"{scan or 'unnamed'} (layer {layer})" for layer in range(n_layers)]
    for _, data in graph.nodes(data=True):
        if data["kind"] == "feature" and 0 <= data["layer"] < len(names):
            data["transcoder"] = names[data["layer"]]


def _check(graph: nx.DiGraph) -> None:
    if not graph.number_of_nodes():
        raise GraphFileError("the graph has no nodes")
    for node, data in graph.nodes(data=True):
        if data.get("kind") not in NODE_KINDS:
            raise GraphFileError(
                f"node {node!r} has kind {data.get('kind')!r}; expected one of {', '.join(NODE_KINDS)}"
            )
        for key in ("layer", "position"):
            if not isinstance(data.get(key), (int, float)) or isinstance(data.get(key), bool):
                raise GraphFileError(f"node {node!r} has no numeric {key}")
        if data["kind"] == "feature" and not isinstance(data.get("latent"), int):
            raise GraphFileError(f"feature node {node!r} has no latent number")
    for source, target, data in graph.edges(data=True):
        if not isinstance(data.get("weight"), (int, float)):
            raise GraphFileError(f"edge {source!r} -> {target!r} has no numeric weight")


def unknown_transcoders(graph: nx.DiGraph, atlas_saes: list[str]) -> list[str]:
    """The transcoders the graph's features come from that this atlas does not have."""
    used = {data.get("transcoder") for _, data in graph.nodes(data=True) if data["kind"] == "feature"}
    return sorted(name if name else "(unnamed)" for name in used if name not in atlas_saes)


def other_weights(graph: nx.DiGraph, atlas_meta: dict) -> list[str]:
    """What the graph records having been computed with (``model_hash``, ``transcoder_hashes``, set
    by the Graph page) that differs from the weights this atlas was built from."""
    differ = []
    model_hash = graph.graph.get("model_hash")
    if model_hash and model_hash != atlas_meta["model"]["content_hash"]:
        differ.append("model")
    atlas_hashes = {info["name"]: info["content_hash"] for info in atlas_meta["saes"]}
    for name, content_hash in sorted((graph.graph.get("transcoder_hashes") or {}).items()):
        if name in atlas_hashes and atlas_hashes[name] != content_hash:
            differ.append(name)
    return differ
