"""How a ``precompute --ray`` run is cut into shards, and how much memory one shard's worker needs.

Shards are slices of the windows (``precompute --shard i/n``): a worker runs the whole model and
every SAE over its windows, so its memory is the running state of every latent plus one batch.
The running state is fixed by ``FeatureStats``' shapes (top-K windows and interval samples with
their whole windows of activations dominate); the batch part grows with the batch's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.atlas.feature_stats import HIST_BINS, INTERVAL_SAMPLES, LOG_BINS, N_INTERVALS

# Windows per shard at most (8.4M tokens at a context of 128). Each shard writes a whole partial
# atlas (every latent's tables) and redoes the weight statistics, so shards are few: one per worker
# until they pass this size, then more, which also evens out workers of different speeds. A lost
# shard costs little either way: its rerun resumes from the shard's last checkpoint.
MAX_SHARD_WINDOWS = 65536


def state_bytes_per_latent(top_k: int, context: int) -> int:
    """Bytes of ``FeatureStats`` running state per latent (one SAE's state is this × d_sae + 8).

    Per latent: fire count, sum, max, range exponent, one L0 bin (8+8+4+4+8); the linear, log and
    interval histograms (int64); the top-K windows (value f32, window and position int64, the
    window's activations f32); and ``N_INTERVALS × INTERVAL_SAMPLES`` samples (key and token int64,
    value f32, the window's activations f16).
    """
    scalars = 8 + 8 + 4 + 4 + 8
    histograms = 8 * (HIST_BINS + LOG_BINS + N_INTERVALS)
    top = top_k * (4 + 8 + 8 + 4 * context)
    samples = N_INTERVALS * INTERVAL_SAMPLES * (8 + 8 + 4 + 2 * context)
    return scalars + histograms + top + samples


def state_bytes(d_sae: int, top_k: int, context: int) -> int:
    """Bytes of one SAE's ``FeatureStats`` (L0 histogram has d_sae + 1 bins)."""
    return d_sae * state_bytes_per_latent(top_k, context) + 8


def batch_bytes_per_token(d_sae_max: int, context: int) -> int:
    """Bytes per token of a batch for the SAE side of one step (SAEs are encoded one at a time).

    The encoder's pre-activations and the dense activations (f32 each, 8 × d_sae), and the
    per-window maxima behind the top-K update (f32 per window and latent: 4 × d_sae / context).
    The model's own forward pass and the sparse entries (about 40 bytes per firing latent) come on top.
    """
    return 8 * d_sae_max + math.ceil(4 * d_sae_max / context)


@dataclass(frozen=True)
class ShardPlan:
    """``shards`` slices of ``total_windows`` windows, ``slots`` of them running at once."""

    total_windows: int
    shards: int
    slots: int

    def windows_of(self, shard: int) -> range:
        """The windows ``precompute --shard shard/shards`` processes (the same arithmetic)."""
        return range(shard * self.total_windows // self.shards, (shard + 1) * self.total_windows // self.shards)


def plan_shards(total_windows: int, slots: int) -> ShardPlan:
    """At least one shard per slot, no shard over ``MAX_SHARD_WINDOWS``, a multiple of the slots
    (so every worker gets as many), never more shards than windows."""
    rounds = math.ceil(total_windows / (MAX_SHARD_WINDOWS * slots))
    return ShardPlan(total_windows, max(1, min(total_windows, rounds * slots)), slots)
