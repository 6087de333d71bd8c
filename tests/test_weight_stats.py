"""Nearest neighbours by decoder cosine: the blocked search equals a brute-force all-pairs pass,
whatever the block sizes (blocks smaller than an SAE, straddling two SAEs, larger than all, or
sized from a memory budget)."""

import pytest
import torch

from analysis.atlas.weight_stats import nearest_latents


@pytest.fixture(scope="module")
def directions() -> list[torch.Tensor | None]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(300, 16, generator=generator), None, torch.randn(170, 16, generator=generator)]


@pytest.mark.parametrize(
    "blocks",
    [
        {"rows": 64, "columns": 50},
        {"rows": 7, "columns": 333},
        {"rows": 10_000, "columns": 10_000},
        {"rows": 64, "budget_bytes": 64 * 120 * 4},  # 120 columns of float32 similarities
        {},  # the default budget: one block
    ],
)
def test_blocked_neighbours_equal_brute_force(directions, blocks):
    found = nearest_latents(directions, **blocks)
    units = [torch.nn.functional.normalize(d, dim=1) if d is not None else None for d in directions]
    assert found[1] == {}
    for sae, other in ((0, 2), (2, 0)):
        unit, other_unit = units[sae], units[other]
        assert unit is not None and other_unit is not None  # only SAE 1 has no directions
        same = unit @ unit.T
        same.fill_diagonal_(-2)
        best = same.topk(10)
        owners, latents, cosines = found[sae]["same"]
        assert (owners == sae).all() and (latents == best.indices.numpy()).all()
        assert torch.allclose(torch.from_numpy(cosines), best.values, atol=1e-6)
        across = (unit @ other_unit.T).topk(10)
        owners, latents, cosines = found[sae]["other"]
        assert (owners == other).all() and (latents == across.indices.numpy()).all()
        assert torch.allclose(torch.from_numpy(cosines), across.values, atol=1e-6)
