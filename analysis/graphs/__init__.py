"""Attribution graphs with circuit-tracer on the live model and the atlas's per-layer transcoders.

``compute_graph`` runs circuit-tracer's ``attribute``; ``to_networkx`` prunes and scores the result
with circuit-tracer's own functions and labels features from the atlas; ``to_neuronpedia`` /
``from_neuronpedia`` write and read Neuronpedia's graph JSON. See docs/GRAPHS.md.

The names below are imported on first use (PEP 562): loading a live model imports
``analysis.graphs.transcoder_sets``, and must not pay for circuit-tracer and networkx (about 2 s)
unless a graph is asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.graphs.compute import AttributionResult, GraphSettings, compute_graph, prompt_ids
    from analysis.graphs.network import to_networkx
    from analysis.graphs.neuronpedia import from_neuronpedia, to_neuronpedia
    from analysis.graphs.replacement import GraphSetupError, replacement_model
    from analysis.graphs.targets import GraphTarget

_HOMES = {
    "AttributionResult": "compute",
    "GraphSettings": "compute",
    "compute_graph": "compute",
    "prompt_ids": "compute",
    "to_networkx": "network",
    "from_neuronpedia": "neuronpedia",
    "to_neuronpedia": "neuronpedia",
    "GraphSetupError": "replacement",
    "replacement_model": "replacement",
    "GraphTarget": "targets",
}

__all__ = [
    "AttributionResult",
    "GraphSettings",
    "GraphSetupError",
    "GraphTarget",
    "compute_graph",
    "prompt_ids",
    "from_neuronpedia",
    "replacement_model",
    "to_networkx",
    "to_neuronpedia",
]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"analysis.graphs.{_HOMES[name]}"), name)
