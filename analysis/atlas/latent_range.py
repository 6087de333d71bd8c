"""A latent-range shard (``precompute --latent-shard j/m``): latents ``[j*d/m, (j+1)*d/m)`` of every SAE.

A worker of a latent-range shard keeps running state only for its latents and encodes only them:
where an SAE's encoder is per latent after one linear map (standard/ReLU, JumpReLU, gated, and
their transcoders), a copy of the SAE whose encoder columns, biases and thresholds are sliced to
the range runs sae-lens's own ``encode``, so encode time and the batch's activations scale with
the range. A top-k SAE (and any other architecture) needs every pre-activation to pick its top k,
so its worker encodes all latents and keeps its range: its state is split, its encode is not.
Slicing a matrix multiplication's columns does not change the sums that make each column (the
same dot products in the same order on the CPU; ``tests/test_precompute.py`` checks the atlas
equals the single pass's bit for bit).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from analysis.sae_loading import LoadedSAE

# Per-latent parameters of the encoders that act latent by latent after ``x @ W_enc``, and the axis
# that runs over latents (sae-lens's names: W_enc [d_in, d_sae], biases and thresholds [d_sae]).
_PER_LATENT = {"W_enc": 1, "b_enc": 0, "threshold": 0, "log_threshold": 0, "b_gate": 0, "r_mag": 0, "b_mag": 0}
SLICEABLE = frozenset({"standard", "jumprelu", "gated", "transcoder", "jumprelu_transcoder"})


def latent_range(d_sae: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Latents ``[first, end)`` of an SAE with ``d_sae`` latents that latent shard ``j/m`` holds
    (the same arithmetic as the window shards)."""
    index, count = shard
    return index * d_sae // count, (index + 1) * d_sae // count


def range_encoder(loaded: LoadedSAE, first: int, end: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> activations of latents [first, end)``: an encoder sliced to the range where the
    architecture allows, else the full encode cut to the range (top-k)."""
    sae = loaded.sae
    if (first, end) == (0, loaded.d_sae):
        return sae.encode
    if loaded.architecture not in SLICEABLE:
        return lambda x: sae.encode(x)[..., first:end].contiguous()  # not a view keeping every latent
    sliced = copy.copy(sae)  # shares the hooks and settings; only the per-latent parameters are replaced
    sliced._parameters = dict(sae._parameters)
    sliced._buffers = dict(sae._buffers)
    for name, axis in _PER_LATENT.items():
        if (parameter := sae._parameters.get(name)) is not None:
            part = parameter.detach().narrow(axis, first, end - first).contiguous()
            sliced._parameters[name] = torch.nn.Parameter(part, requires_grad=False)
        if (buffer := sae._buffers.get(name)) is not None:
            sliced._buffers[name] = buffer.narrow(axis, first, end - first).contiguous()
    return sliced.encode
