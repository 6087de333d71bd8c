"""Approximate nearest latents by decoder cosine with faiss, for runs too wide for the exact scan.

The exact scan (``weight_stats.nearest_latents``) is O(N^2 d): about 10 CPU-minutes at 131k
latents of width 768 on this project's CPU, 10 CPU-hours at 1M. Above ``--exact-neighbours-up-to``
latents (``preflight.EXACT_NEIGHBOURS_UP_TO``) ``precompute`` uses faiss's IndexIVFFlat with inner
product on unit rows instead (a well-kept library rather than our own index): k-means puts each SAE's rows into ``lists`` inverted lists and a query is compared exactly
with the rows of its ``probes`` nearest lists. IVF-Flat rather than HNSW, on measurements
(docs/PERFORMANCE.md): at the same recall it built and searched faster here, its result does not
depend on thread scheduling (HNSW's multi-threaded insertion does), and its memory is the rows
plus the centroids. Each SAE has its own index, so ``same`` searches the SAE's own index and
``other`` merges the top 10 of every other SAE's index, as the exact scan's scopes do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import faiss
import numpy as np
import torch

NEIGHBOURS = 10  # as weight_stats.NEIGHBOURS; that module imports this one
PROBES = 8
SAMPLE = 1_000  # latents whose exact neighbours the recall recorded in the atlas is measured on
_BLOCK = 16_384  # rows normalised, added or searched at a time
Neighbours = tuple[np.ndarray, np.ndarray, np.ndarray]  # (sae, latent, cosine), each [d_sae, NEIGHBOURS]


def lists_for(n: int) -> int:
    """Inverted lists for ``n`` rows: 2 sqrt(n), at least 64 rows a list (so that ``PROBES`` lists
    hold far more than 10 candidates). Training costs 64 lists^2 d and each query lists d + probes n /
    lists d: 2 sqrt(n) keeps both within a CPU's reach at 1M latents (docs/PERFORMANCE.md)."""
    return max(1, min(round(2 * math.sqrt(n)), n // 64))


def _unit_blocks(rows: torch.Tensor) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(rows), _BLOCK):
        block = torch.nn.functional.normalize(rows[start : start + _BLOCK].float(), dim=1)
        yield start, np.ascontiguousarray(block.cpu().numpy())


def build_index(rows: torch.Tensor, probes: int = PROBES, seed: int = 0, lists: int = 0) -> faiss.IndexIVFFlat:
    """An IVF-Flat inner-product index of the unit ``rows``, trained on at most 64 rows a list
    (k-means on a seeded sample: the same rows give the same index); ``lists_for`` lists unless given."""
    n, width = rows.shape
    lists = lists or lists_for(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = 64
    index.cp.seed = seed
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * lists), replace=False))
    index.train(np.ascontiguousarray(torch.nn.functional.normalize(rows[sample].float(), dim=1).cpu().numpy()))
    for _, block in _unit_blocks(rows):
        index.add(block)
    index.nprobe = min(probes, lists)
    return index


def _search(index: faiss.IndexIVFFlat, rows: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    values, ids = np.empty((len(rows), k), np.float32), np.empty((len(rows), k), np.int64)
    for start, block in _unit_blocks(rows):
        values[start : start + len(block)], ids[start : start + len(block)] = index.search(block, k)
    return values, ids


def same_sae_neighbours(index: faiss.IndexIVFFlat, rows: torch.Tensor, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The top 10 in their own SAE's index, without themselves, of ``rows``: rows ``first`` on of it."""
    values, ids = _search(index, rows, NEIGHBOURS + 1)
    own = ids == np.arange(first, first + len(rows))[:, None]
    # drop the row itself where it was found, else the 11th
    keep = ~own & ~((~own.any(axis=1))[:, None] & (np.arange(NEIGHBOURS + 1) == NEIGHBOURS))
    return values[keep].reshape(-1, NEIGHBOURS), ids[keep].reshape(-1, NEIGHBOURS)


def approximate_latents(directions: list[torch.Tensor | None], probes: int = PROBES) -> list[dict[str, Neighbours]]:
    """``weight_stats.nearest_latents``'s result, approximately: per SAE {scope: (sae, latent, cosine)}.
    A latent whose probed lists hold fewer than 10 candidates (rare: small lists) gets -1 latents at
    the end, which ``weight_stats.find_neighbours`` replaces by an exact search of those latents."""
    present = {i: d for i, d in enumerate(directions) if d is not None}
    indexes = {i: build_index(d, probes) for i, d in present.items()}
    results: list[dict[str, Neighbours]] = [{} for _ in directions]
    for i, rows in present.items():
        values, ids = same_sae_neighbours(indexes[i], rows)
        results[i]["same"] = (np.full(ids.shape, i), ids, values)
        others = [(j, _search(index, rows, NEIGHBOURS)) for j, index in indexes.items() if j != i]
        if others:
            values = np.concatenate([v for _, (v, _) in others], axis=1)
            ids = np.concatenate([found for _, (_, found) in others], axis=1)
            owner = np.concatenate([np.full((len(rows), NEIGHBOURS), j) for j, _ in others], axis=1)
            values[ids < 0] = -np.inf
            best = np.argsort(-values, axis=1, kind="stable")[:, :NEIGHBOURS]
            owner, ids, values = (np.take_along_axis(a, best, axis=1) for a in (owner, ids, values))
            results[i]["other"] = (owner, ids, values)
    return results
