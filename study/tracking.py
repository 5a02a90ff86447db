"""MLflow tracking of a study: one experiment, a parent run, one nested run per trial.

All MLflow writes happen in the driver process, one at a time, from Ray Tune
callbacks: trials never open the tracking store themselves. That sidesteps
SQLite's lock contention under concurrent writers, and works the same for a
file, SQLite or server store. Runs are found again by their tags, so a
resumed study neither duplicates a run nor logs an epoch twice. Names and
tags follow `tracking` (shared with the analysis package).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, Metric, RunTag
from mlflow.tracking import MlflowClient

from mer_models.data.splits import DatasetPaths
from mer_models.synthetic import MARKER as SYNTHETIC_MARKER
from tracking.names import (
    BEST_CONFIG_TAG,
    BEST_NAME_TAG,
    BEST_TRIAL_TAG,
    END_STATE_TAG,
    EPOCH_METRICS,
    FINAL_METRICS,
    ROLE_TAG,
    SCHEDULER_METRIC,
    STUDY_TAG,
    TRIAL_TAG,
    mlflow_metrics,
)
from tracking.runs import (
    create_nested_run,
    dataset_input,
    is_local_store,
    params,
    study_experiment,
    study_run_filter,
    trial_run_filter,
)

log = logging.getLogger(__name__)

RESULT_ARTIFACTS = "study"  # the parent run's folder of the space YAML and the summary table


def study_dataset(data: DatasetPaths, tracks: dict[str, int], tags: int) -> DatasetInput:
    """The study's data as an MLflow dataset input: where it lies, which split, how many tracks."""
    synthetic = (data.metadata.parent / SYNTHETIC_MARKER).is_file()
    kind = "synthetic" if synthetic else "mtg-jamendo"
    return dataset_input(
        f"{kind}-{data.subset}-split{data.split}",
        data.metadata.as_uri(),
        {
            **{key: str(value) for key, value in data.to_dict().items()},
            "synthetic": synthetic,
            "tags": tags,
            **{f"{part}_tracks": count for part, count in tracks.items()},
        },
    )


class StudyTracker:
    """The MLflow side of one study. Picklable: the client is made on first use."""

    def __init__(
        self,
        tracking_uri: str,
        study: str,
        artifact_root: Path | None = None,
        description: str = "",
        dataset: DatasetInput | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.study = study
        self.artifact_root = artifact_root
        self.description = description
        self.dataset = dataset  # recorded as the input of the parent run and of every trial run
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

    def start(self, values: dict[str, Any]) -> None:
        """Find or create the experiment and the study's parent run."""
        location = None
        if self.artifact_root is not None and is_local_store(self.tracking_uri):
            location = (self.artifact_root / self.study).resolve().as_uri()
        self.experiment_id = study_experiment(self.client, self.study, self.description, location)
        found = self.client.search_runs([self.experiment_id], study_run_filter(self.study))
        if found:
            self.parent_run_id = found[0].info.run_id
            self.reopen(self.parent_run_id)
            return
        run = self.client.create_run(
            self.experiment_id, run_name=self.study, tags={ROLE_TAG: "study", STUDY_TAG: self.study}
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(self.parent_run_id, params=params(values))
        self._log_dataset(self.parent_run_id)

    def trial_run(self, trial_id: str, name: str, values: dict[str, Any]) -> str:
        """The run of a trial, created (with its params) the first time it is asked for."""
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = self.client.search_runs(
            [self.experiment_id], trial_run_filter(self.study, trial_id)
        )
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, SCHEDULER_METRIC)
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
            self.client.log_batch(run_id, params=params(values))
            self._log_dataset(run_id)
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
            Metric(name, value, timestamp, epoch)
            for name, value in mlflow_metrics(record, EPOCH_METRICS).items()
        ]
        self.client.log_batch(run_id, metrics=metrics)
        self._last_step[run_id] = epoch

    def log_missing_epochs(self, run_id: str, history: list[dict[str, Any]]) -> None:
        """Epochs a trial trained whose results never reached the driver (killed between a
        checkpoint and its report), logged from the trial's own history: one value per epoch."""
        logged = {
            m.step for m in self.client.get_metric_history(run_id, EPOCH_METRICS[SCHEDULER_METRIC])
        }
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, int(record["epoch"]))
            for record in history
            if int(record["epoch"]) not in logged
            for name, value in mlflow_metrics(record, EPOCH_METRICS).items()
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def finish_trial(
        self, run_id: str, metrics: dict[str, Any], end_state: str, artifacts: list[Path]
    ) -> None:
        """Close a trial's run with its results; once only, also when called again on resume."""
        status = "FAILED" if end_state == "error" else "FINISHED"
        run = self.client.get_run(run_id)
        if run.info.status == status and run.data.tags.get(END_STATE_TAG) == end_state:
            return
        final = [
            Metric(name, value, 0, 0)
            for name, value in mlflow_metrics(metrics, FINAL_METRICS).items()
            if name not in run.data.metrics
        ]
        self.client.log_batch(run_id, metrics=final, tags=[RunTag(END_STATE_TAG, end_state)])
        logged = {artifact.path for artifact in self.client.list_artifacts(run_id)}
        for path in artifacts:
            if path.exists() and path.name not in logged:
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=status)

    def log_result(
        self,
        best_id: str,
        best_name: str,
        best_config: dict[str, Any],
        best_metrics: dict[str, Any],
        fusion_metrics: dict[str, float],
        files: dict[str, str],
    ) -> None:
        """The study's result on its parent run.

        The best trial's final metrics (under the trial runs' names), its id,
        name and config as tags (a resumed study may pick another best trial:
        tags can change, params cannot), the fusion's test metrics, and
        ``files`` (artifact name -> text: the space YAML, the summary table)
        under ``study/``.
        """
        metrics = {**mlflow_metrics(best_metrics, FINAL_METRICS), **fusion_metrics}
        tags = {
            BEST_TRIAL_TAG: best_id,
            BEST_NAME_TAG: best_name,
            BEST_CONFIG_TAG: json.dumps(best_config, sort_keys=True),
        }
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(name, value, 0, 0) for name, value in metrics.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        with tempfile.TemporaryDirectory() as folder:
            for name, text in files.items():
                (Path(folder) / name).write_text(text)
            self.client.log_artifacts(self.parent_run_id, folder, RESULT_ARTIFACTS)

    def reopen(self, run_id: str) -> None:
        """A run that continues after an interruption is RUNNING again."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def close_open_runs(self, status: str) -> None:
        """End every run of the study still RUNNING (KILLED on an interruption, else FAILED)."""
        if self.experiment_id is None:
            return
        for run in self.client.search_runs(
            [self.experiment_id],
            f"tags.`{STUDY_TAG}` = '{self.study}' and attributes.status = 'RUNNING'",
            max_results=10_000,
        ):
            self.client.set_terminated(run.info.run_id, status=status)

    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    def _log_dataset(self, run_id: str) -> None:
        if self.dataset is not None:
            self.client.log_inputs(run_id, datasets=[self.dataset])
