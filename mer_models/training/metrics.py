"""Tagging metrics: ROC-AUC and PR-AUC, macro and micro (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def tagging_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro and micro ROC-AUC and PR-AUC of (tracks, tags) scores.

    Macro averages run over the tags that have both positive and negative
    tracks; with every tag present (as in the real splits) they are exactly
    scikit-learn's `average="macro"` scores.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = labels.sum(axis=0)
    valid = (positives > 0) & (positives < labels.shape[0])
    if not valid.any():
        raise ValueError("no tag has both positive and negative tracks: AUCs are undefined")
    return {
        "roc_auc": float(roc_auc_score(labels[:, valid], scores[:, valid], average="macro")),
        "pr_auc": float(
            average_precision_score(labels[:, valid], scores[:, valid], average="macro")
        ),
        "roc_auc_micro": float(roc_auc_score(labels, scores, average="micro")),
        "pr_auc_micro": float(average_precision_score(labels, scores, average="micro")),
        "tags_evaluated": int(valid.sum()),
    }
