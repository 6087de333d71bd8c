"""Automatic short labels from what the data says, marked as automatic wherever they are shown.

A label names the tokens most over-represented where the latent fires in its top examples
(activation mass on a token divided by that token's share of the corpus) and the tokens its
decoder direction promotes most. It is a lead for a reviewer, not an explanation.
"""

from __future__ import annotations

import numpy as np

FIRING_TOKENS = 3
PROMOTED_TOKENS = 3
MIN_SHARE = 0.05  # a token must carry this share of the top examples' activation mass
FIRES_ON, PROMOTES, SEPARATOR = "fires on ", "promotes ", " · "
TEMPLATE_PATTERN = f"^{FIRES_ON}|{SEPARATOR}{PROMOTES}"  # a regular expression for the words labels add


def _show(text: str) -> str:
    return repr(text)[1:-1] if text.strip() else repr(text)


def enriched_tokens(
    latents: np.ndarray, tokens: np.ndarray, activations: np.ndarray, corpus_counts: np.ndarray, d_sae: int
) -> list[list[int]]:
    """Per latent, up to three token ids ranked by activation share x log enrichment.

    ``latents``, ``tokens``, ``activations``: one entry per firing token of the top examples."""
    corpus_share = corpus_counts / max(corpus_counts.sum(), 1)
    key = latents.astype(np.int64) * len(corpus_counts) + tokens
    unique, inverse = np.unique(key, return_inverse=True)
    mass = np.bincount(inverse, weights=activations)
    latent_of, token_of = unique // len(corpus_counts), unique % len(corpus_counts)
    total = np.bincount(latent_of, weights=mass, minlength=d_sae)
    share = mass / np.maximum(total[latent_of], 1e-30)
    enrichment = share / np.maximum(corpus_share[token_of], 1e-12)
    score = np.where((share >= MIN_SHARE) & (enrichment > 1), share * np.log(enrichment), -np.inf)
    order = np.lexsort((token_of, -score, latent_of))
    chosen: list[list[int]] = [[] for _ in range(d_sae)]
    for index in order:
        if np.isfinite(score[index]) and len(chosen[latent_of[index]]) < FIRING_TOKENS:
            chosen[latent_of[index]].append(int(token_of[index]))
    return chosen


def automatic_labels(firing: list[list[int]], promoted: np.ndarray | None, token_text: list[str]) -> list[str]:
    """``fires on 'a', 'b' · promotes 'c'`` per latent (empty for a latent that never fired)."""
    labels = []
    for latent, tokens in enumerate(firing):
        if not tokens:
            labels.append("")
            continue
        parts = [FIRES_ON + ", ".join(f"'{_show(token_text[t])}'" for t in tokens)]
        if promoted is not None:
            parts.append(PROMOTES + ", ".join(f"'{_show(token_text[t])}'" for t in promoted[latent][:PROMOTED_TOKENS]))
        labels.append(SEPARATOR.join(parts))
    return labels
