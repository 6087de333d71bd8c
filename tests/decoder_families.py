"""Synthetic SAE decoders with the structure real ones have, for the neighbour tests and bench.

Random unit vectors are the wrong test of a nearest-neighbour index: in 768 dimensions every pair
is about equally far apart (cosine 0 +- 0.04), so there are no neighbours to find. Real SAE
decoders come in families (feature splitting: a parent direction refined into children, each
split again into latents). So, seeded: ``parents`` random unit directions; ``n // 8`` children,
each a parent plus a random unit offset of norm ``child_noise`` (cosine to the parent 0.78 at 0.8);
each latent a child plus a random unit offset of norm ``latent_noise`` (cosine to the child 0.71 at
1.0), normalised. A latent's exact top 10 are then mostly its ~7 siblings (cosine ~0.5) and a few
cousins under the same parent (~0.3), against ~0.15 for the best unrelated latent among 1M.
"""

from __future__ import annotations

import torch


def decoder_families(
    n: int, width: int, parents: int = 4096, child_noise: float = 0.8, latent_noise: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """``n`` unit rows [n, width], generated 65,536 at a time so memory stays the result's."""
    generator = torch.Generator().manual_seed(seed)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=1)

    roots = unit(torch.randn(parents, width, generator=generator))
    children = max(1, n // 8)
    child_parent = torch.randint(0, parents, (children,), generator=generator)
    child = unit(roots[child_parent] + child_noise * unit(torch.randn(children, width, generator=generator)))
    rows = torch.empty(n, width)
    for start in range(0, n, 65_536):
        m = min(65_536, n - start)
        own = child[torch.randint(0, children, (m,), generator=generator)]
        rows[start : start + m] = unit(own + latent_noise * unit(torch.randn(m, width, generator=generator)))
    return rows
