"""Texts as the vectors a detector reads: one SAE's latents (and the raw activations at its hook,
for the dense baseline) pooled over each text's tokens, BOS left out.

Texts are run in batches, right-padded: the model is causal, so padding after a text cannot change
its activations, and no attention mask is needed. The forward stops at the SAE's hook
(``hook_activations``), which is the whole cost advantage of a detector over a full forward; the same
batching runs the full forward it is timed against (``full_forward``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.hooked_forward import run_to_hooks, stop_layer
from analysis.live_model import LiveModel
from analysis.sae_loading import LoadedSAE
from analysis.text_activations import ENCODE_FLOATS

POOLS = ("max", "mean")
BATCH_TOKENS = 8192  # padded tokens per forward
RESID_PRE = re.compile(r"blocks\.(\d+)\.hook_resid_pre")


@dataclass(frozen=True)
class Pooled:
    """Per text: the SAE's latents and (when asked) the raw hook activations, pooled; how many
    tokens each text had cut from the left to fit the model's context."""

    latents: np.ndarray  # [texts, d_sae] float32
    resid: np.ndarray | None  # [texts, d_in] float32
    cut: list[int]


def token_ids(live: LiveModel, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Each text's ids (BOS first when the tokenizer has one, cut from the left to the context)."""
    ids, cuts = [], []
    for text in texts:
        tensor, cut = live.tokenize(text)
        ids.append(tensor[0].tolist())
        cuts.append(cut)
    return ids, cuts


def _batches(lengths: Sequence[int]) -> list[list[int]]:
    """Text indices grouped by similar length so that padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[index] <= BATCH_TOKENS:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _padded(live: LiveModel, ids: list[list[int]], batch: list[int]) -> torch.Tensor:
    width = max(len(ids[i]) for i in batch)
    pad = live.tokenizer.pad_token_id or 0
    rows = [ids[i] + [pad] * (width - len(ids[i])) for i in batch]
    return torch.tensor(rows, device=live.device)


def _pool_into(out: torch.Tensor, segment: torch.Tensor, values: torch.Tensor, pool: str) -> None:
    if pool == "max":
        out.scatter_reduce_(0, segment.unsqueeze(1).expand_as(values), values, "amax", include_self=True)
    else:
        out.index_add_(0, segment, values)


def hook_activations(live: LiveModel, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    """The activations at ``hook`` [batch, n, d]. A ``blocks.L.hook_resid_pre`` is what the first L
    blocks return, so the forward stops there (``stop_at_layer=L``) without hooks; any other hook
    is cached from a forward that stops after its block."""
    match = RESID_PRE.fullmatch(hook)
    if match:
        return live.model(tokens, stop_at_layer=int(match.group(1)))
    return run_to_hooks(live.model, tokens, [hook])[hook]


def _pool_batch(
    loaded: LoadedSAE, acts: torch.Tensor, lengths: list[int], first: int, pool: str, with_resid: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``acts`` [batch, width, d_in] at the hook, pooled over each row's tokens from ``first`` on."""
    keep = torch.zeros(acts.shape[:2], dtype=torch.bool, device=acts.device)
    for row, length in enumerate(lengths):
        keep[row, first if length > first else 0 : length] = True  # a text of BOS alone pools over BOS
    segment = keep.nonzero()[:, 0]
    real = acts[keep].float()
    counts = torch.bincount(segment, minlength=len(lengths)).clamp(min=1).unsqueeze(1)
    latents = torch.zeros(len(lengths), loaded.d_sae, device=acts.device)
    step = max(1, ENCODE_FLOATS // loaded.d_sae)
    for start in range(0, len(real), step):
        encoded = loaded.sae.encode(real[start : start + step]).float()
        _pool_into(latents, segment[start : start + step], encoded, pool)
    resid = None
    if with_resid:
        fill = float("-inf") if pool == "max" else 0.0
        resid = torch.full((len(lengths), real.shape[1]), fill, device=acts.device)
        _pool_into(resid, segment, real, pool)
    if pool == "mean":
        latents /= counts
        resid = resid / counts if resid is not None else None
    return latents, resid


def pooled(live: LiveModel, sae_name: str, texts: Sequence[str], pool: str, with_resid: bool = True) -> Pooled:
    """The pooled latents (and raw activations) of every text, in the order given."""
    loaded = live.sae(sae_name)
    ids, cuts = token_ids(live, texts)
    first = int(live.tokenizer.bos_token_id is not None)
    latents = np.zeros((len(texts), loaded.d_sae), dtype=np.float32)
    resid = np.zeros((len(texts), loaded.sae.cfg.d_in), dtype=np.float32) if with_resid else None
    with live.exclusive(), torch.no_grad():
        for batch in _batches([len(i) for i in ids]):
            acts = hook_activations(live, _padded(live, ids, batch), loaded.hook_name)
            lengths = [len(ids[i]) for i in batch]
            pooled_latents, pooled_resid = _pool_batch(loaded, acts, lengths, first, pool, with_resid)
            latents[batch] = pooled_latents.cpu().numpy()
            if resid is not None and pooled_resid is not None:
                resid[batch] = pooled_resid.cpu().numpy()
    return Pooled(latents=latents, resid=resid, cut=cuts)


def full_forward(live: LiveModel, texts: Sequence[str]) -> None:
    """The model's whole forward (to the logits) on every text, batched as ``pooled`` batches them:
    what a detector's cost is compared with."""
    ids, _ = token_ids(live, texts)
    with live.exclusive(), torch.no_grad():
        for batch in _batches([len(i) for i in ids]):
            live.model(_padded(live, ids, batch), return_type="logits")


def blocks_run(hook: str) -> int | None:
    """How many blocks the detector's forward runs for ``hook`` (None: all of them)."""
    match = RESID_PRE.fullmatch(hook)
    return int(match.group(1)) if match else stop_layer([hook])


def token_scores(
    live: LiveModel,
    sae_name: str,
    texts: Sequence[str],
    probe: tuple[np.ndarray, np.ndarray, float],
    dense: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, list[np.ndarray]]:
    """Per text, each token's detector probability (``probe``: latents, weights, intercept; the
    formula ``detector run`` applies to one token's latents) and, with ``dense``, the dense probe's
    probability on that token's raw activations; BOS left out. Batched as ``pooled`` batches."""
    loaded = live.sae(sae_name)
    latents, weights, intercept = probe
    ids, _ = token_ids(live, texts)
    first = int(live.tokenizer.bos_token_id is not None)
    columns = torch.as_tensor(latents, dtype=torch.long, device=live.device)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=live.device)
    scores: dict[str, list[np.ndarray]] = {"detector": [np.zeros(0)] * len(texts)}
    if dense is not None:
        scores["dense_probe"] = [np.zeros(0)] * len(texts)
    step = max(1, ENCODE_FLOATS // loaded.d_sae)
    with live.exclusive(), torch.no_grad():
        for batch in _batches([len(i) for i in ids]):
            acts = hook_activations(live, _padded(live, ids, batch), loaded.hook_name)
            keep = torch.zeros(acts.shape[:2], dtype=torch.bool, device=acts.device)
            for row, index in enumerate(batch):
                keep[row, first : len(ids[index])] = True
            real = acts[keep].float()
            logits = torch.cat(
                [loaded.sae.encode(real[s : s + step]).float()[:, columns] @ weight for s in range(0, len(real), step)]
            )
            split = [len(ids[index]) - first for index in batch]
            probabilities = torch.sigmoid(logits + intercept).cpu().numpy().astype(np.float64)
            dense_scores = dense(real.cpu().numpy()) if dense is not None else None
            at = 0
            for index, count in zip(batch, split):
                scores["detector"][index] = probabilities[at : at + count]
                if dense_scores is not None:
                    scores["dense_probe"][index] = dense_scores[at : at + count]
                at += count
    return scores
