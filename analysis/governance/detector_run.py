"""Run a trained detector: a score per text and per token, on the model and SAE it was trained on
(checked by content hash: another SAE's latent numbers mean other features)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.governance.detector_files import DetectorError
from analysis.live_model import LiveModel
from analysis.text_activations import encode_text


@dataclass(frozen=True)
class TextScore:
    """``score``: the detector's probability for the whole text (its pooled latents); ``token_scores``:
    the same formula on each token's latents alone (BOS included: shown, but never pooled)."""

    text: str
    score: float
    flagged: bool
    tokens: list[str]
    token_scores: list[float]
    cut: int
    has_bos: bool

    def as_json(self) -> dict:
        return {
            "text": self.text,
            "score": self.score,
            "flagged": self.flagged,
            "cut": self.cut,
            "tokens": [{"token": t, "score": s} for t, s in zip(self.tokens, self.token_scores)],
        }


def matching_sae(live: LiveModel, detector: dict) -> str:
    """The loaded SAE the detector was trained on (by content hash); DetectorError when the model
    or no loaded SAE is the one it was trained on."""
    if live.model_hash != detector["model"]["content_hash"]:
        raise DetectorError(
            f"the model loaded ({live.loaded.path}) is not the one this detector was trained on "
            f"({detector['model']['spec']}): its weights differ"
        )
    return detector_sae(live, detector)


def detector_sae(live: LiveModel, detector: dict) -> str:
    """The loaded SAE with the weights the detector reads (its latent numbers mean those features),
    whatever the model: a watchlist runs a detector on other checkpoints on purpose."""
    wanted = detector["sae"]["content_hash"]
    for name, content in live.sae_hashes.items():
        if content == wanted:
            return name
    raise DetectorError(
        f"no loaded SAE has the weights this detector was trained on ({detector['sae']['name']}, "
        f"{detector['sae']['spec']}); loaded: {', '.join(live.saes) or 'none'}"
    )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def score_text(live: LiveModel, detector: dict, sae_name: str, text: str) -> TextScore:
    latents = [f["latent"] for f in detector["features"]]
    weights = np.array([f["weight"] for f in detector["features"]], dtype=np.float64)
    encoded = encode_text(live, text, [sae_name])
    columns = encoded.acts[sae_name].columns(latents).astype(np.float64)  # [tokens, features]
    first = int(encoded.has_bos) if len(columns) > int(encoded.has_bos) else 0
    body = columns[first:]
    pooled = body.max(axis=0) if detector["pool"] == "max" else body.mean(axis=0)
    score = float(_sigmoid(pooled @ weights + detector["intercept"]))
    return TextScore(
        text=text,
        score=score,
        flagged=score >= detector["threshold"],
        tokens=encoded.tokens,
        token_scores=_sigmoid(columns @ weights + detector["intercept"]).tolist(),
        cut=encoded.cut,
        has_bos=encoded.has_bos,
    )


def score_texts(live: LiveModel, detector: dict, texts: Sequence[str]) -> list[TextScore]:
    sae_name = matching_sae(live, detector)
    return [score_text(live, detector, sae_name, text) for text in texts]
