"""How a ``precompute --ray`` run is cut into shards: slices of the windows (``--shard i/n``),
each of them also cut into latent ranges when asked (``--latent-shard j/m``); a worker's memory
for one shard is ``memory_estimate.worker_memory``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Windows per shard at most (8.4M tokens at a context of 128). Each shard writes a whole partial
# atlas (every latent's tables) and redoes the weight statistics, so shards are few: one per worker
# until they pass this size, then more, which also evens out workers of different speeds. A lost
# shard costs little either way: its rerun resumes from the shard's last checkpoint.
MAX_SHARD_WINDOWS = 65536


@dataclass(frozen=True)
class ShardPlan:
    """``shards`` slices of ``total_windows`` windows, each cut into ``latent_shards`` latent ranges:
    ``shards × latent_shards`` tasks, ``slots`` of them running at once."""

    total_windows: int
    shards: int
    slots: int
    latent_shards: int = 1

    def tasks(self) -> list[tuple[int, int]]:
        """(window shard, latent range) of every task, window shards first so that a window's
        latent ranges finish close together."""
        return [(i, j) for i in range(self.shards) for j in range(self.latent_shards)]

    def windows_of(self, shard: int) -> range:
        """The windows ``precompute --shard shard/shards`` processes (the same arithmetic)."""
        return range(shard * self.total_windows // self.shards, (shard + 1) * self.total_windows // self.shards)


def plan_shards(total_windows: int, slots: int, latent_shards: int = 1) -> ShardPlan:
    """At least one window shard per slot, no shard over ``MAX_SHARD_WINDOWS``, a multiple of the
    slots (so every worker gets as many), never more shards than windows; each cut into
    ``latent_shards`` latent ranges (for memory: every range redoes the model's forward pass)."""
    rounds = math.ceil(total_windows / (MAX_SHARD_WINDOWS * slots))
    return ShardPlan(total_windows, max(1, min(total_windows, rounds * slots)), slots, latent_shards)
