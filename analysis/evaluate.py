"""The MediaEval Emotion and Theme evaluation, number for number.

The challenge's own script (``scripts/mediaeval/evaluate.py`` of the
MTG-Jamendo repository) is scikit-learn's ``roc_auc_score`` and
``average_precision_score`` over the (tracks, tags) matrices with
``average='macro'`` and ``'micro'``, and ``precision_recall_fscore_support``
on the binary decisions. We call exactly those functions in the same order,
so a result here is a result there; what we add is input checking that names
the culprit instead of failing deep inside scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from mer_models.matrices import check_binary, check_scores
from mer_models.npy import MAGIC as NPY_MAGIC
from mer_models.npy import load_npy
from mer_models.training.metrics import METRICS, Metric

AVERAGES = ("macro", "micro")
DECISION_METRICS = ("precision", "recall", "F-score")


def _scores(average: str) -> tuple[Metric, ...]:
    """The score metrics of the one table (ROC-AUC, PR-AUC) with this average, in its order."""
    return tuple(metric for metric in METRICS if metric.average == average)


def metric_names(with_decisions: bool = True) -> tuple[str, ...]:
    """The official metric names, in the order of the official results file."""
    names = []
    for average in AVERAGES:
        names += [metric.official for metric in _scores(average)]
        if with_decisions:
            names += [f"{metric}-{average}" for metric in DECISION_METRICS]
    return tuple(names)


def load_matrix(path: str | Path, role: str) -> np.ndarray:
    """Load one .npy matrix; a missing, unreadable or damaged file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{role} file {path} not found")
    with path.open("rb") as file:
        head = file.read(len(NPY_MAGIC))
    if not head:
        raise ValueError(f"{role} file {path} is empty; expected a (tracks, tags) .npy array")
    if head != NPY_MAGIC:
        raise ValueError(
            f"{role} file {path} is not a .npy file (no NumPy header: text or another "
            "format?); expected a (tracks, tags) array saved with numpy.save"
        )
    array = load_npy(path, role)  # its header checked against its size: no huge allocation
    if array.ndim != 2:
        raise ValueError(f"{role} file {path} has shape {array.shape}; expected (tracks, tags)")
    return array


def check_groundtruth(array: np.ndarray, name: str = "groundtruth") -> np.ndarray:
    """Binary labels in which every tag has a positive and a negative track.

    Macro ROC-AUC is undefined for a tag with one class; scikit-learn would
    raise without saying which tag, so we say it first.
    """
    labels = check_binary(array, name)
    positives = labels.sum(axis=0)
    one_class = np.flatnonzero((positives == 0) | (positives == labels.shape[0]))
    if one_class.size:
        shown = ", ".join(str(c) for c in one_class[:10])
        more = f" and {one_class.size - 10} more" if one_class.size > 10 else ""
        raise ValueError(
            f"{name}: tag column(s) {shown}{more} have only positive or only negative tracks; "
            f"ROC-AUC and PR-AUC are undefined for them"
        )
    return labels


def load_groundtruth(path: str | Path, role: str = "groundtruth") -> np.ndarray:
    """Load and check a label matrix; errors name the file."""
    return check_groundtruth(load_matrix(path, role), f"{role} file {path}")


def evaluate(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    decisions: np.ndarray | None = None,
) -> dict[str, float]:
    """Official MediaEval metrics of test scores (and, if given, binary decisions).

    Keys are the official names (``ROC-AUC-macro`` ... ``F-score-micro``), in
    the official file's order.
    """
    labels = check_groundtruth(groundtruth)
    check_scores(predictions, "predictions", labels.shape)
    if decisions is not None:
        decisions = check_binary(decisions, "decisions")
        if decisions.shape != labels.shape:
            raise ValueError(
                f"decisions has shape {decisions.shape}; expected {labels.shape} like the groundtruth"
            )
    results: dict[str, float] = {}
    for average in AVERAGES:
        for metric in _scores(average):
            results[metric.official] = metric.score(labels, predictions)
        if decisions is not None:
            # zero_division=0.0 is the value of the official default ('warn'), without the warning.
            precision, recall, fscore, _ = precision_recall_fscore_support(
                labels, decisions, average=average, zero_division=0.0
            )
            results[f"precision-{average}"] = float(precision)
            results[f"recall-{average}"] = float(recall)
            results[f"F-score-{average}"] = float(fscore)
    return results


def evaluate_files(
    groundtruth: str | Path, predictions: str | Path, decisions: str | Path | None = None
) -> dict[str, float]:
    """`evaluate` on .npy files; errors name the file at fault."""
    labels = load_groundtruth(groundtruth)
    scores = check_scores(
        load_matrix(predictions, "predictions"), f"predictions file {predictions}", labels.shape
    )
    chosen = None
    if decisions is not None:
        chosen = check_binary(load_matrix(decisions, "decisions"), f"decisions file {decisions}")
        if chosen.shape != labels.shape:
            raise ValueError(
                f"decisions file {decisions} has shape {chosen.shape}; expected {labels.shape} "
                f"like groundtruth {groundtruth}"
            )
    return evaluate(labels, scores, chosen)


def format_results(results: dict[str, float]) -> str:
    """One metric a line, tab-separated, 6 decimals: the official results file's layout."""
    return "\n".join(f"{name}\t{value:.6f}" for name, value in results.items())
