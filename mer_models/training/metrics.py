"""Tagging metrics, and the one table of their names.

Each `Metric` is a score of (tracks, tags) matrices with every name it goes
by: its key in `tagging_metrics`, the per-epoch key of history.json (also a
space's `metric.name` and the per-epoch MLflow metric), the best-epoch keys
of metrics.json, its best-epoch MLflow name and its official MediaEval name.
Adding a metric is one entry here; every reader derives its names from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    """One score metric and its names."""

    key: str  # tagging_metrics' key: roc_auc
    official: str  # the MediaEval results file's name: ROC-AUC-macro
    label: str  # in tables and axis titles: ROC-AUC
    average: str  # macro (over the tags) or micro (over every track-tag pair)
    # scikit-learn's score function (sklearn.metrics), called with `average`; by name, so
    # that the names (which every command's start reads) do not import scikit-learn (1 s)
    function: str

    @property
    def epoch(self) -> str:
        """Per-epoch validation score: history.json, MLflow, a space's `metric.name`."""
        return f"val_{self.key}"

    @property
    def validation(self) -> str:
        """metrics.json: the validation score at the best epoch."""
        return f"validation_{self.key}"

    @property
    def test(self) -> str:
        """metrics.json and MLflow: the test score at the best epoch."""
        return f"test_{self.key}"

    @property
    def best(self) -> str:
        """MLflow: the validation score at the best epoch."""
        return f"best_val_{self.key}"

    @property
    def fused_validation(self) -> str:
        """A fusion's metrics.json (MLflow: ``fusion_`` before it): the fused members' validation
        score, under the official name as a key: ``validation_roc_auc_macro``."""
        return f"validation_{self.official.lower().replace('-', '_')}"

    @property
    def short(self) -> str:
        """A column header's name: ``ROC-AUC`` (macro, the default), ``ROC-AUC micro``."""
        return self.label if self.average == "macro" else f"{self.label} {self.average}"

    @property
    def title(self) -> str:
        """``macro ROC-AUC``: what a sentence calls it."""
        return f"{self.average} {self.label}"

    def score(self, labels: np.ndarray, scores: np.ndarray) -> float:
        """The official score: scikit-learn over the whole matrices."""
        import sklearn.metrics

        function = getattr(sklearn.metrics, self.function)
        return float(function(labels, scores, average=self.average))


METRICS: tuple[Metric, ...] = (
    Metric("roc_auc", "ROC-AUC-macro", "ROC-AUC", "macro", "roc_auc_score"),
    Metric("pr_auc", "PR-AUC-macro", "PR-AUC", "macro", "average_precision_score"),
    Metric("roc_auc_micro", "ROC-AUC-micro", "ROC-AUC", "micro", "roc_auc_score"),
    Metric("pr_auc_micro", "PR-AUC-micro", "PR-AUC", "micro", "average_precision_score"),
)
BY_EPOCH_NAME = {metric.epoch: metric for metric in METRICS}
# Validation macro ROC-AUC: the paper's model selection. MediaEval ranked by macro PR-AUC.
DEFAULT_SELECTION = "val_roc_auc"
# metrics.json keys naming the metric that chose the best epoch, and its value there.
SELECTION_KEY = "selection_metric"
BEST_VALUE_KEY = "best_metric"


def selection_metric(name: str | None, source: str = "metric") -> Metric:
    """The metric a name selects by; an unknown name is refused, naming the choices."""
    metric = BY_EPOCH_NAME.get(DEFAULT_SELECTION if name is None else name)
    if metric is None:
        raise ValueError(
            f"{source}: unknown selection metric {name!r}; expected one of "
            f"{', '.join(BY_EPOCH_NAME)} (validation scores computed every epoch)"
        )
    return metric


def tagging_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric of the table on (tracks, tags) scores, by key, and how many tags counted.

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
    values: dict[str, float] = {}
    for metric in METRICS:
        if metric.average == "macro":
            values[metric.key] = metric.score(labels[:, valid], scores[:, valid])
        else:
            values[metric.key] = metric.score(labels, scores)
    return {**values, "tags_evaluated": int(valid.sum())}
