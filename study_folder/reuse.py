"""Trials a study takes over from an earlier study instead of training them again.

A space with `reuse: FOLDER` (a study's `confirm.yaml` has `reuse: .`: the
study that wrote it) takes over that study's trials that ran to their own
stop (finished, or early stopped by patience) on exactly a configuration
this study plans and has not begun: the same config and seed, budget
included, on the same data, selected by the same metric, and trained the
way this study's device would train it. A confirmation of a raced or
repeated study so trains only the seeds its search did not run; a race's
kept trials qualify, since a pause at a rung changes when a trial trains,
never what it computes. A trial taken over is copied whole (its results,
weights and predictions, its metrics.json naming where it came from) and
its MLflow run is made in this study's experiment like that of any ended
trial.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from mer_models.config import EXECUTION_FIELDS, TrainConfig, applicable_fields
from study_folder import records

REUSABLE_STATES = ("finished", "early_stopped")  # a trial that ran to its own stop
REUSED_FROM_KEY = "reused_from"  # metrics.json: the trial folder it was copied from


class ReuseError(ValueError):
    """The study `reuse` names is none, or trained otherwise than this one would."""


def check_source(source: Path, data: dict[str, Any], metric: str) -> None:
    """`source` is a study folder whose trials ran on `data` (split aside: a trial's config
    names its own) and were selected by `metric`; else ReuseError naming what differs."""
    try:
        record = records.read_study(source)
    except records.RecordError as error:
        raise ReuseError(f"reuse: {error}") from None
    if record is None:
        raise ReuseError(
            f"reuse: {source} is not a study folder (no {records.STUDY_FILE}); `reuse` is read "
            "relative to the space file (a confirm.yaml moved out of its study folder needs "
            "that folder's path): name the study whose trials this one takes over, or remove "
            "the key"
        )
    theirs = {k: v for k, v in record.data.items() if k != "split"}
    ours = {k: v for k, v in data.items() if k != "split"}
    if theirs != ours:
        raise ReuseError(
            f"reuse: study {record.name} ({source}) trained on other data ({theirs}) than this "
            f"study reads ({ours}): give both the same data flags, or remove the key"
        )
    if record.metric != metric:
        raise ReuseError(
            f"reuse: study {record.name} chose its trials' best epochs by {record.metric}, this "
            f"space by {metric}: its trials would not be this study's; remove the key"
        )


def take_over(
    source: Path, study_dir: Path, planned: list[dict[str, Any]], device: str
) -> list[str]:
    """Copy into `study_dir` the trials of `source` that are planned configs this study
    has not begun; their keys."""
    listed = records.read_trials(study_dir)
    not_begun, _ = records.match_planned(planned, listed)
    wanted = Counter(records.planned_key(config) for config in not_begun)
    trained_as = {records.planned_key(c): _execution(c, device) for c in not_begun}
    taken: list[str] = []
    keys = {trial.key for trial in listed}
    for trial in records.read_trials(source):
        key = records.planned_key(trial.config)
        if (
            wanted[key] > 0
            and trial.end_state in REUSABLE_STATES
            and trial.has_predictions
            and trial.key not in keys
            and {f: trial.config.get(f) for f in EXECUTION_FIELDS} == trained_as[key]
        ):
            records.write_trial_results(
                study_dir, trial.key, lambda staging, trial=trial: _copy(trial, staging)
            )
            wanted[key] -= 1
            taken.append(trial.key)
    return taken


def _execution(config: dict[str, Any], device: str) -> dict[str, Any]:
    """How a planned config would train on `device` (bf16, CUDA graphs, memory layout)."""
    acting = applicable_fields(TrainConfig.from_dict(config, source="planned trial"), device)
    return {field: acting[field] for field in EXECUTION_FIELDS}


def _copy(trial: records.Trial, staging: Path) -> tuple[dict, dict, list]:
    """`write_trial_results`'s build: the trial's files, then its config, metrics (with where
    they came from) and history."""
    written_last = (records.CONFIG_FILE, records.METRICS_FILE, records.HISTORY_FILE)
    for path in trial.dir.iterdir():
        if path.is_file() and path.name not in written_last:
            shutil.copy2(path, staging / path.name)
    config = json.loads((trial.dir / records.CONFIG_FILE).read_text())
    metrics = {**trial.metrics, REUSED_FROM_KEY: str(trial.dir)}
    metrics.pop("mlflow_run_id", None)  # the earlier study's run: this study makes its own
    return config, metrics, list(trial.history)
