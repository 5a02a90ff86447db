"""MLflow tracking of a study: one experiment, a parent run, one nested run per trial.

All MLflow writes happen in the driver process, one at a time, from Ray Tune
callbacks: trials never open the tracking store themselves. That sidesteps
SQLite's lock contention under concurrent writers, and works the same for a
file, SQLite or server store. Runs are found again by their tags, so a
resumed study neither duplicates a run nor logs an epoch twice.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

STUDY_TAG = "mer.study"
TRIAL_TAG = "mer.trial_id"
ROLE_TAG = "mer.role"
END_STATE_TAG = "mer.end_state"
EPOCH_METRICS = ("train_loss", "val_roc_auc", "val_pr_auc", "lr", "seconds", "samples_per_second")
FINAL_METRICS = (
    "validation_roc_auc",
    "validation_pr_auc",
    "test_roc_auc",
    "test_pr_auc",
    "validation_roc_auc_micro",
    "validation_pr_auc_micro",
    "test_roc_auc_micro",
    "test_pr_auc_micro",
    "best_epoch",
    "epochs_run",
)


def default_tracking_uri(working_dir: Path) -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store in the working folder."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(working_dir / 'mlflow.db').resolve()}"
    )


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def study_run_filter(study: str) -> str:
    """The MLflow search filter that finds a study's parent run."""
    return f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'"


def create_nested_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    study: str,
    role: str,
    name: str,
    tags: dict[str, str],
) -> str:
    """A run under the study's parent run, tagged with its role (trial, fusion); its id."""
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={"mlflow.parentRunId": parent_run_id, ROLE_TAG: role, STUDY_TAG: study, **tags},
    )
    return run.info.run_id


class StudyTracker:
    """The MLflow side of one study. Picklable: the client is made on first use."""

    def __init__(self, tracking_uri: str, study: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.study = study
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def start(self, params: dict[str, Any]) -> None:
        """Find or create the experiment and the study's parent run."""
        experiment = self.client.get_experiment_by_name(self.study)
        if experiment is None:
            location = None
            if self.artifact_root is not None and is_local_store(self.tracking_uri):
                location = (self.artifact_root / self.study).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(
                self.study, artifact_location=location
            )
        else:
            self.experiment_id = experiment.experiment_id
        found = self.client.search_runs([self.experiment_id], study_run_filter(self.study))
        if found:
            self.parent_run_id = found[0].info.run_id
            return
        run = self.client.create_run(
            self.experiment_id, run_name=self.study, tags={ROLE_TAG: "study", STUDY_TAG: self.study}
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(
            self.parent_run_id, params=[Param(k, _param(v)) for k, v in sorted(params.items())]
        )

    def trial_run(self, trial_id: str, name: str, params: dict[str, Any]) -> str:
        """The run of a trial, created (with its params) the first time it is asked for."""
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{STUDY_TAG}` = '{self.study}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "val_roc_auc")
            self._last_step[run_id] = max((m.step for m in history), default=0)
        else:
            run_id = create_nested_run(
                self.client,
                self.experiment_id,
                self.parent_run_id,
                self.study,
                "trial",
                name,
                {TRIAL_TAG: trial_id},
            )
            self.client.log_batch(
                run_id, params=[Param(k, _param(v)) for k, v in sorted(params.items())]
            )
            self._last_step[run_id] = 0
        self._runs[trial_id] = run_id
        return run_id

    def log_epoch(self, run_id: str, record: dict[str, Any]) -> None:
        """Per-epoch metrics with step = epoch; epochs already logged are skipped."""
        epoch = int(record["epoch"])
        if epoch <= self._last_step.get(run_id, 0):
            return
        timestamp = int(record.get("timestamp", 0) * 1000)
        metrics = [
            Metric(name, float(record[name]), timestamp, epoch)
            for name in EPOCH_METRICS
            if name in record
        ]
        self.client.log_batch(run_id, metrics=metrics)
        self._last_step[run_id] = epoch

    def finish_trial(
        self, run_id: str, metrics: dict[str, Any], end_state: str, artifacts: list[Path]
    ) -> None:
        final = [
            Metric(name, float(metrics[name]), 0, 0) for name in FINAL_METRICS if name in metrics
        ]
        self.client.log_batch(run_id, metrics=final, tags=[RunTag(END_STATE_TAG, end_state)])
        for path in artifacts:
            if path.exists():
                self.client.log_artifact(run_id, str(path))
        status = "FAILED" if end_state == "error" else "FINISHED"
        self.client.set_terminated(run_id, status=status)

    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)


def _param(value: Any) -> str:
    return str(value)[:6000]
