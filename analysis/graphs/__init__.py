"""Attribution graphs with circuit-tracer on the live model and the atlas's per-layer transcoders.

``compute_graph`` runs circuit-tracer's ``attribute``; ``to_networkx`` prunes and scores the result
with circuit-tracer's own functions and labels features from the atlas; ``to_neuronpedia`` /
``from_neuronpedia`` write and read Neuronpedia's graph JSON. See docs/GRAPHS.md.
"""

from analysis.graphs.compute import AttributionResult, GraphSettings, compute_graph, prompt_ids
from analysis.graphs.network import to_networkx
from analysis.graphs.neuronpedia import from_neuronpedia, to_neuronpedia
from analysis.graphs.replacement import GraphSetupError, replacement_model
from analysis.graphs.targets import GraphTarget

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
