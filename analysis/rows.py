"""Per-row results of a study: what each configuration scores over its repeated draws.

A row is a configuration without its draw (`study_folder.records.row_of`: the
seed and split); a study with ``repeats: N`` trains every row N times, seeds
0..N-1, and with ``splits: [...]`` on each of the splits.
For each row: n, the mean best epoch, and for test macro ROC-AUC, test
macro PR-AUC and the validation selection metric the mean, the standard
deviation (ddof 1) and a 95% Student-t interval with n - 1 degrees of
freedom (none for n = 1), plus the row's seed ensemble: the mean of its
trials' test predictions, scored on the study's stored test labels (per
split, then averaged over the splits). Rows
are ranked by the mean validation selection metric, as single trials are.
A row that a race dropped at a rung (`study.race`) has no entry: its trials
did not reach the full budget, and the study's `rungs.json` holds the
evidence that dropped it.

`write_rows` writes them as ``STUDY/rows.json``; `analysis.effects` pairs
the rows' trials by draw to measure what each factor changes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from analysis.bootstrap import macro_scores
from mer_models.files import atomic_write_text
from mer_models.training.metrics import Metric
from study_folder.records import (
    DRAW_FIELDS,
    DROPPED_KEY,
    DROPPED_STATE,
    FINISHED_STATES,
    Study,
    Trial,
    draw_of,
    finite_number,
    row_key,
    row_of,
)
from tracking.names import row_name

log = logging.getLogger(__name__)

ROWS_FILE = "rows.json"
CONFIDENCE = 0.95
# The per-trial scores a row summarises (metrics.json keys); the selection metric joins them.
TEST_KEYS = ("test_roc_auc", "test_pr_auc")


@dataclass(frozen=True)
class Summary:
    """Mean, sd (ddof 1) and 95% t interval of n values; sd and interval None for n = 1."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "sd": self.sd, "low": self.low, "high": self.high}

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)


def summarise(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """The mean of ``values`` with its Student-t interval (n - 1 degrees of freedom)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to summarise")
    mean = float(data.mean())
    if data.size == 1:
        return Summary(1, mean, None, None, None)
    sd = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1)) * sd / math.sqrt(data.size)
    return Summary(int(data.size), mean, sd, mean - half, mean + half)


def draw_label(draw: tuple[Any, ...], among: Sequence[tuple[Any, ...]] = ()) -> str:
    """``seed 3, split 1``; with `among` (the draws it is one of), only the fields that vary
    there: ``seed 3`` in a study on one split."""
    shown = [i for i in range(len(DRAW_FIELDS)) if len({d[i] for d in among}) > 1]
    return ", ".join(f"{DRAW_FIELDS[i]} {draw[i]}" for i in shown or range(len(DRAW_FIELDS)))


def trial_name(trial: Trial) -> str:
    """A trial as the MLflow runs table names it (metrics.json's trial_name), with its id."""
    name = trial.metrics.get("trial_name")
    return f"{name} ({trial.key})" if name else trial.key


@dataclass(frozen=True)
class RowResult:
    """One row: its trials (by draw) and what they score together."""

    name: str
    key: str  # study_folder.records.row_key
    config: dict[str, Any]  # the row's config (without seed and resources)
    trials: tuple[Trial, ...]
    test_roc_auc: Summary
    test_pr_auc: Summary
    validation: Summary  # of the study's selection metric
    mean_best_epoch: float | None
    ensemble_test_roc_auc: float
    ensemble_test_pr_auc: float

    @property
    def n(self) -> int:
        return len(self.trials)


@dataclass(frozen=True)
class RowTable:
    """A study's rows, best first, and the trials no row counts (with why)."""

    rows: tuple[RowResult, ...]
    selection: Metric
    searched: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]  # (trial id, why)

    @property
    def repeated(self) -> bool:
        """Whether any row has more than one trial: the rows' intervals and effects exist."""
        return any(row.n > 1 for row in self.rows)

    @property
    def validation_key(self) -> str:
        """rows.json's key of the validation selection metric: ``val_roc_auc``."""
        return self.selection.epoch

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "row": row.name,
                "n": row.n,
                "config": row.config,
                "trials": [trial.key for trial in row.trials],
                "trial_names": [str(trial.metrics.get("trial_name") or "") for trial in row.trials],
                "draws": [list(draw_of(trial.config)) for trial in row.trials],
                "mean_best_epoch": row.mean_best_epoch,
                "test_roc_auc": row.test_roc_auc.to_dict(),
                "test_pr_auc": row.test_pr_auc.to_dict(),
                self.validation_key: row.validation.to_dict(),
                "ensemble_test_roc_auc": row.ensemble_test_roc_auc,
                "ensemble_test_pr_auc": row.ensemble_test_pr_auc,
            }
            for row in self.rows
        ]


def _why_left_out(trial: Trial, needed: tuple[str, ...]) -> str | None:
    if trial.end_state not in FINISHED_STATES:
        return f"end state {trial.end_state or 'none (running)'}"
    if not trial.has_predictions:
        return "no validation and test predictions"
    missing = [key for key in needed if finite_number(trial.metrics.get(key)) is None]
    if missing:
        return f"no finite {', '.join(missing)} in metrics.json"
    return None


def _unique_names(rows: list[tuple[str, str]]) -> dict[str, str]:
    """Row key -> name; rows whose names coincide get a number after it (never two alike)."""
    names, seen = {}, {}
    for key, name in rows:
        seen[name] = seen.get(name, 0) + 1
        names[key] = name if seen[name] == 1 else f"{name} ({seen[name]})"
    return names


def row_results(study: Study) -> RowTable:
    """Group the study's finished trials with predictions by row and summarise each row."""
    selection = study.selection
    needed = (*TEST_KEYS, selection.validation)
    grouped: dict[str, list[Trial]] = {}
    left_out = []
    # A race's dropped row leaves with all its trials, also those that had ended by patience
    # before its rung: a row of its survivors alone would be a smaller, biased row.
    dropped = {
        row_key(trial.config): trial.metrics.get(DROPPED_KEY, "?")
        for trial in study.trials
        if trial.end_state == DROPPED_STATE
    }
    for trial in study.trials:
        rung = dropped.get(row_key(trial.config))
        why = (
            f"its row was dropped at rung {rung} of the race"
            if rung is not None
            else _why_left_out(trial, needed)
        )
        if why is not None:
            left_out.append((trial.key, why))
            continue
        grouped.setdefault(row_key(trial.config), []).append(trial)
    if left_out:
        by_why: dict[str, list[str]] = {}
        for key, why in left_out:
            by_why.setdefault(why, []).append(key)
        log.info(
            "study %s: trial(s) in no row: %s",
            study.name,
            "; ".join(f"{', '.join(keys)} ({why})" for why, keys in by_why.items()),
        )
    if not grouped:
        log.warning(
            "study %s: no trial ended in %s with predictions and finite %s: no row to summarise",
            study.dir,
            ", ".join(FINISHED_STATES),
            ", ".join(needed),
        )
        return RowTable((), selection, tuple(study.searched), tuple(left_out))
    labels = {split: study.labels("test", split)[0] for split in study.runs_on_splits}
    names = _unique_names(
        [
            (key, row_name(row_of(trials[0].config), study.searched))
            for key, trials in grouped.items()
        ]
    )
    rows = [_row(names[key], key, trials, selection, labels) for key, trials in grouped.items()]
    rows.sort(key=lambda row: (-row.validation.mean, row.name))
    return RowTable(tuple(rows), selection, tuple(study.searched), tuple(left_out))


def _row(
    name: str, key: str, trials: list[Trial], selection: Metric, labels: dict[int, np.ndarray]
) -> RowResult:
    trials = sorted(trials, key=lambda trial: (repr(draw_of(trial.config)), trial.key))

    def values(metric_key: str) -> list[float]:
        return [float(trial.metrics[metric_key]) for trial in trials]

    epochs = [finite_number(trial.metrics.get("best_epoch")) for trial in trials]
    epochs = [epoch for epoch in epochs if epoch is not None]
    ensemble = _seed_ensemble(name, trials, labels)
    return RowResult(
        name=name,
        key=key,
        config=row_of(trials[0].config),
        trials=tuple(trials),
        test_roc_auc=summarise(values("test_roc_auc")),
        test_pr_auc=summarise(values("test_pr_auc")),
        validation=summarise(values(selection.validation)),
        mean_best_epoch=float(np.mean(epochs)) if epochs else None,
        ensemble_test_roc_auc=float(ensemble["roc_auc"]),
        ensemble_test_pr_auc=float(ensemble["pr_auc"]),
    )


def _seed_ensemble(
    name: str, trials: list[Trial], labels: dict[int, np.ndarray]
) -> dict[str, float]:
    """The row's seed ensemble: on each split the mean of its trials' test predictions, scored
    on that split's labels; over several splits, the mean of those scores."""
    by_split: dict[int, list[Trial]] = {}
    for trial in trials:
        by_split.setdefault(int(trial.config["split"]), []).append(trial)
    scores = []
    for split, members in sorted(by_split.items()):
        if split not in labels:
            raise ValueError(
                f"row {name}: trial {members[0].key} ran on split {split}, which the study "
                f"did not record labels of (its splits: {', '.join(map(str, labels))})"
            )
        mean = np.mean([t.load_predictions("test").astype(np.float64) for t in members], axis=0)
        if mean.shape != labels[split].shape:
            raise ValueError(
                f"row {name}: test predictions of shape {mean.shape}, the study's split-{split} "
                f"test labels {labels[split].shape}"
            )
        scores.append(macro_scores(labels[split], mean))
    return {
        key: float(np.mean([score[name] for score in scores]))
        for key, name in (("roc_auc", "ROC-AUC-macro"), ("pr_auc", "PR-AUC-macro"))
    }


def write_rows(table: RowTable, study_dir: str | Path) -> Path:
    """``STUDY/rows.json``, written whole; its path."""
    path = Path(study_dir) / ROWS_FILE
    atomic_write_text(path, json.dumps(table.to_json(), indent=2) + "\n")
    return path
