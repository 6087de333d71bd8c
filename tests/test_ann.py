"""The approximate nearest-latents index (analysis/atlas/ann.py) against the exact answer."""

from __future__ import annotations

import torch

from analysis.atlas.ann import approximate_nearest, exact_nearest, recall_at_k


def families(n: int, width: int, noise: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(n // 16, width, generator=generator)  # families of 16: the top 10 are siblings
    return anchors[torch.arange(n) % len(anchors)] + noise * torch.randn(n, width, generator=generator)


def test_the_index_finds_the_exact_neighbours_of_clustered_directions_and_never_a_latent_itself():
    x = families(4096, 64, noise=0.5)
    values, indices = approximate_nearest(x, probes=8)
    rows = torch.arange(0, 4096, 7)
    assert recall_at_k(indices[rows], exact_nearest(x, rows)) > 0.95
    assert not (indices == torch.arange(4096)[:, None]).any()
    units = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(values, (units[:, None, :] * units[indices]).sum(-1), atol=1e-5, rtol=0)
    assert (values[:, :-1] >= values[:, 1:]).all()  # best first


def test_probing_every_list_is_the_exact_search():
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(1))
    _, indices = approximate_nearest(x, probes=1000)
    assert recall_at_k(indices, exact_nearest(x, torch.arange(512))) == 1.0
