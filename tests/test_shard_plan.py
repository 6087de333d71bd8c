"""Shard plans cover every window once, and the stated memory formula is what FeatureStats holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.atlas.feature_stats import FeatureStats
from analysis.atlas.memory_estimate import state_bytes, state_bytes_per_latent
from analysis.atlas.shard_plan import MAX_SHARD_WINDOWS, plan_shards


def nbytes(stats: FeatureStats) -> int:
    return sum(t.numel() * t.element_size() for t in stats.tensors().values())


@pytest.mark.parametrize("windows, slots", [(1, 4), (7, 2), (128, 2), (100_000, 3), (781_250, 8)])
def test_a_plan_covers_every_window_once_in_equal_rounds(windows, slots):
    plan = plan_shards(windows, slots)
    covered = np.concatenate([np.arange(windows)[list(plan.windows_of(i))] for i in range(plan.shards)])
    assert (covered == np.arange(windows)).all()
    assert max(len(plan.windows_of(i)) for i in range(plan.shards)) <= max(MAX_SHARD_WINDOWS, 1)
    assert plan.shards % slots == 0 or plan.shards == windows


def test_latent_ranges_cut_every_window_shard():
    plan = plan_shards(100, 2, latent_shards=3)
    assert plan.shards == 2 and plan.tasks() == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_the_state_formula_is_the_size_of_featurestats_on_the_demo(demo_saes):
    """Every demo SAE's running state, fresh and after a batch of its real activations, weighs what
    the documented formula says (the per-latent bytes the SCALE.md estimate rests on)."""
    torch.manual_seed(0)
    for loaded in demo_saes:
        for top_k, context in ((20, 128), (5, 64)):
            stats = FeatureStats.empty(loaded.d_sae, top_k, context, salt=0)
            assert nbytes(stats) == state_bytes(loaded.d_sae, top_k, context)
            inputs = torch.randn(2, context, loaded.sae.cfg.d_in)
            with torch.no_grad():
                acts = loaded.sae.encode(inputs).float()
            stats.update(acts, torch.arange(2), torch.ones(2, context, dtype=torch.bool))
            assert int(stats.fire_count.sum()) > 0 and nbytes(stats) == state_bytes(loaded.d_sae, top_k, context)
    assert state_bytes_per_latent(20, 128) == 39_936  # what SCALE.md quotes: 39 KiB per latent at K=20, context 128
