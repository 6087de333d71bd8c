"""Compute one attribution graph with circuit-tracer's ``attribute`` on the live model's
replacement model; this module only checks the input, chooses settings and times the run.

Attribution cost grows with (feature nodes) x (active features) x d_model, so the prompt length
is capped (64 tokens by default) and the number of feature nodes attributed is bounded:
circuit-tracer then attributes the most influential features first (see docs/GRAPHS.md).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from circuit_tracer import Graph, attribute

from analysis.graphs.replacement import replacement_model
from analysis.graphs.targets import GraphTarget, attribution_targets
from analysis.graphs.transcoder_sets import layer_names
from analysis.live_model import LiveInputError, LiveModel

MAX_TOKENS = 64


@dataclass(frozen=True)
class GraphSettings:
    """circuit-tracer's knobs, with defaults measured on the demo model on a 2-core CPU
    (docs/GRAPHS.md): at 32 tokens they take ~2.3 CPU seconds where attributing every active
    feature (``max_feature_nodes=None``, exact) takes ~10. ``batch_size`` is the number of nodes
    per backward pass and the batch of the one forward pass; on CPU small batches are cheaper."""

    max_feature_nodes: int | None = 1024
    batch_size: int = 16
    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    max_tokens: int = MAX_TOKENS


@dataclass
class AttributionResult:
    """circuit-tracer's dense, unpruned Graph, with what it was computed from."""

    graph: Graph
    tokens: list[str]
    transcoders: list[str]
    target: GraphTarget
    settings: GraphSettings
    seconds: float


def prompt_ids(live: LiveModel, prompt: str, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """The prompt's token ids, BOS first, as a 1-D tensor; LiveInputError for an empty prompt or
    one longer than ``max_tokens`` (BOS not counted). Nothing is cut: a graph of a silently
    truncated prompt would explain a different prompt.

    BOS is added here, not by circuit-tracer: its helper picks the first *truthy* special id, so
    a BOS whose id is 0 would be skipped."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise LiveInputError("the prompt is empty: type a prompt first")
    ids = live.tokenizer.encode(prompt, add_special_tokens=False)
    if len(ids) > max_tokens:
        raise LiveInputError(f"the prompt is {len(ids)} tokens; graphs take at most {max_tokens} (max_tokens)")
    bos = live.tokenizer.bos_token_id
    return torch.tensor(([bos] if bos is not None else []) + ids, device=live.device)


def compute_graph(
    live: LiveModel,
    prompt: str,
    target: GraphTarget = GraphTarget(),
    settings: GraphSettings = GraphSettings(),
) -> AttributionResult:
    """The attribution graph of ``prompt`` for ``target``, holding the live model alone while
    circuit-tracer installs its hooks on the replacement model."""
    ids = prompt_ids(live, prompt, settings.max_tokens)
    with live.exclusive():
        model = replacement_model(live)
        targets = attribution_targets(target, live.tokenizer, model.unembed_proj)
        started = time.perf_counter()
        with warnings.catch_warnings():
            # transformer-lens's module backward hooks say this on every pass; it is expected here
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            graph = attribute(
                ids,
                model,
                attribution_targets=targets,
                max_n_logits=settings.max_n_logits,
                desired_logit_prob=settings.desired_logit_prob,
                batch_size=settings.batch_size,
                max_feature_nodes=settings.max_feature_nodes,
            )
        seconds = time.perf_counter() - started
    return AttributionResult(
        graph=graph,
        tokens=live.token_strings(graph.input_tokens),  # with the special token circuit-tracer may add
        transcoders=layer_names(model.transcoders),
        target=target,
        settings=settings,
        seconds=seconds,
    )
