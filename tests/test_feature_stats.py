"""FeatureStats against a brute-force computation over the same dense activations."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from analysis.atlas.feature_stats import (
    HIST_BINS,
    INTERVAL_SAMPLES,
    N_INTERVALS,
    FeatureStats,
    linear_bin,
    log_bin,
    range_exponent,
    sample_keys,
)

WINDOWS, CONTEXT, D_SAE, TOP_K, SALT = 24, 16, 12, 5, 7


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    """Sparse non-negative activations with many exact ties (values on a 0.25 grid), one dead latent."""
    generator = torch.Generator().manual_seed(0)
    raw = torch.relu(torch.randn(WINDOWS, CONTEXT, D_SAE, generator=generator) * 2 - 1.5)
    raw = torch.round(raw * 4) / 4 * torch.linspace(0.5, 3, D_SAE)
    raw[:, 0, :] = 0  # position 0 is BOS
    raw[..., 3] = 0  # latent 3 never fires
    return raw


def counted_mask(n_windows: int) -> torch.Tensor:
    mask = torch.ones(n_windows, CONTEXT, dtype=torch.bool)
    mask[:, 0] = False
    return mask


def build(acts: torch.Tensor, window_ids: list[int], batch: int) -> FeatureStats:
    stats = FeatureStats.empty(D_SAE, TOP_K, CONTEXT, SALT)
    for start in range(0, len(window_ids), batch):
        ids = torch.tensor(window_ids[start : start + batch])
        stats.update(acts[ids], ids, counted_mask(len(ids)))
    return stats.canonical()  # best first, the order the atlas stores


def brute_force(acts: torch.Tensor) -> dict:
    """Every statistic computed latent by latent from the full dense tensor."""
    out: dict = {"top": [], "samples": [], "hist": [], "intervals": []}
    for latent in range(D_SAE):
        a = acts[..., latent]
        firing = a > 0
        values = a[firing]
        top_max = a.max()
        exponent = range_exponent(top_max.reshape(1)).expand(len(values))
        out["hist"].append(torch.bincount(linear_bin(values, exponent, HIST_BINS), minlength=HIST_BINS))
        window_max = a.max(dim=1).values
        order = sorted((-float(v), w) for w, v in enumerate(window_max) if v > 0)[:TOP_K]
        out["top"].append([(w, -v, int((a[w] == -v).nonzero()[0])) for v, w in order])
        window, position = firing.nonzero(as_tuple=True)
        tokens = window * CONTEXT + position
        keys = sample_keys(tokens, torch.full_like(tokens, latent), SALT)
        interval = linear_bin(values, exponent, N_INTERVALS)
        out["intervals"].append(torch.bincount(interval, minlength=N_INTERVALS))
        chosen = set()
        for i in range(N_INTERVALS):
            members = sorted((int(k), int(t)) for k, t, iv in zip(keys, tokens, interval) if iv == i)
            chosen |= {(i, t) for _, t in members[:INTERVAL_SAMPLES]}
        out["samples"].append(chosen)
    out["fire_count"] = (acts > 0).sum(dim=(0, 1))
    out["max"] = acts.amax(dim=(0, 1))
    out["sum"] = acts.double().sum(dim=(0, 1))
    nonzero = acts[acts > 0]
    out["log_hist_total"] = torch.bincount(log_bin(nonzero)).sum()
    return out


def top_of(stats: FeatureStats, latent: int) -> list[tuple[int, float, int]]:
    valid = stats.top_window[latent] >= 0
    return [
        (int(w), float(v), int(p))
        for w, v, p in zip(
            stats.top_window[latent][valid], stats.top_value[latent][valid], stats.top_position[latent][valid]
        )
    ]


def samples_of(stats: FeatureStats, latent: int) -> set[tuple[int, int]]:
    interval, slot = (stats.sample_token[latent] >= 0).nonzero(as_tuple=True)
    return {(int(i), int(stats.sample_token[latent, i, s])) for i, s in zip(interval, slot)}


@pytest.mark.parametrize("batch", [1, 5, WINDOWS])
def test_every_statistic_matches_brute_force_whatever_the_batch_size(acts, batch):
    stats = build(acts, list(range(WINDOWS)), batch)
    expected = brute_force(acts)
    assert torch.equal(stats.fire_count, expected["fire_count"])
    assert torch.equal(stats.max_act, expected["max"])
    assert torch.allclose(stats.act_sum, expected["sum"])
    assert stats.log_hist.sum() == expected["log_hist_total"]
    assert int(stats.fire_count[3]) == 0 and stats.top_window[3].eq(-1).all()
    for latent in range(D_SAE):
        assert torch.equal(stats.hist[latent], expected["hist"][latent]), latent
        assert torch.equal(stats.interval_count[latent], expected["intervals"][latent]), latent
        assert top_of(stats, latent) == expected["top"][latent], latent
        assert samples_of(stats, latent) == expected["samples"][latent], latent
        for slot, (window, _, _) in enumerate(expected["top"][latent]):
            assert torch.equal(stats.top_acts[latent, slot], acts[window, :, latent])


def test_l0_distribution_leaves_out_special_tokens(acts):
    stats = build(acts, list(range(WINDOWS)), 8)
    per_token = (acts[:, 1:] > 0).sum(-1).flatten()
    assert torch.equal(stats.l0_counts, torch.bincount(per_token, minlength=D_SAE + 1))


def test_combining_halves_in_either_order_equals_one_pass(acts):
    one_pass = build(acts, list(range(WINDOWS)), 4)
    ids = list(range(WINDOWS))
    first, second = build(acts, ids[::2], 3), build(acts, ids[1::2], 3)
    first.combine(second)
    later, earlier = build(acts, ids[1::2], 3), build(acts, ids[::2], 3)
    later.combine(earlier)
    for merged in (first.canonical(), later.canonical()):
        for name, tensor in one_pass.tensors().items():
            if name == "act_sum":
                assert torch.allclose(getattr(merged, name), tensor), name
            else:
                assert torch.equal(getattr(merged, name), tensor), name


def test_linear_bins_are_exact_at_bin_edges():
    """A bin is floor(v / 2**e * bins) in exact arithmetic (docs/SCHEMA.md): the largest float32 under
    each edge k / bins * 2**e belongs to bin k - 1; float32 arithmetic rounded 10 in 99 of them up."""
    for e in (-3, 0, 5):
        scale = Fraction(2) ** e
        values, expected = [], []
        for k in range(1, HIST_BINS):
            v = np.float32(k / HIST_BINS * 2.0**e)
            while Fraction(float(v)) * HIST_BINS >= k * scale:
                v = np.nextafter(v, np.float32(0))
            values.append(v)
            expected.append(math.floor(Fraction(float(v)) * HIST_BINS / scale))
        exponent = torch.full((len(values),), e, dtype=torch.int32)
        assert linear_bin(torch.tensor(np.array(values)), exponent, HIST_BINS).tolist() == expected
