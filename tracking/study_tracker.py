"""MLflow tracking of a study: one experiment, a parent run, one nested run per trial.

All MLflow writes happen in the driver process, one at a time (Ray Tune
callbacks queue them for one writer thread): trials never open the tracking
store themselves. That sidesteps
SQLite's lock contention under concurrent writers, and works the same for a
file, SQLite or server store. Runs are found again by their tags, so a
resumed study neither duplicates a run nor logs an epoch twice. Names and
tags follow `tracking` (shared with the analysis package).

A store that is locked or down does not stop the study: the driver's writes
wait in order in memory, are retried with backoff, and are sent once it is
back (`tracking.writer`); the study's own records on disk stay complete
either way, and a resume logs what never reached MLflow.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, Metric, RunTag
from mlflow.tracking import MlflowClient

from mer_models.data.splits import DatasetPaths
from mer_models.data.synthetic import MARKER as SYNTHETIC_MARKER
from mer_models.training.metrics import DEFAULT_SELECTION
from tracking.names import (
    BEST,
    BEST_CONFIG_TAG,
    BEST_NAME_TAG,
    BEST_TRIAL_TAG,
    DROPPED,
    DROPPED_KEY,
    DROPPED_TAG,
    END_STATE_TAG,
    EPOCH_METRICS,
    FINAL_METRICS,
    MODEL_NAME_TAG,
    ROLE_TAG,
    RUNG_METRICS,
    RUNGS_FILE,
    STUDY_ID_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    mlflow_metrics,
)
from tracking.runs import (
    create_nested_run,
    dataset_input,
    log_metrics,
    named_study_filter,
    params,
    study_experiment,
    study_run_filter,
    study_runs_filter,
    trial_run_filter,
)
from tracking.store import TrackingStore
from tracking.writer import OrderedWriter, SkippedWrite, reason_of

log = logging.getLogger(__name__)

RESULT_ARTIFACTS = "study"  # the parent run's folder of the space YAML and the summary table
PENDING = "pending-trial:"  # what `trial_run` returns before the trial's run is found or made


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
    """The MLflow side of one study. Picklable: the client and the writer are made on use.

    `start` and `log_result` (before and after the Tune run) call the store
    directly. The calls made from the Tune callback (`trial_run`, `reopen`,
    `log_epoch`, `log_missing_epochs`, `finish_trial`) and the study's end
    (`close_open_runs`, `finish_study`) are queued, in order, for one writer
    thread, so that a locked or unreachable store never stalls the Tune loop:
    a write that fails for a transient reason (SQLite locked or busy, a
    server refusing connections or timing out) stays first in the queue and
    is tried again after 1, 2, 4 ... 30 s; any other failure is raised by the
    next call. Every write can be sent twice without a trace: runs are found
    by their tags before one is created, and an epoch sent again sends only
    the values its run lacks. The store's outage is told once, and its
    return once.
    """

    def __init__(
        self,
        tracking_uri: str,
        study: str,
        artifact_root: Path | None = None,
        description: str = "",
        dataset: DatasetInput | None = None,
        drain_timeout_s: float = 120.0,
        searched: tuple[str, ...] = (),
        study_id: str = "",
        metric: str = DEFAULT_SELECTION,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.study = study
        self.study_id = study_id  # "": a study older than ids, its runs found by name
        self.model_name = f"{study}-best"  # `start` reads the parent run's, or chooses it
        self.artifact_root = artifact_root
        self.description = description
        self.searched = tuple(searched)  # the params the UI's view of the trials shows
        self.metric = metric  # the selection metric: the view's order
        self.dataset = dataset  # recorded as the input of the parent run and of every trial run
        self.drain_timeout_s = drain_timeout_s  # what the study's end waits for queued writes
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id, set by the writer
        self._last_step: dict[str, int] = {}  # run id -> last epoch logged, used by the writer
        self._new_writer()

    def _new_writer(self) -> None:
        self._writer = OrderedWriter(self.tracking_uri, self.drain_timeout_s)
        self._requested: set[str] = set()  # trials whose run is queued to be found or made

    def __getstate__(self) -> dict[str, Any]:
        keep = (
            "tracking_uri",
            "study",
            "study_id",
            "model_name",
            "artifact_root",
            "description",
            "dataset",
            "searched",
            "metric",
        )
        state = {key: self.__dict__[key] for key in keep}
        state |= {
            "drain_timeout_s": self.drain_timeout_s,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "_runs": dict(self._runs),
            "_last_step": dict(self._last_step),
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = None
        self._new_writer()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def start(self, values: dict[str, Any], per_row: int = 1) -> None:
        """Find or create the experiment and the study's parent run (`values`: its params).

        `per_row`: the trials each row has (seeds times splits); more than one opens the
        experiment's view grouped by row."""
        location = None
        if self.artifact_root is not None and TrackingStore(self.tracking_uri).is_local:
            location = (self.artifact_root / self.study).resolve().as_uri()
        self.experiment_id = study_experiment(
            self.client, self.study, self.description, location, self.searched, per_row, self.metric
        )
        found = self.client.search_runs(
            [self.experiment_id], study_run_filter(self.study, self.study_id)
        )
        if found:
            self.parent_run_id = found[0].info.run_id
            self.model_name = found[0].data.tags.get(MODEL_NAME_TAG, self.model_name)
            self._reopen(self.parent_run_id)
            return
        others = self.client.search_runs([self.experiment_id], named_study_filter(self.study))
        if others and self.study_id:
            # Another study had this name here: its runs and its model stay its own.
            self.model_name = f"{self.study}-{self.study_id[:8]}-best"
            log.warning(
                "the name %s was used before in MLflow store %s (%d other study run(s), "
                "experiment %s); this study has its own parent run, and its best model is "
                "registered as %s",
                self.study,
                self.tracking_uri,
                len(others),
                self.experiment_id,
                self.model_name,
            )
        identity = {STUDY_ID_TAG: self.study_id} if self.study_id else {}
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study,
            tags={
                ROLE_TAG: "study",
                STUDY_TAG: self.study,
                MODEL_NAME_TAG: self.model_name,
                **identity,
            },
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(self.parent_run_id, params=params(values))
        self._log_dataset(self.parent_run_id)

    # Queued: called from the Tune callback -----------------------------------

    def trial_run(
        self, trial_id: str, name: str, values: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        """The run of a trial, created (with its params and `tags`: its row and seed) the
        first time it is asked for.

        Its run id once the writer has found or made it; until then a stable
        handle (``pending-trial:<trial id>``) that the other calls take in its
        place, and that a later tracker resolves by the trial's tag.
        """
        self._raise_failure()
        if trial_id in self._runs:
            return self._runs[trial_id]
        if trial_id not in self._requested:
            self._requested.add(trial_id)
            self._submit(
                f"the run of trial {trial_id}",
                self._find_or_make,
                trial_id,
                name,
                values,
                dict(tags or {}),
            )
        return PENDING + trial_id

    def log_epoch(self, run_id: str, record: dict[str, Any]) -> None:
        """Per-epoch metrics with step = epoch; epochs already logged are skipped."""
        epoch = int(record["epoch"])
        timestamp = int(record.get("timestamp", 0) * 1000)
        metrics = [
            Metric(name, value, timestamp, epoch)
            for name, value in mlflow_metrics(record, EPOCH_METRICS).items()
        ]
        self._submit(f"epoch {epoch} of run {run_id}", self._log_epoch, run_id, epoch, metrics)

    def log_missing_epochs(self, run_id: str, history: list[dict[str, Any]]) -> None:
        """Epochs a trial trained whose results never reached the driver (killed between a
        checkpoint and its report), logged from the trial's own history: one value per epoch."""
        self._submit(f"the epochs run {run_id} misses", self._log_missing, run_id, history)

    def finish_trial(
        self, run_id: str, metrics: dict[str, Any], end_state: str, artifacts: list[Path]
    ) -> None:
        """Close a trial's run with its results; once only, also when called again on resume."""
        self._submit(
            f"the end of run {run_id}", self._finish_trial, run_id, metrics, end_state, artifacts
        )

    def log_rungs(self, rungs: list[dict[str, Any]]) -> None:
        """A race's decided rungs on the parent run: `rungs.json` under ``study/`` and, per
        rung, RUNG_METRICS with step = its epoch (rungs logged before are not again)."""
        if self.parent_run_id is not None:
            self._submit("the race's rungs", self._log_rungs, list(rungs))

    def reopen(self, run_id: str) -> None:
        """A run that continues after an interruption is RUNNING again."""
        self._submit(f"reopening run {run_id}", self._reopen, run_id)

    # The study's end: queued, then waited for -------------------------------

    def queue(self, what: str, write: Callable[..., None], *args: Any) -> None:
        """A write of the study's end (a fusion run, the report, the best model): called as
        ``write(*args, again=...)`` by the writer, in order after the writes queued before,
        retried while the store is unreachable; it must be safe to run twice."""
        self._writer.submit(what, write, *args, end=True)

    def drop_end_writes(self) -> int:
        """Forget the end's writes not yet begun (a stop signal: `--resume` does them, each
        once); how many were dropped."""
        return self._writer.drop_end_writes()

    def close_open_runs(self, status: str) -> bool:
        """End every run of the study still RUNNING (KILLED on an interruption, else FAILED),
        after the writes queued before; waits for them as `finish_study` does."""
        if self.experiment_id is None:
            return True
        self._submit("closing the open runs", self._close_open_runs, status)
        return self._writer.drain_at_end()

    def finish_study(self, status: str = "FINISHED") -> bool:
        """End the parent run, after the writes queued before, and wait for them all: up to
        `drain_timeout_s` for the whole end of the study, then say what was not sent. True
        when everything was sent."""
        if self.parent_run_id is not None:
            self._submit("the end of the study's run", self._terminate, self.parent_run_id, status)
        return self._writer.drain_at_end()

    def end_within(self, seconds: float) -> None:
        """Wait at most `seconds` from now for the writes of the study's end (a stop signal
        leaves no time for a slow store)."""
        self._writer.end_within(seconds)

    def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the queued writes (`OrderedWriter.drain`)."""
        return self._writer.drain(timeout_s)

    @property
    def pending(self) -> int:
        """Writes queued and not yet sent."""
        return self._writer.pending

    # Queued: the study's end -------------------------------------------------

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
        under ``study/``. Values the run holds already are not logged again.
        """
        metrics = {**mlflow_metrics(best_metrics, FINAL_METRICS), **fusion_metrics}
        tags = {
            BEST_TRIAL_TAG: best_id,
            BEST_NAME_TAG: best_name,
            BEST_CONFIG_TAG: json.dumps(best_config, sort_keys=True),
        }
        self._submit("the study's result", self._log_result, metrics, tags, dict(files), end=True)

    def tag_study_run(self, key: str, value: str) -> None:
        """A tag on the study's parent run, now (from a write of the end, on the writer)."""
        self.client.set_tag(self.parent_run_id, key, value)

    def _log_result(
        self, metrics: dict[str, float], tags: dict[str, str], files: dict[str, str], again: bool
    ) -> None:
        logged = self.client.get_run(self.parent_run_id).data.metrics
        # Timed now: a resume that finds another best trial logs its values after the first
        # ones (MLflow shows the latest); two values at one time and step would also stop
        # MLflow linking the run's metrics to the best model logged next.
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id,
            metrics=[
                Metric(name, value, now, 0)
                for name, value in metrics.items()
                if logged.get(name) != value
            ],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        with tempfile.TemporaryDirectory() as folder:
            for name, text in files.items():
                (Path(folder) / name).write_text(text)
            self.client.log_artifacts(self.parent_run_id, folder, RESULT_ARTIFACTS)

    def _submit(self, what: str, write: Callable[..., None], *args: Any, end: bool = False) -> None:
        self._writer.submit(what, write, *args, end=end)

    def _raise_failure(self) -> None:
        self._writer.raise_failure()

    # The writes: each may run again after a failure (``again``) -------------

    def _find_or_make(
        self, trial_id: str, name: str, values: dict[str, Any], tags: dict[str, str], again: bool
    ) -> None:
        if trial_id in self._runs:
            return
        found = self.client.search_runs(
            [self.experiment_id], trial_run_filter(self.study, trial_id, self.study_id)
        )
        if found:  # a resumed study's run, or one made by an attempt that failed later
            run = found[0]
            run_id = run.info.run_id
            if not run.data.params:
                self.client.log_batch(run_id, params=params(values))
            if not run.inputs.dataset_inputs:
                self._log_dataset(run_id)
            missing = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
            if missing:  # a run made before its study tagged rows
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in missing.items()])
        else:
            run_id = create_nested_run(
                self.client,
                self.experiment_id,
                self.parent_run_id,
                self.study,
                "trial",
                name,
                {**tags, TRIAL_TAG: trial_id},
                self.study_id,
            )
            self.client.log_batch(run_id, params=params(values))
            self._log_dataset(run_id)
            self._last_step[run_id] = 0
            self._runs[trial_id] = run_id
            return
        self._known(trial_id, run_id)

    def _known(self, trial_id: str, run_id: str) -> None:
        """A run found again: its epochs logged so far are not logged twice."""
        # Every epoch's metrics go in one batch: the loss's steps are the epochs logged.
        logged = self._logged_steps(run_id, EPOCH_METRICS["train_loss"])
        self._last_step[run_id] = max(logged, default=0)
        self._runs[trial_id] = run_id

    def _resolve(self, run_id: str) -> str:
        """The run id of a handle that `trial_run` returned (maybe by an earlier tracker)."""
        if not run_id.startswith(PENDING):
            return run_id
        trial_id = run_id.removeprefix(PENDING)
        if trial_id not in self._runs:
            found = self.client.search_runs(
                [self.experiment_id], trial_run_filter(self.study, trial_id, self.study_id)
            )
            if not found:
                raise SkippedWrite(
                    trial_id,
                    f"trial {trial_id}: no MLflow run was made for it (the store was "
                    "unreachable while it ran); its records are on disk",
                )
            self._known(trial_id, found[0].info.run_id)
        return self._runs[trial_id]

    def _log_epoch(self, run_id: str, epoch: int, metrics: list[Metric], again: bool) -> None:
        run_id = self._resolve(run_id)
        if epoch <= self._last_step.get(run_id, 0):
            return
        if again:  # the last attempt may have landed (a server's reply lost): send what is not
            metrics = [
                metric
                for metric in metrics
                if metric.step not in self._logged_steps(run_id, metric.key)
            ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self._last_step[run_id] = epoch

    def _logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def _log_missing(self, run_id: str, history: list[dict[str, Any]], again: bool) -> None:
        run_id = self._resolve(run_id)
        logged = {name: self._logged_steps(run_id, name) for name in EPOCH_METRICS.values()}
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, int(record["epoch"]))
            for record in history
            for name, value in mlflow_metrics(record, EPOCH_METRICS).items()
            if int(record["epoch"]) not in logged[name]
        ]
        log_metrics(self.client, run_id, metrics)
        last = max((int(record["epoch"]) for record in history), default=0)
        self._last_step[run_id] = max(self._last_step.get(run_id, 0), last)

    def _finish_trial(
        self,
        run_id: str,
        metrics: dict[str, Any],
        end_state: str,
        artifacts: list[Path],
        again: bool,
    ) -> None:
        run_id = self._resolve(run_id)
        status = "FAILED" if end_state == "error" else "FINISHED"
        run = self.client.get_run(run_id)
        if run.info.status == status and run.data.tags.get(END_STATE_TAG) == end_state:
            return
        final = [
            Metric(name, value, 0, 0)
            for name, value in mlflow_metrics(metrics, FINAL_METRICS).items()
            if name not in run.data.metrics
        ]
        tags = [RunTag(END_STATE_TAG, end_state)]
        if metrics.get(DROPPED_KEY) is not None:
            tags.append(RunTag(DROPPED_TAG, str(metrics[DROPPED_KEY])))
        self.client.log_batch(run_id, metrics=final, tags=tags)
        logged = {artifact.path for artifact in self.client.list_artifacts(run_id)}
        for path in artifacts:
            if path.exists() and path.name not in logged:
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=status)

    def _log_rungs(self, rungs: list[dict[str, Any]], again: bool) -> None:
        by_epoch: dict[int, list[dict[str, Any]]] = {}
        for entry in rungs:
            by_epoch.setdefault(int(entry["epoch"]), []).append(entry)
        kept, dropped, best = RUNG_METRICS
        logged = self._logged_steps(self.parent_run_id, kept)
        now = int(time.time() * 1000)
        metrics = []
        for epoch, entries in sorted(by_epoch.items()):
            if epoch in logged:
                continue
            decisions = [entry["decision"] for entry in entries]
            top = next(entry["mean"] for entry in entries if entry["decision"] == BEST)
            metrics += [
                Metric(kept, len(decisions) - decisions.count(DROPPED), now, epoch),
                Metric(dropped, decisions.count(DROPPED), now, epoch),
                Metric(best, float(top), now, epoch),
            ]
        if metrics:
            self.client.log_batch(self.parent_run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / RUNGS_FILE).write_text(json.dumps(rungs, indent=2) + "\n")
            self.client.log_artifact(
                self.parent_run_id, str(Path(folder) / RUNGS_FILE), RESULT_ARTIFACTS
            )

    def _reopen(self, run_id: str, again: bool = False) -> None:
        run_id = self._resolve(run_id)
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _close_open_runs(self, status: str, again: bool) -> None:
        for run in self.client.search_runs(
            [self.experiment_id],
            f"{study_runs_filter(self.study, self.study_id)} and attributes.status = 'RUNNING'",
            max_results=10_000,
        ):
            self.client.set_terminated(run.info.run_id, status=status)

    def _terminate(self, run_id: str, status: str, again: bool) -> None:
        self.client.set_terminated(run_id, status=status)

    def _log_dataset(self, run_id: str) -> None:
        if self.dataset is not None:
            self.client.log_inputs(run_id, datasets=[self.dataset])


def store_failure_reason(tracking_uri: str, error: BaseException) -> str:
    """Why a store failed, in a few words: its file gone, else the innermost cause."""
    missing = TrackingStore(tracking_uri).missing_file()
    if missing is not None:
        return f"its file {missing} no longer exists (deleted while the study ran?)"
    return reason_of(error)
