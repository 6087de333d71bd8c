"""Content hashes of models and SAEs: what an atlas, a steering run or a graph records, so a result
names the exact weights it came from however they were loaded (folder, hub cache, another device)."""

from __future__ import annotations

import hashlib
import json

import torch
from transformer_lens import HookedTransformer

from analysis.sae_loading import LoadedSAE


def tensor_hash(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """sha256 over named tensors' bytes: the content of a model or SAE, however it was loaded."""
    digest = hashlib.sha256(extra.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_hash(model: HookedTransformer) -> str:
    return tensor_hash(model.state_dict())


def sae_hash(loaded: LoadedSAE) -> str:
    """The SAE's weights and its config (hooks, architecture), as ``saes.content_hash`` in an atlas."""
    return tensor_hash(loaded.sae.state_dict(), json.dumps(loaded.sae.cfg.to_dict(), default=str, sort_keys=True))
