"""What a latent's decoder direction does, read off the weights alone: logit effects and neighbours.

A decoder row lives in the space of the hook its SAE writes to. Both statistics need it in the
residual stream: hooks that already are residual-stream vectors pass through, an attention ``hook_z``
goes through ``W_O`` and an MLP ``hook_post`` through ``W_out``. Logit effects then follow the path to
the logits as the model computes it: the final norm's centring (LayerNorm only; RMSNorm has none)
and gain (weights are loaded unfolded; Gemma's 1 + w is folded into the gain by transformer-lens's
converter), then the unembedding; the norm's division is a positive scale per token, so the
ranking of tokens is exact and the values are those of a unit-scale residual (Gemma 2's final
soft-cap is monotonic and keeps the ranking). tests/test_architectures.py checks the ranking
against each architecture's own logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer

from analysis.atlas.contract import LOGIT_HIST_BINS, LOGIT_ROWS  # widths the atlas stores
from analysis.atlas.faiss_neighbours import (
    NEIGHBOURS,
    PROBES,
    SAMPLE,
    Neighbours,
    approximate_latents,
    lists_for,
)
from analysis.preflight import EXACT_NEIGHBOURS_UP_TO
from analysis.sae_loading import LoadedSAE

EXACT_BUDGET = 256 << 20  # bytes of similarities the exact scan holds at a time
_COLUMNS = EXACT_BUDGET // (4 * 1024)  # columns a block of up to 1,024 rows is compared with
_RESIDUAL_HOOKS = re.compile(r"(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|hook_embed|hook_pos_embed)$")


@dataclass
class LogitEffects:
    top_tokens: np.ndarray  # [d_sae, 10]
    top_values: np.ndarray
    bottom_tokens: np.ndarray
    bottom_values: np.ndarray
    hist_min: np.ndarray  # [d_sae]
    hist_max: np.ndarray
    hist_counts: np.ndarray  # [d_sae, 50] over [hist_min, hist_max]


@torch.no_grad()
def residual_directions(model: HookedTransformer, loaded: LoadedSAE) -> torch.Tensor | None:
    """The SAE's decoder rows as residual-stream vectors [d_sae, d_model], or None if its hook has no such map."""
    hook = loaded.hook_name_out or loaded.hook_name
    w_dec = loaded.sae.W_dec.detach().float().to(model.cfg.device)
    layer = re.match(r"blocks\.(\d+)\.", hook)
    if _RESIDUAL_HOOKS.search(hook):
        return w_dec
    if layer and hook.endswith("attn.hook_z"):
        w_o = model.get_parameter(f"blocks.{layer.group(1)}.attn.W_O").float()  # [heads, d_head, d_model]
        return torch.einsum("fhd,hdm->fm", w_dec.view(len(w_dec), *w_o.shape[:2]), w_o)
    if layer and hook.endswith("mlp.hook_post"):
        return w_dec @ model.get_parameter(f"blocks.{layer.group(1)}.mlp.W_out").float()
    return None


@torch.no_grad()
def logit_effects(model: HookedTransformer, directions: torch.Tensor, chunk: int = 4096) -> LogitEffects:
    """Top and bottom tokens of each direction pushed through the final LayerNorm and unembedding."""
    parts: list[tuple] = []
    gain = getattr(model.ln_final, "w", None)  # LNPre and RMSNormPre have none
    for start in range(0, len(directions), chunk):
        block = directions[start : start + chunk]
        if model.cfg.normalization_type in ("LN", "LNPre"):
            block = block - block.mean(dim=-1, keepdim=True)
        if gain is not None:
            block = block * gain.float()
        effect = block @ model.W_U.float()
        top = effect.topk(LOGIT_ROWS, dim=1)
        bottom = effect.topk(LOGIT_ROWS, dim=1, largest=False)
        low, high = effect.min(dim=1).values, effect.max(dim=1).values
        width = (high - low).clamp(min=1e-12)
        bins = ((effect - low[:, None]) / width[:, None] * LOGIT_HIST_BINS).long().clamp(0, LOGIT_HIST_BINS - 1)
        counts = torch.zeros(len(block), LOGIT_HIST_BINS, dtype=torch.long, device=block.device).scatter_add_(
            1, bins, torch.ones_like(bins)
        )
        parts.append((top.indices, top.values, bottom.indices, bottom.values, low, high, counts))
    columns = [torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(7)]
    return LogitEffects(*columns)


@torch.no_grad()
def nearest_latents(
    directions: list[torch.Tensor | None],
    budget_bytes: int = EXACT_BUDGET,
    rows: int = 1024,
    columns: int | None = None,
    latent_ranges: list[tuple[int, int]] | None = None,
) -> list[dict[str, Neighbours]]:
    """For every latent of every SAE (of latents ``latent_ranges[i]`` of SAE i when given, a latent-range
    shard's), the 10 latents of the same SAE and of the other SAEs nearest by decoder cosine similarity,
    among all latents. Returns per SAE {scope: (sae [d,10], latent [d,10], cosine [d,10])} arrays.

    Exact, and blocked both ways: a block of ``rows`` latents is compared with ``columns`` latents
    at a time (by default as many as ``budget_bytes`` of float32 similarities hold) and a running top
    10 per scope is merged with each block's, so memory beyond the unit rows is the budget whatever
    the number of latents (all-pairs at 1M latents would be 8 GB per 2,048-row chunk). On a GPU when
    there is one. Time stays O(N^2 d): wide runs go to ``find_neighbours``'s index instead."""
    columns = columns or max(1, budget_bytes // (4 * rows))
    present = {i: d for i, d in enumerate(directions) if d is not None}
    units, owner, local = _stacked(present)
    results: list[dict[str, Neighbours]] = [{} for _ in directions]
    offset = 0
    for i, d in present.items():
        n = len(d)
        first, end = latent_ranges[i] if latent_ranges else (0, n)
        sizes = {"same": n - 1, "other": len(units) - n}
        found: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"same": [], "other": []}
        for start in range(first, end, rows):
            row_ids = torch.arange(offset + start, offset + min(start + rows, end), device=units.device)
            best = {scope: _blocked_top(units, row_ids, owner, i, scope == "same", columns) for scope in found}
            for scope, top in best.items():
                if top is not None:
                    found[scope].append(top)
        for scope, parts in found.items():
            if parts and sizes[scope] > 0:
                values = torch.cat([v for v, _ in parts])
                indices = torch.cat([j for _, j in parts])
                results[i][scope] = (owner[indices].cpu().numpy(), local[indices].cpu().numpy(), values.cpu().numpy())
        offset += n
    return results


def _stacked(present: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unit rows of all SAEs in one tensor (on the GPU when there is one), each row's SAE and
    its latent index in that SAE."""
    device = "cuda" if torch.cuda.is_available() else None
    units = torch.cat([torch.nn.functional.normalize(d.float(), dim=1) for d in present.values()]).to(device)
    owner = torch.cat([torch.full((len(d),), i, dtype=torch.long) for i, d in present.items()]).to(units.device)
    local = torch.cat([torch.arange(len(d)) for d in present.values()]).to(units.device)
    return units, owner, local


def find_neighbours(
    directions: list[torch.Tensor | None],
    approximate_above: int = EXACT_NEIGHBOURS_UP_TO,
    probes: int = PROBES,
    latent_ranges: list[tuple[int, int]] | None = None,
) -> tuple[list[dict[str, Neighbours]], dict]:
    """``nearest_latents`` for runs of at most ``approximate_above`` latents, else faiss's index
    (analysis/atlas/faiss_neighbours.py) with its recall@10 measured against the exact top 10 of
    up to 1,000 sampled latents; and the method as ``meta.neighbours`` records it. With
    ``latent_ranges`` (a latent-range shard's), only those latents' rows are returned; the index
    path searches every latent and keeps the range, so each range's lists are the whole run's."""
    present = [d for d in directions if d is not None]
    total = sum(len(d) for d in present)
    if not present:
        return [{} for _ in directions], {"method": "exact"}
    if total <= approximate_above or any(len(d) <= NEIGHBOURS for d in present):
        return nearest_latents(directions, latent_ranges=latent_ranges), {"method": "exact"}
    found = approximate_latents(directions, probes)
    _fill_short(directions, found)
    method = {"method": "faiss-ivf-flat", "probes": probes, "lists": [lists_for(len(d)) for d in present]}
    method |= {"recall_at_10": same_recall(directions, found), "sampled": min(SAMPLE, total)}
    if latent_ranges:
        found = [
            {
                scope: (owners[first:end], latents[first:end], cosines[first:end])
                for scope, (owners, latents, cosines) in sae.items()
            }
            for sae, (first, end) in zip(found, latent_ranges)
        ]
    return found, method


def _fill_short(directions: list[torch.Tensor | None], found: list[dict[str, Neighbours]]) -> None:
    """The exact answer, in place, for the latents whose probed lists held fewer than 10 candidates
    (faiss marks the missing ones -1; rare, from small lists)."""
    short = {
        (i, scope): np.flatnonzero((ids < 0).any(axis=1))
        for i, near in enumerate(found)
        for scope, (_, ids, _) in near.items()
    }
    short = {key: rows for key, rows in short.items() if len(rows)}
    if not short:
        return
    present = {i: d for i, d in enumerate(directions) if d is not None}
    units, owner, local = _stacked(present)
    offsets = dict(zip(present, np.cumsum([0, *(len(d) for d in present.values())])))
    for (i, scope), rows in short.items():
        row_ids = torch.from_numpy(rows + offsets[i]).to(units.device)
        top = _blocked_top(units, row_ids, owner, i, scope == "same", _COLUMNS)
        assert top is not None  # the scope has more than 10 latents, or faiss would have found none
        owners, latents, cosines = found[i][scope]
        owners[rows], latents[rows], cosines[rows] = (t.cpu().numpy() for t in (owner[top[1]], local[top[1]], top[0]))


def same_recall(directions: list[torch.Tensor | None], found: list[dict[str, Neighbours]]) -> float:
    """The share of the exact same-SAE top 10 that ``found`` holds, over up to ``SAMPLE`` latents
    drawn evenly from the run (seeded), the exact ones by a blocked scan of the sampled rows."""
    present = {i: d for i, d in enumerate(directions) if d is not None}
    total = sum(len(d) for d in present.values())
    picks = np.sort(np.random.default_rng(0).choice(total, min(SAMPLE, total), replace=False))
    hits = 0
    offset = 0
    for i, d in present.items():
        mine = torch.from_numpy(picks[(picks >= offset) & (picks < offset + len(d))] - offset)
        offset += len(d)
        if len(mine) == 0:
            continue
        units = torch.nn.functional.normalize(d.float(), dim=1)
        exact = _blocked_top(
            units,
            mine.to(units.device),
            torch.zeros(len(units), dtype=torch.long, device=units.device),
            0,
            True,
            _COLUMNS,
        )
        assert exact is not None  # find_neighbours sends no SAE of 10 latents or fewer here
        approximate = torch.from_numpy(found[i]["same"][1][mine.numpy()])
        hits += int((approximate[:, :, None] == exact[1].cpu()[:, None, :]).any(dim=1).sum())
    return round(hits / (len(picks) * NEIGHBOURS), 4)


def _blocked_top(
    units: torch.Tensor, row_ids: torch.Tensor, owner: torch.Tensor, sae: int, same: bool, columns: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The top-10 (cosine, global index) of each row among latents of SAE ``sae`` (``same``) or of
    the others, excluding the row itself, scanning ``columns`` latents at a time."""
    keep_all = (owner == sae) if same else (owner != sae)
    k = min(NEIGHBOURS, int(keep_all.sum()) - same)
    if k <= 0:
        return None
    rows = units[row_ids]
    top_values = rows.new_full((len(row_ids), k), -torch.inf)
    top_indices = torch.zeros((len(row_ids), k), dtype=torch.long, device=units.device)
    for start in range(0, len(units), columns):
        keep = keep_all[start : start + columns]
        if not keep.any():
            continue
        similarity = rows @ units[start : start + columns].T
        similarity.masked_fill_(~keep[None, :], -torch.inf)
        own = (row_ids >= start) & (row_ids < start + len(keep))
        similarity[own.nonzero()[:, 0], row_ids[own] - start] = -torch.inf
        block = similarity.topk(min(k, similarity.shape[1]), dim=1)
        merged_values = torch.cat([top_values, block.values], dim=1)
        merged_indices = torch.cat([top_indices, block.indices + start], dim=1)
        top = merged_values.topk(k, dim=1)
        top_values, top_indices = top.values, merged_indices.gather(1, top.indices)
    return top_values, top_indices
