"""Approximate nearest latents by decoder cosine for SAEs too wide for the exact O(N^2 d) scan.

An inverted-file (IVF) index, as faiss's IndexIVFFlat, written in torch: spherical k-means puts
the unit decoder rows into ~sqrt(N) lists; each list's latents are compared exactly with the
latents of the ``probes`` lists whose centroids are nearest to their own list's centroid. Work is
N x probes x N / lists x d instead of N^2 d (at 1M latents and 8 probes, ~1/128 of it), and memory
is one list's block of similarities at a time.

Why our own rather than faiss: the decoder rows are already torch tensors on the model's device
(CPU or CUDA, the same code), the atlas needs one top-10 per latent, which a probe per list (not
per query) computes as dense blocks, and it adds no dependency. Recall against the exact answer is
measured by ``recall_at_k`` (bench/neighbours_scale.py reports it).
"""

from __future__ import annotations

import math

import torch

from analysis.atlas.weight_stats import NEIGHBOURS


@torch.no_grad()
def _kmeans(units: torch.Tensor, lists: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Spherical k-means centroids [lists, d] fitted on a sample of at most 64 rows per list."""
    sample = units[torch.randperm(len(units), generator=generator)[: 64 * lists].to(units.device)]
    centroids = sample[:lists].clone()
    for _ in range(iterations):
        assign = (sample @ centroids.T).argmax(dim=1)
        summed = torch.zeros_like(centroids).index_add_(0, assign, sample)
        empty = summed.norm(dim=1) == 0
        summed[empty] = centroids[empty]
        centroids = torch.nn.functional.normalize(summed, dim=1)
    return centroids


def _assign(units: torch.Tensor, centroids: torch.Tensor, block: int = 65536) -> torch.Tensor:
    return torch.cat([(units[i : i + block] @ centroids.T).argmax(dim=1) for i in range(0, len(units), block)])


@torch.no_grad()
def approximate_nearest(
    directions: torch.Tensor, k: int = NEIGHBOURS, probes: int = 8, lists: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cosine [N, k], index [N, k]) of each row's approximately nearest other rows."""
    units = torch.nn.functional.normalize(directions.float(), dim=1)
    n = len(units)
    lists = lists or max(1, round(math.sqrt(n)))
    probes = min(probes, lists)
    generator = torch.Generator().manual_seed(seed)
    centroids = _kmeans(units, lists, iterations=8, generator=generator)
    assign = _assign(units, centroids)
    order = torch.argsort(assign)
    counts = torch.bincount(assign, minlength=lists).tolist()
    starts = [0, *torch.tensor(counts).cumsum(0).tolist()]
    members = [order[starts[c] : starts[c + 1]] for c in range(lists)]
    nearest_lists = (centroids @ centroids.T).topk(probes, dim=1).indices.tolist()
    values = units.new_full((n, k), -torch.inf)
    indices = torch.full((n, k), -1, dtype=torch.long, device=units.device)
    for c, queries in enumerate(members):
        if len(queries) == 0:
            continue
        candidates = torch.cat([members[p] for p in nearest_lists[c]])
        similarity = units[queries] @ units[candidates].T
        similarity[candidates[None, :] == queries[:, None]] = -torch.inf  # not itself
        top = similarity.topk(min(k, similarity.shape[1]), dim=1)
        values[queries, : top.values.shape[1]] = top.values
        indices[queries, : top.values.shape[1]] = candidates[top.indices]
    return values, indices


@torch.no_grad()
def exact_nearest(directions: torch.Tensor, rows: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """The exact top-k indices of the given rows (a sample, to measure recall against)."""
    units = torch.nn.functional.normalize(directions.float(), dim=1)
    similarity = units[rows] @ units.T
    similarity[torch.arange(len(rows)), rows] = -torch.inf
    return similarity.topk(k, dim=1).indices


def recall_at_k(approximate: torch.Tensor, exact: torch.Tensor) -> float:
    """The share of the exact top-k that the approximate top-k found, over the sampled rows."""
    hits = (approximate[:, :, None] == exact[:, None, :]).any(dim=1).sum()
    return float(hits) / exact.numel()
