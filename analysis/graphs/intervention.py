"""Interventions on a computed graph: scale or ablate chosen features with circuit-tracer's
``feature_intervention`` (the model runs on, nothing frozen) and compare each target logit's change
with what the graph's direct edges predict (sum over the features of edge x (scale - 1))."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.graphs.compute import AttributionResult
from analysis.graphs.replacement import replacement_model
from analysis.graphs.targets import token_id
from analysis.live_model import LiveInputError, LiveModel

TOP_TOKENS = 10


@dataclass
class InterventionOutcome:
    """Per target logit: its demeaned logit before and after, the change, and the edges' prediction
    (logits are demeaned over the vocabulary, as circuit-tracer's logit nodes are); and the top
    next tokens with their probabilities before and after."""

    targets: list[dict]  # token, before, after, change, predicted
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]


def _feature_rows(result: AttributionResult) -> dict[tuple[int, int, int], int]:
    graph = result.graph
    return {
        tuple(graph.active_features[index].tolist()): row for row, index in enumerate(graph.selected_features.tolist())
    }


def intervene(
    live: LiveModel, result: AttributionResult, features: list[tuple[int, int, int]], scale: float
) -> InterventionOutcome:
    """Multiply each (layer, position, latent) feature's activation by ``scale`` (0 = ablate)."""
    graph = result.graph
    rows = _feature_rows(result)
    unknown = [feature for feature in features if feature not in rows]
    if not features or unknown:
        raise LiveInputError(f"choose features of this graph to intervene on (not in it: {unknown})")
    activations = graph.activation_values[graph.selected_features[[rows[f] for f in features]]]
    interventions = [(*feature, float(value) * scale) for feature, value in zip(features, activations.tolist())]
    with live.exclusive():
        model = replacement_model(live)
        with torch.no_grad():
            before = model(graph.input_tokens)[0, -1]
        after, _ = model.feature_intervention(
            graph.input_tokens, interventions, freeze_attention=False, return_activations=False
        )
    after = after[0, -1].detach()
    n_logits = len(graph.logit_targets)
    edges = graph.adjacency_matrix[-n_logits:, [rows[f] for f in features]]
    predicted = (edges * (scale - 1.0)).sum(dim=1)
    targets = []
    for which, target in enumerate(graph.logit_targets):
        old, new = (_target_value(live, result, target.vocab_idx, logits) for logits in (before, after))
        targets.append(
            {
                "token": target.token_str,
                "before": old,
                "after": new,
                "change": new - old,
                "predicted": float(predicted[which]),
            }
        )
    return InterventionOutcome(targets, _top(live, before), _top(live, after))


def _target_value(live: LiveModel, result: AttributionResult, vocab_idx: int, logits: torch.Tensor) -> float:
    """A target's value as the graph measures it: the logit demeaned over the vocabulary, or for a
    logit difference (circuit-tracer numbers it beyond the vocabulary) logit(token) - logit(versus)."""
    if vocab_idx < result.graph.cfg.d_vocab:
        return float(logits[vocab_idx] - logits.mean())
    token, versus = result.target.token, result.target.versus
    assert token is not None and versus is not None, "only a logit difference is numbered beyond the vocabulary"
    first, second = token_id(live.tokenizer, token), token_id(live.tokenizer, versus)
    return float(logits[first] - logits[second])


def _top(live: LiveModel, logits: torch.Tensor) -> list[tuple[str, float]]:
    probabilities = torch.softmax(logits.float(), dim=-1)
    values, ids = probabilities.topk(TOP_TOKENS)
    return list(zip(live.token_strings(ids.tolist()), values.tolist()))
