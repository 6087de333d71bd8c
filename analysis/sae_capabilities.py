"""What an SAE can be used for, checked in one place: steering and graph code ask here instead of
assuming. sae-lens implements the architectures (loading, encode, decode); a capability is a property
of one loaded SAE that some of our code relies on:

- ``AFFINE_DECODER``: ``decode(z) == z @ W_dec + b_dec`` with no activation normalization, so setting
  a latent changes the output by the change times its decoder row (clamp steering relies on it).
  Checked, not declared: the configuration first, then ``decode`` itself on a few probe vectors,
  because sae-lens architectures differ here in ways their names do not tell (a top-k SAE may
  rescale by decoder norms, a tied SAE may drop ``b_dec``).
- ``GRAPH_COMPATIBLE``: a per-layer transcoder that analysis/graphs/replacement.py can hand to
  circuit-tracer. Declared by architecture (``GRAPH_ARCHITECTURES``), because the conversion in
  ``to_single_layer`` is written for those weight layouts, plus no input preprocessing.

Importing this module does not import torch: the steering-method table names the capabilities each
method needs, and the command line reads that table to build its help. The probe imports torch when
it runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.sae_loading import LoadedSAE

GRAPH_ARCHITECTURES = ("transcoder", "jumprelu_transcoder")
PROBE_ROWS, PROBE_LATENTS_PER_ROW = 4, 8


class Capability(Enum):
    AFFINE_DECODER = "affine decoder"
    GRAPH_COMPATIBLE = "graph-compatible"


def missing(loaded: LoadedSAE, capability: Capability) -> str | None:
    """Why ``loaded`` lacks ``capability``, as one line naming the SAE; None when it has it."""
    return _CHECKS[capability](loaded)


# Probe results per SAE module: decoding the probes costs a full decode, and weights do not change.
_affine: weakref.WeakKeyDictionary[object, str | None] = weakref.WeakKeyDictionary()


def _affine_decoder(loaded: LoadedSAE) -> str | None:
    cfg = loaded.sae.cfg
    if cfg.normalize_activations != "none":
        return (
            f"{loaded.name} normalizes activations ({cfg.normalize_activations!r}), so its decoder "
            "is not z @ W_dec + b_dec"
        )
    if loaded.sae not in _affine:
        _affine[loaded.sae] = _probe_decoder(loaded)
    return _affine[loaded.sae]


def _probe_decoder(loaded: LoadedSAE) -> str | None:
    """Compare ``decode`` with ``z @ W_dec + b_dec`` on a zero row and a few sparse random rows."""
    import torch

    sae = loaded.sae
    w_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
    generator = torch.Generator().manual_seed(0)
    z = torch.zeros(PROBE_ROWS, w_dec.shape[0])
    for row in range(1, PROBE_ROWS):
        chosen = torch.randperm(w_dec.shape[0], generator=generator)[:PROBE_LATENTS_PER_ROW]
        z[row, chosen] = torch.rand(len(chosen), generator=generator) * 4 + 0.5
    z = z.to(device=w_dec.device, dtype=w_dec.dtype)
    with torch.no_grad():
        decoded = sae.decode(z)
        expected = z @ w_dec + b_dec
    tolerance = 1e-4 if w_dec.dtype in (torch.float32, torch.float64) else 2e-2
    scale = float(expected.abs().max()) + 1e-6
    if decoded.shape != expected.shape or not torch.allclose(
        decoded.float(), expected.float(), rtol=tolerance, atol=tolerance * scale
    ):
        return f"{loaded.name} ({loaded.architecture}) does not decode as z @ W_dec + b_dec"
    return None


def _graph_compatible(loaded: LoadedSAE) -> str | None:
    if not loaded.is_transcoder:
        return f"{loaded.name!r} is not a transcoder: graphs need transcoders"
    if loaded.architecture not in GRAPH_ARCHITECTURES:
        return (
            f"transcoder {loaded.name!r} has architecture {loaded.architecture!r}; graphs support "
            f"{', '.join(GRAPH_ARCHITECTURES)}"
        )
    cfg = loaded.sae.cfg
    if cfg.apply_b_dec_to_input or cfg.normalize_activations != "none":
        return f"transcoder {loaded.name!r} preprocesses its input, which circuit-tracer cannot express"
    return None


_CHECKS: dict[Capability, Callable[[LoadedSAE], str | None]] = {
    Capability.AFFINE_DECODER: _affine_decoder,
    Capability.GRAPH_COMPATIBLE: _graph_compatible,
}
