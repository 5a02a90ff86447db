"""The Ray Tune trainable: one trial runs `mer_models.training.train` on its config.

Ray Tune hands the trial a flat config dict: sampled parameters, and under
`row` one entry of the space's explicit `configs` list; a resumed study's
trials carry their recorded key and config under `recorded` instead (see
`study_folder.records`). Every epoch is reported to Ray (schedulers read the
validation metric) and its checkpoint kept in the study's checkpoint store
(`study.checkpoint_store`), from which a crashed, moved or resumed trial continues.
The trial works in a node-local scratch folder (`study.scratch`: swept from
the node once its trial is gone, however it ended), so nothing it writes on
the way lands in the trial folder that Ray syncs to storage.

A failure that a retry cannot mend (no checkpoint loads, bad data, a
diverged run, a CUDA graph that does not capture, a bug) is reported as
the trial's last result and the trial ends, so Ray does not run it again
and the study shows it once; a full or unwritable disk is reported so that
the driver stops the study. A lost worker or node is Ray's to retry.

The driver reuses a worker process for trial after trial (`reuse_actors`):
its imports (torch, scikit-learn, Ray Tune: most of a trial's start in a
new process) are paid once per worker, not once per trial. Each trial
starts from the state a new worker has (`WorkerState`): its thread count,
no tensors, graphs or cached GPU memory of the trial before; `train` seeds
every generator it draws from. A worker whose trial failed on a GPU is
not trusted with another (a failed CUDA graph capture, a device error may
leave the process's CUDA state broken): the next trial that lands on it
fails as a retryable `WorkerUnusable`, and Ray runs it on a new worker.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import math
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from mer_models.training.step import GraphCaptureFailed
from mer_models.training.trainer import train
from study import scratch
from study.checkpoint_store import CheckpointStore
from study.trial_reports import (
    ENDED_KEY,
    FAILED_KEY,
    RESTORED_KEY,
    SKIPPED_KEY,
    STORAGE_KEY,
    TRACEBACK_KEY,
)
from study_folder.records import RESOURCE_FIELDS
from study_folder.search_space import METRIC

ROW_KEY = "row"  # the param-space key of the explicit configuration list
RECORDED_KEY = "recorded"  # a resumed trial: {"key": its key, "config": its recorded config}
# Where a retry cannot help but room on the disk (or permission) will.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

log = logging.getLogger(__name__)


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: its parameters, with its `configs` row on top; for a
    resumed trial, its recorded config (on this run's resources)."""
    if RECORDED_KEY in config:
        values = dict(config[RECORDED_KEY]["config"])
        values.update({key: config[key] for key in RESOURCE_FIELDS if key in config})
        return TrainConfig.from_dict(values, source="recorded trial config")
    values = {key: value for key, value in config.items() if key != ROW_KEY}
    values.update(config.get(ROW_KEY) or {})
    return TrainConfig.from_dict(values, source="trial config")


def trial_key(config: dict[str, Any], trial_id: str) -> str:
    """The study's key of a trial: its recorded key when resumed, else its Ray trial id."""
    return (config.get(RECORDED_KEY) or {}).get("key") or trial_id


def storage_fault(error: BaseException) -> bool:
    """A full, read-only or forbidden disk (shutil.Error lists its files' errors)."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return True
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        return any(
            any(f"[Errno {code}]" in str(why) for code in STORAGE_ERRNOS)
            for *_, why in error.args[0]
        )
    return False


def run_trial(
    config: dict[str, Any],
    data: dict[str, Any],
    checkpoints: str,
    metric: str = METRIC,
    decision_epochs: tuple[int, ...] = (),
) -> None:
    """Train one trial, continuing from its newest checkpoint that loads.

    `metric`: the space's selection metric: early stopping and the best epoch follow it,
    and Ray requires it in every result. `decision_epochs`: where the study's scheduler
    may stop the trial (its rungs); the checkpoints written there hold the test predictions.
    """
    key = trial_key(config, tune.get_context().get_trial_id())
    trial = _Trial(key, CheckpointStore(checkpoints, key), metric, decision_epochs)
    WORKER.begin_trial(key)
    failed = True  # until the trial ends as it should (stopped by its scheduler included)
    try:
        train_config = trial_config(config)
        WORKER.set_threads(train_config.threads)
        scratch.sweep()  # what trials killed on this node left, whatever their study
        trial.scratch = scratch.Scratch(key)
        restore_dir = trial.restore()
        trial.train(train_config, data, restore_dir)
        failed = False
    except SystemExit:  # the scheduler stopped the trial at a report: a clean end
        failed = False
        raise
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - sorted into what a retry can and cannot mend
        if _retryable(error):
            raise
        trial.report_failure(error)
    finally:
        if trial.scratch is not None:
            trial.scratch.remove()
        WORKER.end_trial(key, failed)


@dataclass
class _Trial:
    """One trial's way through `run_trial`: its work folder and what it reported last."""

    key: str
    store: CheckpointStore
    metric: str
    decision_epochs: tuple[int, ...] = ()
    scratch: scratch.Scratch | None = None  # the node-local work folder, once made
    last: dict[str, Any] = field(default_factory=lambda: {"epoch": 0})  # the last epoch's record
    notes: dict[str, str] = field(default_factory=dict)  # added to the next report once
    reported: bool = False  # an epoch of this attempt was reported

    def restore(self) -> Path | None:
        """The newest checkpoint that loads, copied into the work folder (None: start afresh);
        a restored trial reports where it stands first."""
        self.store.remove_partials()
        restore_dir = None
        with self.store.newest() as found:
            if found.folder is None and found.skipped:
                raise TrialCannotContinue(
                    f"no checkpoint of trial {self.key} loads: " + "; ".join(found.skipped)
                )
            if found.folder is not None:
                restore_dir = self.scratch.path / "restore"
                shutil.copytree(found.folder, restore_dir)
                history = found.summary.get("history") or [{}]
                self.last = {**history[-1], "epoch": int(found.summary["epoch"])}
                restored = json.dumps([record.get(self.metric) for record in history])
        self.notes = {SKIPPED_KEY: "; ".join(found.skipped)} if found.skipped else {}
        if restore_dir is not None:
            tune.report({self.metric: math.nan, **self.last, RESTORED_KEY: restored})
        return restore_dir

    def train(
        self, train_config: TrainConfig, data: dict[str, Any], restore_dir: Path | None
    ) -> None:
        """Train, reporting every epoch; a trial restored at its end reports its last epoch."""
        # The study driver checked the data once before starting trials.
        train(
            train_config,
            DatasetPaths(**{**data, "split": train_config.split}),  # a space's splits: its own
            self.scratch.path / "run",
            on_epoch=self.report,
            restore=restore_dir,
            check_data=False,
            selection=self.metric,
            decision_epochs=self.decision_epochs,
        )
        if not self.reported:  # restored at its end (a kill came after its last checkpoint)
            tune.report({self.metric: math.nan, **self.last, ENDED_KEY: True, **self.notes})

    def report(self, record: dict[str, float], checkpoint_dir: Path) -> None:
        """`train`'s epoch callback: keep the checkpoint, then report the epoch to Ray."""
        self.store.save(checkpoint_dir, int(record["epoch"]))
        self.last.clear()
        self.last.update(record)
        tune.report({**record, **self.notes})
        self.notes.clear()
        self.reported = True

    def report_failure(self, error: Exception) -> None:
        """The last result of a trial that failed for good: a storage fault, or its cause."""
        cause = _one_line(error)
        final = {"epoch": int(self.last.get("epoch", 0)), self.metric: math.nan}
        if storage_fault(error):
            tune.report({**final, STORAGE_KEY: cause})
        else:
            tune.report({**final, FAILED_KEY: cause, TRACEBACK_KEY: traceback.format_exc()})


class TrialCannotContinue(RuntimeError):
    """The trial's checkpoints exist but none loads: a retry would find the same."""


class WorkerUnusable(RuntimeError):
    """This worker's GPU state is not to be trusted after a failed trial: Ray retries the
    trial on a new worker."""


class WorkerState:
    """What one worker process carries from trial to trial, put back before each.

    A new worker's thread count is the one it started with (Ray sets it from
    the trial's CPUs); a trial with `threads` > 0 sets its own, and the next
    trial starts from the first again. After a trial on a GPU the tensors it
    left in reference cycles are collected and the cached memory (the CUDA
    graphs' pools included) goes back to the device, so the next trial (or
    another process sharing the GPU) finds it free. A trial that fails while
    CUDA is in use leaves the worker unusable (see the module docstring).
    """

    def __init__(self) -> None:
        self.threads = torch.get_num_threads()
        self.unusable: str | None = None  # the key of the failed GPU trial, if any

    def begin_trial(self, key: str) -> None:
        # Ray waits this long for a stopped trial's thread to end before it reuses the
        # worker (2 s by default, then the next trial fails); on a busy node it can take
        # longer. Read by Ray in this process at the next reuse.
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
        if self.unusable is not None:
            raise WorkerUnusable(
                f"trial {key} landed on a worker whose trial {self.unusable} failed on the GPU, "
                "which may leave its CUDA state broken; it runs again on a new worker"
            )
        torch.set_num_threads(self.threads)

    def set_threads(self, threads: int) -> None:
        torch.set_num_threads(threads if threads > 0 else self.threads)

    def end_trial(self, key: str, failed: bool) -> None:
        if not torch.cuda.is_initialized():
            return  # what the trial left on the CPU goes as Python frees it (a full
            # collection here costs ~0.5 s a trial, among the imports' objects)
        if failed:
            self.unusable = key
            return
        gc.collect()  # the trial's model, optimizer and graphs, cycles included
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# One per worker process: the Ray actor that runs trials imports this module once.
WORKER = WorkerState()


def _retryable(error: BaseException) -> bool:
    """Errors a later attempt may not meet: memory taken by other trials, a network blip."""
    if isinstance(error, GraphCaptureFailed):  # shown once: every attempt would capture alike
        return False
    return isinstance(
        error, torch.OutOfMemoryError | ConnectionError | TimeoutError | WorkerUnusable
    )


def _one_line(error: BaseException) -> str:
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        *_, why = error.args[0][0]  # copytree's list of (source, target, why): the first
        why = str(why)  # "[Errno 28] No space left on device: 'source' -> 'target'"
        if " -> " in why:
            head, target = why.rsplit(" -> ", 1)
            return f"{head.split(': ')[0]}: {target}"
        return why
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
