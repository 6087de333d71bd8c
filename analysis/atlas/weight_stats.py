"""What a latent's decoder direction does, read off the weights alone: logit effects and neighbours.

A decoder row lives in the space of the hook its SAE writes to. Both statistics need it in the
residual stream: hooks that already are residual-stream vectors pass through, an attention ``hook_z``
goes through ``W_O`` and an MLP ``hook_post`` through ``W_out``. Logit effects then follow the path to
the logits as the model computes it: the final LayerNorm's centring and gain (weights are loaded
unfolded), then the unembedding; the LayerNorm's division by the norm is a positive scale per
token, so the ranking of tokens is exact and the values are those of a unit-scale residual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformer_lens import HookedTransformer

from analysis.atlas.contract import LOGIT_HIST_BINS, LOGIT_ROWS  # widths the atlas stores
from analysis.sae_loading import LoadedSAE

NEIGHBOURS = 10
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
        w_o = model.blocks[int(layer.group(1))].attn.W_O.float()  # [heads, d_head, d_model]
        return torch.einsum("fhd,hdm->fm", w_dec.view(len(w_dec), *w_o.shape[:2]), w_o)
    if layer and hook.endswith("mlp.hook_post"):
        return w_dec @ model.blocks[int(layer.group(1))].mlp.W_out.float()
    return None


@torch.no_grad()
def logit_effects(model: HookedTransformer, directions: torch.Tensor, chunk: int = 4096) -> LogitEffects:
    """Top and bottom tokens of each direction pushed through the final LayerNorm and unembedding."""
    parts: list[tuple] = []
    ln = model.ln_final
    for start in range(0, len(directions), chunk):
        block = directions[start : start + chunk]
        if model.cfg.normalization_type in ("LN", "LNPre"):
            block = block - block.mean(dim=-1, keepdim=True)
        if getattr(ln, "w", None) is not None:
            block = block * ln.w.float()
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
def nearest_latents(directions: list[torch.Tensor | None], chunk: int = 2048) -> list[dict[str, np.ndarray]]:
    """For every latent of every SAE, the 10 latents of the same SAE and of the other SAEs nearest by
    decoder cosine similarity. Returns per SAE {scope: (sae [d,10], latent [d,10], cosine [d,10])} arrays."""
    present = [i for i, d in enumerate(directions) if d is not None]
    units = torch.cat([torch.nn.functional.normalize(directions[i].float(), dim=1) for i in present])
    owner = torch.cat([torch.full((len(directions[i]),), i, dtype=torch.long) for i in present]).to(units.device)
    local = torch.cat([torch.arange(len(directions[i])) for i in present]).to(units.device)
    results: list[dict[str, np.ndarray]] = [{} for _ in directions]
    offset = 0
    for i in present:
        n = len(directions[i])
        scopes: dict[str, list[list[torch.Tensor]]] = {"same": [[], [], []], "other": [[], [], []]}
        for start in range(0, n, chunk):
            rows = torch.arange(offset + start, offset + min(start + chunk, n), device=units.device)
            similarity = units[rows] @ units.T
            similarity[torch.arange(len(rows)), rows] = -torch.inf
            for scope, keep in (("same", owner == i), ("other", owner != i)):
                masked = similarity.masked_fill(~keep[None, :], -torch.inf)
                k = min(NEIGHBOURS, int(keep.sum()) - (scope == "same"))
                if k <= 0:
                    continue
                best = masked.topk(k, dim=1)
                scopes[scope][0].append(owner[best.indices])
                scopes[scope][1].append(local[best.indices])
                scopes[scope][2].append(best.values)
        for scope, (saes, latents, cosines) in scopes.items():
            if saes:
                results[i][scope] = tuple(torch.cat(x).cpu().numpy() for x in (saes, latents, cosines))
        offset += n
    return results
