"""Token-level evaluation of a detector where the data marks its evidence: ``spans``, the character
ranges of the PII in a text. A token is positive when its characters overlap a span. Scored are the
rows whose tokens' truth is known: those with spans, and those labelled 0 (no evidence in them); a
row labelled 1 without spans says only that some evidence is somewhere, and is left out. BOS and
tokens cut to fit the context are left out.

Each method's per-token scores (the detector's formula on one token's latents, as ``detector run``
shows them; the dense probe on one token's raw activations; the regexes' matches) become flags at
a threshold chosen on the training split's tokens (the F1-best one: a probe trained on pooled texts
has no reason to be calibrated per token) and are scored on the held-out split's tokens. The regexes
are a hard rule: a token is flagged when it overlaps a match. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_curve

from analysis.governance.detector_files import LabelledText
from analysis.governance.detector_metrics import classification_metrics
from analysis.governance.pii_regex import find_pii

RULE = (
    "a token is positive when its characters overlap a span; scored: rows with spans and rows labelled 0 "
    "(BOS and tokens cut to fit the context left out); each method's threshold is the F1-best on the "
    "training split's tokens (the regexes: a token overlapping a match)"
)

Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class TokenTruth:
    """Per scored row: its index in the data, its tokens' character offsets and whether each is evidence."""

    row: int
    offsets: Offsets
    labels: np.ndarray  # [tokens] int


def known_rows(rows: Sequence[LabelledText], indices: Sequence[int] | np.ndarray) -> list[int]:
    """Those of ``indices`` whose tokens' truth is known (spans given, or label 0)."""
    return [int(i) for i in indices if rows[i].spans or rows[i].label == 0]


def token_offsets(tokenizer, text: str, cut: int) -> Offsets | None:
    """Each kept token's character range in ``text`` (BOS excluded: it has none), as the model reads
    it (``LiveModel.tokenize``'s ids, the first ``cut`` dropped); None when the tokenizer cannot say
    (a slow tokenizer has no offsets mapping)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != list(tokenizer.encode(text, add_special_tokens=False)):
        return None
    return [(int(start), int(end)) for start, end in encoded["offset_mapping"][cut:]]


def overlap_labels(offsets: Offsets, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for each token whose characters overlap any span, else 0."""
    return np.array([int(any(start < b and a < end for a, b in spans)) for start, end in offsets], dtype=int)


def regex_token_scores(text: str, offsets: Offsets) -> np.ndarray:
    """1.0 for each token overlapping a regex match, else 0.0: the baseline's per-token flags."""
    return overlap_labels(offsets, [(start, end) for _, start, end in find_pii(text)]).astype(float)


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 on these tokens (ties: the higher threshold)."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    return float(thresholds[best])


def token_metrics(
    train: tuple[np.ndarray, dict[str, np.ndarray]],
    test: tuple[np.ndarray, dict[str, np.ndarray]],
    fixed: dict[str, float],
) -> dict[str, dict]:
    """Per method: precision, recall, F1, AUROC on the test tokens at a threshold from the training
    tokens (or the one ``fixed`` gives it), and where the threshold came from. ``train``/``test``:
    (labels, scores by method), tokens of all scored rows concatenated."""
    (train_labels, train_scores), (test_labels, test_scores) = train, test
    methods = {}
    for name, scores in test_scores.items():
        if name in fixed:
            threshold, source = fixed[name], "fixed"
        else:
            threshold, source = best_threshold(train_labels, train_scores[name]), "train split"
        methods[name] = classification_metrics(test_labels, scores, threshold) | {"threshold_from": source}
    return methods


def concatenated(truths: Sequence[TokenTruth], scores: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, dict]:
    """The tokens of ``truths`` as one labels array and one scores array per method (same order)."""
    labels = np.concatenate([t.labels for t in truths]) if truths else np.zeros(0, dtype=int)
    return labels, {name: np.concatenate(values) if values else np.zeros(0) for name, values in scores.items()}
