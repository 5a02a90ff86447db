"""Driver-side Ray Tune callback: trial results to disk and MLflow, and progress.

Every trial Ray knows of gets its folder, `STUDY_DIR/trials/<trial_id>/`,
with its config at once. When a trial ends (finished, early-stopped, stopped
by ASHA, or failed for good), its last checkpoint is turned into that folder's
results: history, metrics with the end state, the best epoch's weights and
prediction matrices. Each trial is written as it ends, so an interrupted study
keeps everything finished so far.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from mer_models.config import applicable_fields
from mer_models.training.checkpoint import (
    STATE_FILE,
    TEST_PREDICTIONS,
    VALIDATION_PREDICTIONS,
)
from study.checkpoints import CheckpointStore
from study.tracking import StudyTracker
from study.trainable import SKIPPED_KEY, trial_config
from tracking.names import ARCHITECTURE_FIELDS, format_value, trial_run_name

log = logging.getLogger(__name__)

END_STATES = ("finished", "early_stopped", "asha_stopped", "error")
STAGING = ".partial"
EMPTY_SUMMARY = {"epoch": 0, "history": [], "best_metrics": {}, "end_state": "error"}


class StudyRecorder(tune.Callback):
    def __init__(
        self,
        study_dir: Path,
        tracker: StudyTracker,
        checkpoints: str,
        progress_seconds: float = 20.0,
        searched: tuple[str, ...] = (),
        keep_checkpoints: bool = False,
        retrying: frozenset[str] = frozenset(),
    ) -> None:
        self.study_dir = Path(study_dir)
        self.tracker = tracker
        self.checkpoints = checkpoints  # the root of the trials' checkpoint stores
        self.progress_seconds = progress_seconds
        self.searched = searched  # the fields the space varies: they name the trial runs
        self.keep_checkpoints = keep_checkpoints
        self.retrying = set(retrying)  # failed trials run again: their records are replaced
        self._skipped: dict[str, list[str]] = {}
        self._listed: set[str] = set()  # trials whose folder holds at least their config
        self._last_table = 0.0

    # Ray Tune hooks -------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self._run_id(trial)
        recorded = (self.study_dir / "trials" / trial.trial_id / "metrics.json").is_file()
        if not recorded or trial.trial_id in self.retrying:
            self.tracker.reopen(run_id)  # KILLED or FAILED when the study was interrupted

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if result.get(SKIPPED_KEY):
            log.warning("trial %s: %s", trial, result[SKIPPED_KEY])
            self._skipped.setdefault(trial.trial_id, []).append(result[SKIPPED_KEY])
        if "epoch" in result:
            self.tracker.log_epoch(self._run_id(trial), result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, error=None)
        self._print_table(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, error=_error_text(trial))
        self._print_table(trials)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        for trial in trials:
            if trial.trial_id not in self._listed:
                self._list(trial)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last_table >= self.progress_seconds:
            self._print_table(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._print_table(trials)

    # ----------------------------------------------------------------------

    def _list(self, trial) -> None:
        """Give a trial Ray knows of its folder with its config, so that a study stopped
        before the trial ended lists it as unfinished; its results replace the folder."""
        self._listed.add(trial.trial_id)
        target = self.study_dir / "trials" / trial.trial_id
        if (target / "config.json").is_file():
            return
        target.mkdir(parents=True, exist_ok=True)
        staging = target / ("config.json" + STAGING)
        staging.write_text(_config_text(trial))
        staging.rename(target / "config.json")

    def _name(self, trial) -> str:
        return trial_run_name(trial_config(trial.config).to_dict(), self.searched)

    def _run_id(self, trial) -> str:
        config = trial_config(trial.config)
        return self.tracker.trial_run(trial.trial_id, self._name(trial), applicable_fields(config))

    def _finish(self, trial, error: str | None) -> None:
        target = self.study_dir / "trials" / trial.trial_id
        if (target / "metrics.json").is_file() and trial.trial_id not in self.retrying:
            # Recorded before an interruption (Ray does not run it again): make
            # sure its MLflow run was closed too.
            self.close_recorded(target)
            return
        self.retrying.discard(trial.trial_id)
        staging = target.with_name(target.name + STAGING)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "config.json").write_text(_config_text(trial))
        try:
            summary, skipped = _copy_newest(
                CheckpointStore(self.checkpoints, trial.trial_id), staging
            )
        except Exception as failure:  # a trial's files never crash the driver
            summary, skipped = (
                dict(EMPTY_SUMMARY),
                [f"its checkpoints could not be read: {failure}"],
            )
        skipped = [*self._skipped.pop(trial.trial_id, []), *skipped]
        if error is None and not summary["history"]:
            error = "; ".join(skipped) or "the trial ended without a checkpoint"
        if error is not None:
            end_state = "error"
        elif summary["end_state"] in ("finished", "early_stopped"):
            end_state = summary["end_state"]
        else:
            end_state = "asha_stopped"  # ended by the scheduler before its own stop
        run_id = self._run_id(trial)
        metrics = {
            **summary["best_metrics"],
            "epochs_run": summary["epoch"],
            "end_state": end_state,
            "failures": trial.num_failures,  # crashes, each retried while within --max-failures
            "trial_name": self._name(trial),
            "mlflow_run_id": run_id,
        }
        if skipped:
            metrics["skipped_checkpoints"] = skipped
        if error is not None:
            metrics["error"] = error
        (staging / "history.json").write_text(json.dumps(summary["history"], indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        self._close(target, metrics, summary["history"])
        retries = f" ({trial.num_failures} crash(es))" if trial.num_failures else ""
        log.info(
            "trial %s (%s): %s after %d epochs%s",
            trial.trial_id,
            metrics["trial_name"],
            end_state,
            summary["epoch"],
            retries,
        )

    def close_recorded(self, target: Path) -> None:
        """Finish recording a trial whose files were written before an interruption."""
        try:
            metrics = json.loads((target / "metrics.json").read_text())
            history = json.loads((target / "history.json").read_text())
            self._close(target, metrics, history)
        except Exception as failure:  # noqa: BLE001 - a trial's files never crash the driver
            log.warning("trial %s: its MLflow run could not be closed: %s", target.name, failure)

    def _close(self, target: Path, metrics: dict[str, Any], history: list[dict]) -> None:
        """What follows a trial's files: its MLflow run closed with them, and the checkpoints
        of a trial that did not fail deleted (its results are in `target`; only a failed
        trial may be retried)."""
        run_id = metrics["mlflow_run_id"]
        self.tracker.log_missing_epochs(run_id, history)
        self.tracker.finish_trial(run_id, metrics, metrics["end_state"], _artifacts(target))
        if metrics["end_state"] != "error" and not self.keep_checkpoints:
            CheckpointStore(self.checkpoints, target.name).delete()

    def _print_table(self, trials: list) -> None:
        self._last_table = time.monotonic()
        extra = [key for key in self.searched if key not in ARCHITECTURE_FIELDS]
        rows = [
            (
                "trial",
                "model",
                "cbam",
                "cell",
                "units",
                *extra,
                "status",
                "epoch",
                "val AUC",
                "best",
            )
        ]
        for trial in trials:
            config = trial_config(trial.config)
            last = trial.last_result or {}
            best = _best(trial)
            rows.append(
                (
                    trial.trial_id,
                    config.model,
                    "yes" if config.cbam and config.model == "crnn" else "no",
                    config.cell if config.model == "crnn" else "-",
                    _units(config.units, config.layers) if config.model == "crnn" else "-",
                    *(format_value(getattr(config, key)) for key in extra),
                    _status(self.study_dir, trial),
                    str(last.get("epoch", "-")),
                    f"{last['val_roc_auc']:.4f}" if "val_roc_auc" in last else "-",
                    f"{best:.4f}" if best is not None else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        print("\n".join(lines), flush=True)


def _copy_newest(store: CheckpointStore, staging: Path) -> tuple[dict[str, Any], list[str]]:
    """The trial's newest checkpoint that loads into `staging`: its summary, what was skipped."""
    with store.newest() as found:
        if found.folder is None:
            return dict(EMPTY_SUMMARY), list(found.skipped)
        for name in (VALIDATION_PREDICTIONS, TEST_PREDICTIONS):
            if (found.folder / name).is_file():
                shutil.copyfile(found.folder / name, staging / name)
        saved = torch.load(found.folder / STATE_FILE, map_location="cpu", weights_only=False)
        torch.save(
            {key: saved[key] for key in ("config", "tags", "band_stats")}
            | {"model": saved["best_model"]},
            staging / "best_model.pt",
        )
        return found.summary, list(found.skipped)


def _config_text(trial) -> str:
    return json.dumps(trial_config(trial.config).to_dict(), indent=2)


def _artifacts(target: Path) -> list[Path]:
    return [
        target / name
        for name in ("config.json", "best_model.pt", VALIDATION_PREDICTIONS, TEST_PREDICTIONS)
    ]


def _units(units: int, layers: int) -> str:
    return str(units) if layers == 1 else f"{layers} x {units}"


def _best(trial) -> float | None:
    metric = trial.metric_analysis.get("val_roc_auc", {}) if trial.metric_analysis else {}
    return metric.get("max")


def _status(study_dir: Path, trial) -> str:
    metrics = study_dir / "trials" / trial.trial_id / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())["end_state"]
    return trial.status.lower()


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = Path(path).read_text().strip().splitlines()
        return lines[-1] if lines else "unknown error"
    return "unknown error"
