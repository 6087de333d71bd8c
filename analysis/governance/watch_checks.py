"""What a watchlist's checks measure on a loaded model, and how a watched feature is found in an SAE.

Finding the feature: the watchlist stores the sha256 of the latent's decoder row. If the SAE given has
that row at the stored latent, it is the same latent. If not (a retrained or reordered SAE), the
latent whose row has that hash exactly is taken; failing that, the latent whose decoder row is most
cosine-similar to the stored row, if the cosine reaches the feature's ``min_cosine``; below it the
watchlist is refused, since checking some other latent would say nothing about the one watched.

Measurements (every text runs through the model once per feature; BOS is never counted):
- a text's activation is the latent's largest value over its tokens (``fires_at_*``);
- a prompt set's mean activation is the latent's mean over all their tokens (``mean_rise_at_most``);
- for a detector feature, a text's value is the detector's score (its probability, from the latents
  pooled as it was trained), and a prompt set's mean is the mean of the texts' scores;
- steering adds ``coefficient`` × the decoder row where the SAE writes (analysis/steering_hooks.py)
  and compares the next-token log-probabilities at each prompt's end with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.governance.detector_files import DetectorError, read_detector
from analysis.governance.detector_run import detector_sae, score_text
from analysis.governance.watchlist_file import Check, WatchedFeature, WatchlistError, row_sha256
from analysis.live_model import LiveModel
from analysis.sae_loading import LoadedSAE
from analysis.steering_hooks import steering_hooks
from analysis.steering_target import SteeringTarget
from analysis.text_activations import latent_activations


@dataclass(frozen=True)
class Resolved:
    """Where a watched feature is in the SAE given: its latent there and how it was found."""

    feature: str
    sae: str
    latent: int
    cosine: float
    how: str  # "hash" (the stored latent), "moved" (same row, other latent) or "cosine"

    @property
    def note(self) -> str:
        if self.how == "hash":
            return f"{self.sae}:{self.latent} (decoder hash matches)"
        if self.how == "moved":
            return f"{self.sae}:{self.latent} (same decoder row, found at another latent)"
        return f"{self.sae}:{self.latent} (decoder cosine {self.cosine:.4f})"


@dataclass(frozen=True)
class ResolvedDetector:
    """A watched detector: the SAE whose latents it reads (matched by content hash) and its file."""

    feature: str
    sae: str
    folder: str
    detector: dict

    @property
    def note(self) -> str:
        return f"detector {self.folder} on {self.sae} ({len(self.detector['features'])} latents)"


def resolve_detector(feature: WatchedFeature, live: LiveModel) -> ResolvedDetector:
    """The detector of ``feature`` on the SAE it was trained on; WatchlistError when that SAE is not loaded."""
    assert feature.detector is not None, "only detector features are resolved here"
    detector = read_detector(feature.detector)
    try:
        sae = detector_sae(live, detector)
    except DetectorError as error:
        raise WatchlistError(f"feature {feature.id!r}: {error}") from None
    return ResolvedDetector(feature.id, sae, str(feature.detector), detector)


def decoder_rows(loaded: LoadedSAE) -> np.ndarray:
    return loaded.sae.W_dec.detach().float().cpu().numpy()


def resolve(feature: WatchedFeature, loaded: LoadedSAE) -> Resolved:
    """The latent of ``loaded`` that is ``feature``; WatchlistError (one line) when none is close enough."""
    rows = decoder_rows(loaded)
    if feature.latent < len(rows) and row_sha256(rows[feature.latent]) == feature.decoder_sha256:
        return Resolved(feature.id, loaded.name, feature.latent, 1.0, "hash")
    for latent, row in enumerate(rows):
        if row_sha256(row) == feature.decoder_sha256:
            return Resolved(feature.id, loaded.name, latent, 1.0, "moved")
    if feature.decoder_row is None:
        raise WatchlistError(
            f"feature {feature.id!r}: no latent of {loaded.name} has its decoder row, and the watchlist stores only "
            "the row's hash; store the row (decoder_row or decoder_file) to match a retrained SAE by cosine"
        )
    stored = feature.decoder_row.astype(np.float64)
    if stored.shape != rows.shape[1:]:
        raise WatchlistError(
            f"feature {feature.id!r}: its stored decoder row has {stored.size} values, but {loaded.name} writes "
            f"{rows.shape[1]}: it is an SAE of another model or hook"
        )
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(stored)
    cosines = np.divide(rows @ stored, norms, out=np.zeros(len(rows)), where=norms > 0)
    best = int(cosines.argmax())
    if cosines[best] < feature.min_cosine:
        raise WatchlistError(
            f"feature {feature.id!r}: no latent of {loaded.name} matches its decoder direction "
            f"(best: latent {best}, cosine {cosines[best]:.4f}, below min_cosine {feature.min_cosine:g})"
        )
    return Resolved(feature.id, loaded.name, best, float(cosines[best]), "cosine")


def _token_values(live: LiveModel, where: Resolved | ResolvedDetector, text: str) -> list[float]:
    """The values a check reads on ``text``: the latent's per token (BOS left out), or the detector's
    one score for the whole text."""
    if isinstance(where, ResolvedDetector):
        return [score_text(live, where.detector, where.sae, text).score]
    acts = latent_activations(live, text, where.sae, where.latent)
    return list(acts.values[int(acts.has_bos) :])


def text_maxima(live: LiveModel, where: Resolved | ResolvedDetector, texts: tuple[str, ...]) -> list[float]:
    """The latent's largest value on each text, BOS left out (a detector's score)."""
    return [max(values, default=0.0) for text in texts for values in [_token_values(live, where, text)]]


def mean_activation(live: LiveModel, where: Resolved | ResolvedDetector, texts: tuple[str, ...]) -> tuple[float, int]:
    """The latent's mean over every token of ``texts`` (BOS left out), and how many tokens that is
    (a detector's mean score over the texts, and how many texts)."""
    values = [value for text in texts for value in _token_values(live, where, text)]
    return (float(sum(values)) / len(values) if values else 0.0), len(values)


def token_ids(live: LiveModel, tokens: tuple[str, ...]) -> list[int]:
    """Each token string's id; WatchlistError for a string that is not exactly one token."""
    ids = []
    for token in tokens:
        encoded = live.tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise WatchlistError(
                f"steering token {token!r} is {len(encoded)} tokens for this tokenizer "
                f"({live.token_strings(encoded)}); list single tokens"
            )
        ids.append(encoded[0])
    return ids


@torch.no_grad()
def steering_rises(live: LiveModel, where: Resolved, check: Check) -> dict[str, float]:
    """Per token, the mean over prompts of its next-token log-probability rise when steered."""
    assert check.coefficient is not None, "steering checks have a coefficient"
    ids = token_ids(live, check.tokens)
    hooks = steering_hooks(live, [SteeringTarget(where.sae, where.latent, check.coefficient)], check.method)
    rises = torch.zeros(len(ids), dtype=torch.float64)
    with live.exclusive():
        for text in check.texts:
            prompt, _ = live.tokenize(text)
            plain = torch.log_softmax(live.model(prompt)[0, -1].double(), -1)
            with live.model.hooks(fwd_hooks=[(name, fn) for name, fn in hooks]):
                steered = torch.log_softmax(live.model(prompt)[0, -1].double(), -1)
            rises += (steered - plain)[ids].cpu()
    return {token: float(rise) / len(check.texts) for token, rise in zip(check.tokens, rises)}
