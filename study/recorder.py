"""Driver-side Ray Tune callback: trial results to disk and MLflow, and progress.

Every trial Ray knows of gets its folder, `STUDY_DIR/trials/<key>/` (see
`study_folder.records`), with its config at once. When a trial ends (finished,
early-stopped, stopped by ASHA, or failed for good), its last checkpoint is
turned into that folder's results: history, metrics with the end state, the
best epoch's weights and prediction matrices. Each trial is written as it
ends, so an interrupted study keeps everything finished so far. A full or
unwritable disk stops the study (as Ctrl-C does) instead of crashing it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from mer_models.config import TrainConfig, applicable_fields
from mer_models.models.registry import ARCHITECTURE_COLUMNS, describe
from mer_models.training.checkpoint import (
    BEST_MODEL_FILE,
    STATE_FILE,
    TEST_PREDICTIONS,
    VALIDATION_PREDICTIONS,
    load_state,
    save_best_model,
)
from mer_models.training.metrics import BEST_VALUE_KEY, DEFAULT_SELECTION
from study.checkpoint_store import CheckpointStore
from study.console import TABLE_SECONDS, StudyConsole
from study.signals import STOP
from study.trainable import storage_fault, trial_config, trial_key
from study.trial_reports import (
    ENDED_KEY,
    FAILED_KEY,
    RESTORED_KEY,
    SKIPPED_KEY,
    STORAGE_KEY,
    TRACEBACK_KEY,
)
from study_folder import records
from tracking.names import (
    ARCHITECTURE_FIELDS,
    ROW_TAG,
    SEED_FIELD,
    SEED_TAG,
    SPLIT_FIELD,
    SPLIT_TAG,
    format_value,
    repeated_run_name,
    row_name,
    trial_run_name,
    varied_draws,
)
from tracking.study_tracker import PENDING, StudyTracker

log = logging.getLogger(__name__)

EMPTY_SUMMARY = {"epoch": 0, "history": [], "best_metrics": {}, "end_state": "error"}
ERROR_FILE = "error.txt"  # a failed trial's full traceback, in its folder


class StudyRecorder(tune.Callback):
    def __init__(
        self,
        study_dir: Path,
        tracker: StudyTracker,
        checkpoints: str,
        progress_seconds: float = TABLE_SECONDS,
        searched: tuple[str, ...] = (),
        keep_checkpoints: bool = False,
        retrying: frozenset[str] = frozenset(),
        device: str = "cpu",
        metric: str = DEFAULT_SELECTION,
        repeats: int = 1,
        splits: int = 1,
        dropped_at: Callable[[str], int | None] | None = None,
        max_epochs: int | None = None,
    ) -> None:
        self.study_dir = Path(study_dir)
        # race: the rung that dropped a trial's row (None: not dropped); else None
        self.dropped_at = dropped_at
        self.metric = metric  # the space's selection metric: the progress table shows it
        self.device = device  # where the trials train: their runs record what acts there
        self.tracker = tracker
        self.checkpoints = checkpoints  # the root of the trials' checkpoint stores
        self.progress_seconds = progress_seconds
        self.searched = searched  # the fields the space varies: they name the trial runs
        # The draw fields that vary (seed: repeats > 1; split: several splits): they end the
        # run names and are columns of the table.
        self.draws = varied_draws(repeats, splits)
        self.keep_checkpoints = keep_checkpoints
        self.retrying = set(retrying)  # failed trials run again: their records are replaced
        self.fault: str | None = None  # set when storage fails: the study stops, resumable
        # The MLflow store failed for good (deleted, damaged): the study stops, resumable.
        self.store_failure: Exception | None = None
        self._skipped: dict[str, list[str]] = {}
        self._failed: dict[str, tuple[str, str]] = {}  # key -> (cause, traceback)
        self._listed: set[str] = set()  # trials whose folder holds at least their config
        self._started: set[str] = set()  # trials started in this run (a rung pauses them)
        self.max_epochs = max_epochs  # a trial's most epochs: the console's time left
        self._epoch: dict[str, int] = {}  # the trials' epochs so far, for the time left
        self._ended: set[str] = set()
        # A live table on a terminal; off one, a line per event and the table every
        # `progress_seconds`.
        self.console = StudyConsole(table_seconds=progress_seconds)
        self.console.epochs_left = self._epochs_left

    # Ray Tune hooks -------------------------------------------------------

    def setup(self, total_num_samples: int | None = None, **info) -> None:
        self.console.begin(total_num_samples)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        if self._guard(self._list, trial):
            return
        key = self.key(trial)
        if key in self._started:
            return  # paused at a rung and let go on: the rung's line said so
        self._started.add(key)
        self.console.trial_started(key, self._name(trial))
        recorded = (records.trial_dir(self.study_dir, key) / records.METRICS_FILE).is_file()
        if not recorded or key in self.retrying:
            self._send(self.tracker.reopen, self._run_id(trial))  # KILLED or FAILED before

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        key = self.key(trial)
        if result.get(STORAGE_KEY):
            self._stop_for_storage(f"trial {key}: {result[STORAGE_KEY]}")
            return
        if result.get(FAILED_KEY):
            self._failed[key] = (result[FAILED_KEY], result.get(TRACEBACK_KEY, ""))
            return
        if result.get(SKIPPED_KEY):
            log.warning("trial %s: %s", key, result[SKIPPED_KEY])
            self._skipped.setdefault(key, []).append(result[SKIPPED_KEY])
        again = result.get(ENDED_KEY) or RESTORED_KEY in result  # an epoch logged before
        if RESTORED_KEY in result and key not in self._epoch:  # trained by an earlier run
            self.console.note(
                f"trial {key} continues after epoch {int(result['epoch'])}, from its checkpoint"
            )
        if "epoch" in result and not again and self.fault is None:
            self._send(self.tracker.log_epoch, self._run_id(trial), result)
        if "epoch" in result:
            self._count_epochs(key, int(result["epoch"]), again)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(self.key(trial))
        failed = self._failed.pop(self.key(trial), None)
        self._guard(self._finish, trial, failed)
        self.on_step_end(iteration, trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(self.key(trial))
        self._guard(self._finish, trial, _ray_error(trial))
        self.on_step_end(iteration, trials)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        for trial in trials:
            if trial.trial_id not in self._listed:
                self._guard(self._list, trial)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.console.table_due():  # the table is built only when it is shown
            self.console.table(self.table(trials))

    def on_experiment_end(self, trials: list, **info) -> None:
        self.console.end(self.table(trials))

    # ----------------------------------------------------------------------

    def _count_epochs(self, key: str, epoch: int, again: bool) -> None:
        """A trial reported `epoch` (`again`: one it had trained before this run)."""
        if not again and epoch > self._epoch.get(key, 0):
            self.console.epochs_run += 1
        self._epoch[key] = epoch

    def _epochs_left(self) -> int | None:
        """The console's most trial-epochs left: the live trials' epochs to their last, and
        every epoch of the trials not yet begun."""
        total = self.console.total
        if self.max_epochs is None or total is None:
            return None
        live = [epoch for key, epoch in self._epoch.items() if key not in self._ended]
        unseen = max(0, total - len(self._ended | set(self._epoch)))
        left = sum(max(0, self.max_epochs - epoch) for epoch in live)
        return left + unseen * self.max_epochs

    def key(self, trial) -> str:
        return trial_key(trial.config, trial.trial_id)

    def _guard(self, write, *args) -> bool:
        """Run a write of the study's records; a full or unwritable disk stops the study
        (True) instead of crashing the driver."""
        if self.fault is not None:
            return True
        try:
            write(*args)
        except OSError as error:
            if not storage_fault(error):
                raise
            self._stop_for_storage(f"the study's records: {error}")
            return True
        return False

    def _stop_for_storage(self, what: str) -> None:
        """Stop the study as Ctrl-C does (Ray then stops every trial, keeping their
        checkpoints); the driver says what failed and how to continue."""
        if self.fault is not None:
            return
        self.fault = what
        STOP.stop_fit()

    def _send(self, write: Callable[..., Any], *args: Any) -> Any:
        """A tracker call from a Tune hook. A store that failed for good (its file deleted,
        a write it refuses) stops the study, resumable, as a full disk does; it never
        crashes the Tune loop."""
        if self.store_failure is not None:
            return None
        try:
            return write(*args)
        except Exception as error:  # noqa: BLE001 - the tracker's failure for good
            self.store_failure = error
            STOP.stop_fit()
            return None

    def _list(self, trial) -> None:
        """Give a trial Ray knows of its folder with its config, so that a study stopped
        before the trial ended lists it, and a resume continues it with that config."""
        self._listed.add(trial.trial_id)
        records.list_trial(self.study_dir, self.key(trial), _config(trial))

    def _name(self, trial) -> str:
        return self._name_of(trial_config(trial.config).to_dict())

    def _name_of(self, config: dict[str, Any]) -> str:
        """A trial's run name: its row's, with its seed and split when the space repeats rows."""
        if self.draws:
            return repeated_run_name(config, self.searched, self.draws)
        return trial_run_name(config, self.searched)

    def _tags(self, config: dict[str, Any]) -> dict[str, str]:
        """A trial run's row, seed and split; MLflow's runs table groups by the row."""
        return {
            ROW_TAG: row_name(config, self.searched),
            SEED_TAG: str(config[SEED_FIELD]),
            SPLIT_TAG: str(config[SPLIT_FIELD]),
        }

    def _run_id(self, trial) -> str:
        """The trial's run id, or the handle that stands for it until the run is made."""
        config = trial_config(trial.config)
        found = self._send(
            self.tracker.trial_run,
            self.key(trial),
            self._name(trial),
            applicable_fields(config, self.device),
            self._tags(config.to_dict()),
        )
        return found or PENDING + self.key(trial)

    def _finish(self, trial, failed: tuple[str, str] | None) -> None:
        """Record a trial that ended: its results from its newest checkpoint, whole.

        `failed`: (cause, traceback) of a trial that failed for good."""
        if self.fault is not None:
            return  # stopped by the fault, not ended: a resume continues it
        key = self.key(trial)
        target = records.trial_dir(self.study_dir, key)
        if (target / records.METRICS_FILE).is_file() and key not in self.retrying:
            self.close_recorded(target)  # recorded before an interruption: close its run too
            self.console.trial_ended(
                f"trial {key} ({self._name(trial)}): recorded before an interruption"
            )
            return
        self.retrying.discard(key)
        outcome: dict[str, Any] = {}

        rung = self.dropped_at(key) if self.dropped_at is not None else None

        def build(staging: Path) -> tuple[dict, dict, list]:
            summary, skipped = self._copy_results(key, staging)
            skipped = [*self._skipped.pop(key, []), *skipped]
            metrics = self._final_metrics(trial, summary, skipped, failed, rung, staging)
            outcome.update(metrics=metrics, history=summary["history"])
            return _config(trial), metrics, summary["history"]

        target = records.write_trial_results(self.study_dir, key, build)
        metrics = outcome["metrics"]
        self._close(target, metrics, outcome["history"])
        self._say_ended(trial, key, target, metrics)

    def _final_metrics(
        self,
        trial,
        summary: dict[str, Any],
        skipped: list[str],
        failed: tuple[str, str] | None,
        rung: int | None,
        staging: Path,
    ) -> dict[str, Any]:
        """A trial's metrics.json from its checkpoint's summary and how it ended; a failed
        trial's traceback goes into `staging` beside it."""
        error = failed[0] if failed is not None else None
        if error is None and not summary["history"]:
            error = "; ".join(skipped) or "the trial ended without a checkpoint"
        end_state = _end_state(summary, error, rung)
        metrics = {
            **summary["best_metrics"],
            "epochs_run": summary["epoch"],
            "end_state": end_state,
            "failures": trial.num_failures,  # crashes, retried within --max-failures
            "trial_name": self._name(trial),
            "row": row_name(_config(trial), self.searched),
            "mlflow_run_id": self._run_id(trial),
        }
        if end_state == records.DROPPED_STATE:
            metrics[records.DROPPED_KEY] = rung
        if skipped:
            metrics["skipped_checkpoints"] = skipped
        if error is not None:
            metrics["error"] = error
            if failed is not None and failed[1]:
                (staging / ERROR_FILE).write_text(failed[1])
        return metrics

    def _say_ended(self, trial, key: str, target: Path, metrics: dict[str, Any]) -> None:
        """The console's line for a trial just recorded: how it ended, and its best score."""
        said = f"trial {key} ({metrics['trial_name']})"
        if metrics["end_state"] == "error":
            details = target / ERROR_FILE
            where = f" (full traceback: {details})" if details.is_file() else ""
            self.console.trial_ended(
                f"{said} failed after {metrics['epochs_run']} epoch(s): {metrics['error']}{where}"
            )
            return
        retries = f" ({trial.num_failures} crash(es))" if trial.num_failures else ""
        best = metrics.get(BEST_VALUE_KEY)
        score = f", best {self.metric} {100 * best:.1f}" if best is not None else ""
        self.console.trial_ended(
            f"{said}: {metrics['end_state']} after {metrics['epochs_run']} epochs{retries}{score}"
        )

    def _copy_results(self, key: str, staging: Path) -> tuple[dict[str, Any], list[str]]:
        """The newest loadable checkpoint's files into `staging`; a trial's files never crash
        the driver, but a full disk stops the study."""
        try:
            return _copy_newest(CheckpointStore(self.checkpoints, key), staging)
        except Exception as error:  # noqa: BLE001
            if storage_fault(error):
                raise
            return dict(EMPTY_SUMMARY), [f"its checkpoints could not be read: {error}"]

    def close_recorded(self, target: Path) -> None:
        """Finish recording a trial whose files were written before an interruption."""
        try:
            metrics = json.loads((target / records.METRICS_FILE).read_text())
            history = json.loads((target / records.HISTORY_FILE).read_text())
            # Its run found by the trial's tag, or made: the id recorded may be a handle (its
            # whole life fell in a tracking outage) or name a run of a store since replaced.
            config = TrainConfig.from_dict(
                json.loads((target / records.CONFIG_FILE).read_text()), source=str(target)
            )
            metrics["mlflow_run_id"] = self._send(
                self.tracker.trial_run,
                target.name,
                metrics["trial_name"],
                applicable_fields(config, self.device),
                self._tags(config.to_dict()),
            )
            if metrics["mlflow_run_id"] is not None:
                self._close(target, metrics, history)
        except Exception as failure:  # noqa: BLE001 - a trial's files never crash the driver
            log.warning("trial %s: its MLflow run could not be closed: %s", target.name, failure)

    def _close(self, target: Path, metrics: dict[str, Any], history: list[dict]) -> None:
        """What follows a trial's files: its MLflow run closed with them, and the checkpoints
        of a trial that did not fail deleted (its results are in `target`; only a failed
        trial may be retried)."""
        run_id = metrics["mlflow_run_id"]
        self._send(self.tracker.log_missing_epochs, run_id, history)
        self._send(
            self.tracker.finish_trial, run_id, metrics, metrics["end_state"], _artifacts(target)
        )
        if metrics["end_state"] != "error" and not self.keep_checkpoints:
            CheckpointStore(self.checkpoints, target.name).delete()

    def table(self, trials: list) -> list[tuple[str, ...]]:
        """The progress table: a header, then a row per trial (its last and best score)."""
        extra = [key for key in self.searched if key not in ARCHITECTURE_FIELDS]
        extra.extend(self.draws)
        rows = [
            (
                "trial",
                *ARCHITECTURE_COLUMNS,
                *extra,
                "status",
                "epoch",
                f"{self.metric} %",
                "best %",
            )
        ]
        for trial in trials:
            config = trial_config(trial.config)
            last = trial.last_result or {}
            best = _best(trial, self.metric)
            rows.append(
                (
                    self.key(trial),
                    *describe(config).cells(missing="-"),
                    *(format_value(getattr(config, key)) for key in extra),
                    _status(self.study_dir, self.key(trial), trial),
                    str(last.get("epoch", "-")),
                    f"{100 * last[self.metric]:.1f}" if self.metric in last else "-",
                    f"{100 * best:.1f}" if best is not None else "-",
                )
            )
        return rows


def _copy_newest(store: CheckpointStore, staging: Path) -> tuple[dict[str, Any], list[str]]:
    """The trial's newest checkpoint that loads into `staging`: its summary, what was skipped."""
    with store.newest() as found:
        if found.folder is None:
            return dict(EMPTY_SUMMARY), list(found.skipped)
        for name in (VALIDATION_PREDICTIONS, TEST_PREDICTIONS):
            if (found.folder / name).is_file():
                shutil.copyfile(found.folder / name, staging / name)
        saved = load_state(found.folder / STATE_FILE)
        save_best_model(
            staging / BEST_MODEL_FILE,
            saved["best_model"],
            saved["config"],
            saved["tags"],
            saved["band_stats"],
        )
        return found.summary, list(found.skipped)


def _end_state(summary: dict[str, Any], error: str | None, rung: int | None) -> str:
    """How a trial ended: an error, its own stop, its row dropped at a race's rung, or ASHA."""
    if error is not None:
        return "error"
    if summary["end_state"] in ("finished", "early_stopped"):
        return summary["end_state"]
    if rung is not None:
        return records.DROPPED_STATE  # its row dropped at a race's rung
    return "asha_stopped"  # ended by the scheduler before its own stop


def _config(trial) -> dict[str, Any]:
    return trial_config(trial.config).to_dict()


def _artifacts(target: Path) -> list[Path]:
    return [
        target / name
        for name in ("config.json", BEST_MODEL_FILE, VALIDATION_PREDICTIONS, TEST_PREDICTIONS)
    ]


def _best(trial, metric: str) -> float | None:
    analysis = trial.metric_analysis.get(metric, {}) if trial.metric_analysis else {}
    return analysis.get("max")


def _status(study_dir: Path, key: str, trial) -> str:
    metrics = records.trial_dir(study_dir, key) / records.METRICS_FILE
    if metrics.is_file():
        return json.loads(metrics.read_text())["end_state"]
    return trial.status.lower()


def _ray_error(trial) -> tuple[str, str]:
    """A trial Ray failed (its worker or node lost past --max-failures): the last line of
    Ray's error file as the cause, the file's text as the traceback."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace").strip()
        lines = text.splitlines()
        return (lines[-1] if lines else "unknown error"), text
    return "unknown error", ""
