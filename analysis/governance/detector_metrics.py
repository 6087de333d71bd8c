"""Precision, recall, F1 and AUROC of a detector or baseline on the held-out rows, by scikit-learn.

Torch-free: the page and the tests recompute these from the predictions ``metrics.json`` records.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

METHODS = {
    "detector": "SAE-feature probe (the detector)",
    "dense_probe": "dense probe on the raw activations at the same hook",
    "regex": "PII regexes (email, phone, card, IBAN)",
}


def classification_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> dict:
    """Scores at or above ``threshold`` count as positive; AUROC ranks the scores themselves."""
    truth = np.asarray(labels, dtype=int)
    predicted = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0)  # pyright: ignore[reportArgumentType]
    tn, fp, fn, tp = confusion_matrix(truth, predicted, labels=[0, 1]).ravel()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auroc": float(roc_auc_score(truth, scores)),
        "threshold": threshold,
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
    }
