"""circuit-tracer's Graph, pruned by its own ``prune_graph`` and scored by its own
``compute_graph_scores``, as a networkx DiGraph that the rest of SAEscope reads.

Node ids: ``embed@P``, ``feature/L/LATENT@P``, ``error/L@P``, ``logit/TOKEN_ID`` (``logit/custom``
for a logit difference). Every node has ``kind``, ``layer`` (-1 for embeddings, n_layers for
logits, so sorting by layer draws the graph bottom-up), ``position`` and ``influence``: circuit-
tracer's cumulative influence, the share of all influence held by nodes at least as influential
(small = important; Neuronpedia shows the same number). Edges point from source to target and
carry circuit-tracer's signed direct effect as ``weight``.
"""

from __future__ import annotations

import copy

import networkx as nx
from circuit_tracer.graph import compute_graph_scores, prune_graph

from analysis.atlas.reader import AtlasSource, feature_labels
from analysis.graphs.compute import AttributionResult

NODE_THRESHOLD = 0.8
EDGE_THRESHOLD = 0.98


def _node(result: AttributionResult, index: int) -> tuple[str, dict]:
    """The id and attributes of row ``index`` of circuit-tracer's adjacency matrix, whose rows are
    ordered [features, errors (layer-major), embeddings, logits]."""
    graph = result.graph
    n_layers, n_pos = graph.cfg.n_layers, graph.n_pos
    n_features = len(graph.selected_features)
    errors_end = n_features + n_layers * n_pos
    embeds_end = errors_end + n_pos
    if index < n_features:
        active = int(graph.selected_features[index])
        layer, position, latent = (int(v) for v in graph.active_features[active])
        return f"feature/{layer}/{latent}@{position}", {
            "kind": "feature",
            "layer": layer,
            "position": position,
            "latent": latent,
            "transcoder": result.transcoders[layer],
            "activation": float(graph.activation_values[active]),
        }
    if index < errors_end:
        layer, position = divmod(index - n_features, n_pos)
        return f"error/{layer}@{position}", {"kind": "error", "layer": layer, "position": position}
    if index < embeds_end:
        position = index - errors_end
        return f"embed@{position}", {
            "kind": "embedding",
            "layer": -1,
            "position": position,
            "token": result.tokens[position],
        }
    which = index - embeds_end
    token, vocab_idx = graph.logit_targets[which]
    # circuit-tracer numbers a custom target d_vocab + i; its graph.vocab_size is the tokenizer's
    # base vocabulary, which leaves out added special tokens (the demo's EOS 8190 among them)
    in_vocab = vocab_idx < graph.cfg.d_vocab
    return f"logit/{vocab_idx}" if in_vocab else "logit/custom", {
        "kind": "logit",
        "layer": n_layers,
        "position": n_pos - 1,
        "token": token,
        "token_id": vocab_idx if in_vocab else None,
        "probability": float(graph.logit_probabilities[which]),
    }


def to_networkx(
    result: AttributionResult,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    atlas: AtlasSource | None = None,
) -> nx.DiGraph:
    """The pruned graph of ``result``: nodes holding ``node_threshold`` of the influence on the
    targets (embeddings and logits always kept), edges holding ``edge_threshold`` of it; feature
    nodes get their atlas label when ``atlas`` is given. Scores are of the unpruned graph."""
    graph = result.graph
    node_mask, edge_mask, influence = prune_graph(graph, node_threshold, edge_threshold)
    replacement, completeness = compute_graph_scores(graph)
    pruned_replacement, pruned_completeness = pruned_scores(result, node_mask, edge_mask)
    network = nx.DiGraph(
        prompt=graph.input_string,
        tokens=result.tokens,
        transcoders=result.transcoders,
        target_token=result.target.token,
        target_versus=result.target.versus,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        replacement_score=replacement,
        completeness_score=completeness,
        seconds=result.seconds,
        pruned_replacement_score=pruned_replacement,
        pruned_completeness_score=pruned_completeness,
        max_feature_nodes=result.settings.max_feature_nodes,
        batch_size=result.settings.batch_size,
    )
    kept = node_mask.nonzero().flatten().tolist()
    ids = {}
    for index in kept:
        node_id, attributes = _node(result, index)
        ids[index] = node_id
        network.add_node(node_id, influence=float(influence[index]), **attributes)
    _add_labels(network, atlas)
    targets, sources = (edge_mask & (graph.adjacency_matrix != 0)).nonzero(as_tuple=True)
    weights = graph.adjacency_matrix[targets, sources]
    for target, source, weight in zip(targets.tolist(), sources.tolist(), weights.tolist()):
        if source in ids and target in ids:
            network.add_edge(ids[source], ids[target], weight=weight)
    return network


def pruned_scores(result: AttributionResult, node_mask, edge_mask) -> tuple[float, float]:
    """circuit-tracer's replacement and completeness scores of the pruned graph: its own
    ``compute_graph_scores`` on the adjacency with pruned nodes and edges zeroed, so a reader sees
    how much of the explanation the drawn graph keeps."""
    pruned = copy.copy(result.graph)
    keep = node_mask[:, None] & node_mask[None, :] & edge_mask
    pruned.adjacency_matrix = result.graph.adjacency_matrix * keep
    return compute_graph_scores(pruned)


def _add_labels(network: nx.DiGraph, atlas: AtlasSource | None) -> None:
    features = {
        node: (data["transcoder"], data["latent"])
        for node, data in network.nodes(data=True)
        if data["kind"] == "feature"
    }
    labels = feature_labels(atlas, features.values()) if atlas is not None else {}
    for node, key in features.items():
        network.nodes[node]["label"] = labels.get(key, "")
