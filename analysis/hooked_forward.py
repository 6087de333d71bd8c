"""The forward pass SAE work needs: cache only the hooks the SAEs read, and stop after the last
block any of them is in, since nothing later can change those activations. Shared by the atlas
pass and live work (test your text, search via inference)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformer_lens import ActivationCache, HookedTransformer


def stop_layer(hooks: Sequence[str]) -> int | None:
    """The block to stop before: one past the deepest ``blocks.L.`` hook; None (run every block)
    when any hook lies outside the blocks (``hook_embed``, ``ln_final``...)."""
    layers = [re.match(r"blocks\.(\d+)\.", hook) for hook in hooks]
    if not all(layers):
        return None
    return max(int(m.group(1)) for m in layers if m is not None) + 1


def run_to_hooks(model: HookedTransformer, tokens: torch.Tensor, hooks: Sequence[str]) -> ActivationCache:
    """The activations at ``hooks`` for ``tokens`` [batch, n], from a forward cut short by ``stop_layer``."""
    _, cache = model.run_with_cache(tokens, names_filter=list(hooks), stop_at_layer=stop_layer(hooks))
    return cache
