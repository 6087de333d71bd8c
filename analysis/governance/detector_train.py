"""Train a detector: a sparse logistic probe on one SAE's pooled latents, reported beside a dense
logistic probe on the raw activations at the same hook and (for PII) a regex baseline, all on the
same held-out split, with the detector's cost against a full forward.

Why always beside baselines: SAE probes do not consistently beat linear probes on raw activations
(Kantamneni, Engels et al., arXiv 2502.16681), so a detector's numbers mean little alone.

The probe's inputs are scaled by each latent's largest training value (latents differ in scale by
orders of magnitude, and L1 would otherwise favour the large ones); the scale is folded back into
the weights, so ``detector.json`` holds weights over the raw latents: score = sigmoid(w . pooled + b).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.governance.detector_cost import measure_cost
from analysis.governance.detector_encode import pooled, token_ids, token_scores
from analysis.governance.detector_files import FORMAT, LabelledText, check_trainable, feature_url
from analysis.governance.detector_metrics import METHODS, classification_metrics
from analysis.governance.detector_tokens import (
    RULE,
    TokenTruth,
    concatenated,
    known_rows,
    overlap_labels,
    regex_token_scores,
    token_metrics,
    token_offsets,
)
from analysis.governance.pii_regex import regex_score
from analysis.governance.versions import library_versions
from analysis.live_model import LiveModel

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
THRESHOLD = 0.5  # on the probability; classes are weighted "balanced", so 0.5 is the even-odds point
LIBRARIES = ("torch", "transformer-lens", "sae-lens", "scikit-learn", "numpy", "Faker")


@dataclass(frozen=True)
class TrainSettings:
    """``top_k`` None: L1 with C chosen by 3-fold CV (the sparsest within 0.01 F1 of the best);
    otherwise the ``top_k`` latents whose scaled class means differ most, fitted with L2."""

    pool: str = "max"
    top_k: int | None = None
    test_fraction: float = 0.25
    seed: int = 0
    regex: bool = True  # the PII regex baseline (for tasks that have no regex, turn off)
    cost_texts: int = 500  # the held-out texts, repeated in turn to this many; 0: do not measure the cost
    dashboard_url: str = "http://localhost:8501"
    atlas_key: str = "demo"


@dataclass(frozen=True)
class TrainedDetector:
    detector: dict
    metrics: dict


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _logistic(c: float, l1: bool, seed: int) -> LogisticRegression:
    return LogisticRegression(
        C=c,
        l1_ratio=1.0 if l1 else 0.0,
        solver="liblinear",
        class_weight="balanced",
        max_iter=5000,
        random_state=seed,
    )


def _best_c(make, x: np.ndarray, y: np.ndarray, seed: int, prefer_small: bool) -> tuple[float, dict[str, float]]:
    """C by 3-fold cross-validated F1 on the training rows; with ``prefer_small`` the smallest C
    within 0.01 of the best (fewer features for nearly the same F1)."""
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    scores = {c: float(cross_val_score(make(c), x, y, cv=folds, scoring="f1").mean()) for c in C_GRID}
    best = max(scores.values())
    chosen = min(c for c, s in scores.items() if s >= best - 0.01) if prefer_small else max(scores, key=scores.get)  # type: ignore[arg-type]
    return chosen, {str(c): round(s, 4) for c, s in scores.items()}


def _sparse_probe(x: np.ndarray, y: np.ndarray, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """(latents, raw weights, intercept, how they were chosen)."""
    scale = x.max(axis=0)
    scale[scale <= 0] = 1.0
    scaled = x / scale
    if settings.top_k is None:
        c, cv = _best_c(lambda c: _logistic(c, True, settings.seed), scaled, y, settings.seed, prefer_small=True)
        model = _logistic(c, True, settings.seed).fit(scaled, y)
        latents = np.flatnonzero(model.coef_[0])
        how = {"kind": "l1", "C": c, "cv_f1": cv}
    else:
        gap = np.abs(scaled[y == 1].mean(axis=0) - scaled[y == 0].mean(axis=0))
        latents = np.sort(np.argsort(-gap, kind="stable")[: settings.top_k])
        model = _logistic(1.0, False, settings.seed).fit(scaled[:, latents], y)
        how = {"kind": "top-k", "top_k": settings.top_k, "C": 1.0}
    coef = model.coef_[0] if settings.top_k is not None else model.coef_[0][latents]
    return latents, coef / scale[latents], float(model.intercept_[0]), how


def _dense_probe(x_train, y_train, seed: int) -> tuple[Pipeline, dict]:
    def make(c: float):
        return make_pipeline(StandardScaler(), _logistic(c, False, seed))

    c, cv = _best_c(make, x_train, y_train, seed, prefer_small=False)
    return make(c).fit(x_train, y_train), {"C": c, "cv_f1": cv}


def _token_level(
    live: LiveModel,
    sae_name: str,
    rows: list[LabelledText],
    split: tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray],
    probe: tuple[np.ndarray, np.ndarray, float],
    dense: Pipeline,
    regex: bool,
) -> tuple[dict | None, str | None]:
    """Token-level metrics where the rows have spans (analysis/governance/detector_tokens.py), or
    None and why not."""
    if not any(row.spans for row in rows):
        return None, "no row has spans"
    chosen = [known_rows(rows, part) for part in split]
    truths: list[list[TokenTruth]] = [[], []]
    for part, indices in enumerate(chosen):
        _, cuts = token_ids(live, [rows[i].text for i in indices])
        for index, cut in zip(indices, cuts):
            offsets = token_offsets(live.tokenizer, rows[index].text, cut)
            if offsets is None:
                return None, "the tokenizer gives no character offsets"
            truths[part].append(TokenTruth(index, offsets, overlap_labels(offsets, rows[index].spans)))
    for part, name in enumerate(("training", "held-out")):
        labels = np.concatenate([t.labels for t in truths[part]]) if truths[part] else np.zeros(0)
        if labels.size == 0 or labels.min() == labels.max():
            return None, f"the {name} split's scored tokens are not of both kinds (evidence and not)"
    concatenated_parts = []
    for part in truths:
        scores = token_scores(
            live, sae_name, [rows[t.row].text for t in part], probe, lambda x: dense.predict_proba(x)[:, 1]
        )
        if regex:
            scores["regex"] = [regex_token_scores(rows[t.row].text, t.offsets) for t in part]
        concatenated_parts.append(concatenated(part, scores))
    methods = token_metrics(concatenated_parts[0], concatenated_parts[1], {"regex": 0.5})
    train_labels, test_labels = concatenated_parts[0][0], concatenated_parts[1][0]
    return {
        "rule": RULE,
        "rows": {"train": len(chosen[0]), "test": len(chosen[1])},
        "tokens": {
            "train": len(train_labels),
            "train_positive": int(train_labels.sum()),
            "test": len(test_labels),
            "test_positive": int(test_labels.sum()),
        },
        "methods": methods,
    }, None


def _data_hash(rows: list[LabelledText]) -> str:
    canonical = json.dumps([[r.text, r.label, [list(s) for s in r.spans]] for r in rows], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _features(sae_name: str, latents, weights, labels: dict, settings: TrainSettings) -> list[dict]:
    order = np.argsort(-np.abs(weights), kind="stable")
    return [
        {
            "latent": int(latents[i]),
            "weight": float(weights[i]),
            "label": labels.get((sae_name, int(latents[i])), ""),
            "url": feature_url(settings.dashboard_url, settings.atlas_key, sae_name, int(latents[i])),
        }
        for i in order
    ]


def train_detector(
    live: LiveModel,
    sae_name: str,
    rows: list[LabelledText],
    settings: TrainSettings,
    specs: tuple[str, str],
    labels: dict[tuple[str, int], str] | None = None,
) -> TrainedDetector:
    """Fit the detector and its baselines on one split of ``rows``; ``labels`` (the atlas's automatic
    labels by (SAE name, latent)) are shown beside the features; ``specs`` (model, SAE) are recorded
    as given, so that a detector trained on the demo names it relative to the checkout."""
    check_trainable(rows, settings.test_fraction)
    loaded = live.sae(sae_name)
    y = np.array([r.label for r in rows])
    train, test = train_test_split(
        np.arange(len(rows)), test_size=settings.test_fraction, random_state=settings.seed, stratify=y
    )
    started = time.perf_counter()
    encoded = pooled(live, sae_name, [r.text for r in rows], settings.pool)
    encode_seconds = time.perf_counter() - started
    assert encoded.resid is not None, "pooled() returns the raw activations unless asked not to"
    latents, weights, intercept, how = _sparse_probe(encoded.latents[train], y[train], settings)
    scores = {"detector": _sigmoid(encoded.latents[test][:, latents] @ weights + intercept)}
    dense, dense_how = _dense_probe(encoded.resid[train], y[train], settings.seed)
    scores["dense_probe"] = dense.predict_proba(encoded.resid[test])[:, 1]
    if settings.regex:
        scores["regex"] = np.array([regex_score(rows[i].text) for i in test])
    methods = {name: classification_metrics(y[test], s, THRESHOLD) for name, s in scores.items()}
    methods["detector"]["features"] = len(latents)
    methods["dense_probe"]["features"] = int(encoded.resid.shape[1])
    tokens, tokens_skipped = _token_level(
        live, sae_name, rows, (train, test), (latents, weights, intercept), dense, settings.regex
    )
    cost = None
    if settings.cost_texts:
        cost_texts = [rows[i].text for i in np.resize(test, settings.cost_texts)]
        cost = measure_cost(live, sae_name, cost_texts, settings.pool, latents, weights)
    detector = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"spec": specs[0], "content_hash": live.model_hash},
        "sae": {
            "name": sae_name,
            "spec": specs[1],
            "content_hash": live.sae_hashes[sae_name],
            "architecture": loaded.architecture,
            "d_sae": loaded.d_sae,
        },
        "hook": loaded.hook_name,
        "pool": settings.pool,
        "bos_ignored": True,
        "probe": how,
        "features": _features(sae_name, latents, weights, labels or {}, settings),
        "intercept": intercept,
        "threshold": THRESHOLD,
        "score": "sigmoid(sum of weight * pooled latent + intercept); per token: the same on that token's latents",
        "training": {
            "rows": len(rows),
            "positives": int(y.sum()),
            "data_sha256": _data_hash(rows),
            "seed": settings.seed,
            "test_fraction": settings.test_fraction,
        },
        "library_versions": library_versions(LIBRARIES),
    }
    metrics = {
        "format": FORMAT,
        "methods": methods,
        "method_descriptions": {name: text for name, text in METHODS.items() if name in methods},
        "dense_probe": dense_how,
        "split": {
            "seed": settings.seed,
            "test_fraction": settings.test_fraction,
            "train": len(train),
            "test": len(test),
            "train_positives": int(y[train].sum()),
            "test_positives": int(y[test].sum()),
        },
        "tokens": tokens,
        "tokens_skipped": tokens_skipped,
        "cost": cost,
        "encode_seconds": round(encode_seconds, 3),
        "texts_cut_to_context": int(sum(c > 0 for c in encoded.cut)),
        "predictions": {
            "rows": [int(i) for i in test],
            "labels": [int(v) for v in y[test]],
            "scores": {name: [float(v) for v in s] for name, s in scores.items()},
        },
    }
    return TrainedDetector(detector, metrics)
