"""Neuronpedia's graph JSON, written with circuit-tracer's own node and link builders (the ones its
``create_graph_files`` uses, which also writes files and re-reads the tokenizer from the hub), and
read back into the networkx form SAEscope uses, so graphs made elsewhere can be opened here.
"""

from __future__ import annotations

import networkx as nx
from circuit_tracer.graph import prune_graph
from circuit_tracer.utils.create_graph_files import build_model, create_nodes, create_used_nodes_and_edges

from analysis.atlas.reader import AtlasSource, feature_labels
from analysis.graphs.compute import AttributionResult
from analysis.graphs.network import EDGE_THRESHOLD, NODE_THRESHOLD

_KINDS = {"embedding": "embedding", "mlp reconstruction error": "error", "logit": "logit"}


def to_neuronpedia(
    result: AttributionResult,
    tokenizer,
    slug: str,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    atlas: AtlasSource | None = None,
) -> dict:
    """The pruned graph as Neuronpedia graph JSON: metadata, qParams, nodes, links; feature nodes'
    ``clerp`` is their atlas label when ``atlas`` is given.

    ``scan`` is the transcoder names joined by commas, and ``transcoder_list`` lists them:
    circuit-tracer would name a list scan by Python's ``hash``, which changes from run to run."""
    graph = result.graph
    node_mask, edge_mask, influence = prune_graph(graph, node_threshold, edge_threshold)
    nodes = create_nodes(graph, node_mask, tokenizer, influence)
    used_nodes, used_edges = create_used_nodes_and_edges(graph, nodes, edge_mask)
    scan = ",".join(result.transcoders)
    data = build_model(graph, used_nodes, used_edges, slug, scan, node_threshold, tokenizer).model_dump()
    data["metadata"]["transcoder_list"] = list(result.transcoders)
    features = {
        node["node_id"]: _feature_key(node, result.transcoders)
        for node in data["nodes"]
        if node["feature_type"] not in _KINDS
    }
    labels = feature_labels(atlas, features.values()) if atlas is not None else {}
    for node in data["nodes"]:
        if node["node_id"] in features:
            node["clerp"] = labels.get(features[node["node_id"]], "")
    return data


def _feature_key(node: dict, transcoders: list[str]) -> tuple[str, int]:
    layer, latent, _ = node["node_id"].split("_")  # circuit-tracer writes LAYER_LATENT_POSITION
    return transcoders[int(layer)], int(latent)


def from_neuronpedia(data: dict) -> nx.DiGraph:
    """A Neuronpedia graph JSON as a DiGraph keyed by Neuronpedia node ids, with the attributes
    ``to_networkx`` gives where the JSON has them (kind, layer, position, latent, activation,
    influence, label, probability; layer -1 for embeddings and n_layers for logits) and signed edge
    weights."""
    metadata = data["metadata"]
    network = nx.DiGraph(
        prompt=metadata["prompt"],
        tokens=metadata["prompt_tokens"],
        scan=metadata["scan"],
        transcoders=metadata.get("transcoder_list", []),
        node_threshold=metadata.get("node_threshold"),
        slug=metadata["slug"],
    )
    for node in data["nodes"]:
        kind = _KINDS.get(node["feature_type"], "feature")
        attributes = {
            "kind": kind,
            "position": node["ctx_idx"],
            "influence": node.get("influence"),
            "label": node.get("clerp", ""),
        }
        if kind == "feature":
            _, latent, _ = node["node_id"].split("_")
            attributes.update(layer=int(node["layer"]), latent=int(latent), activation=node.get("activation"))
        elif kind == "error":
            attributes["layer"] = int(node["layer"])
        elif kind == "embedding":
            attributes["layer"] = -1
        elif kind == "logit":
            # Neuronpedia numbers the logit layer n_layers + 1 (embeddings are "E"); to_networkx n_layers
            attributes.update(
                layer=int(node["layer"]) - 1, token_id=node["feature"], probability=node.get("token_prob")
            )
        network.add_node(node["node_id"], **attributes)
    for link in data["links"]:
        network.add_edge(link["source"], link["target"], weight=float(link["weight"]))
    return network
