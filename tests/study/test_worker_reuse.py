"""A Ray worker that runs trial after trial (`reuse_actors`) gives each trial the result a
new worker gives it; a worker a failed GPU trial leaves behind takes no further trial."""

from __future__ import annotations

import json

import pytest
import torch
from ray import tune

from study import trainable, trial_reports
from study.checkpoint_store import CheckpointStore
from study.trainable import ROW_KEY, WorkerState, WorkerUnusable, _retryable, run_trial
from tests.study.processes import local_ray

# Everything a reported epoch holds that does not depend on the machine's speed.
RESULT_KEYS = ("epoch", "train_loss", "val_roc_auc", "val_pr_auc", "val_roc_auc_micro", "lr")
FIXED = {"max_epochs": 2, "patience": 2, "width": 4, "window": 64, "batch_size": 4, "workers": 0}
FIRST = {"model": "crnn", "cell": "gru", "units": 8, "cbam": True, "seed": 3, "threads": 0}
# Another model, seed and thread count in between: what it leaves must not reach the third.
OTHER = {"model": "attention_cnn", "seed": 11, "threads": 2, "dropout": 0.3}


@pytest.mark.slow  # one Ray Tune run: ~15 s on the 2-core VM
def test_a_reused_worker_gives_each_trial_a_fresh_workers_result(tiny_dataset, tmp_path):
    """Trials 1 and 3 have one config: 1 runs in a new worker, 3 in the same worker after
    1 and another model with another seed and thread count; every epoch and the best
    epoch's test scores are equal."""
    checkpoints = str(tmp_path / "checkpoints")
    with local_ray():
        tuner = tune.Tuner(
            tune.with_parameters(run_trial, data=tiny_dataset.to_dict(), checkpoints=checkpoints),
            param_space={**FIXED, ROW_KEY: tune.grid_search([FIRST, OTHER, FIRST])},
            tune_config=tune.TuneConfig(
                metric="val_roc_auc", mode="max", max_concurrent_trials=1, reuse_actors=True
            ),
            run_config=tune.RunConfig(name="reuse", storage_path=str(tmp_path), verbose=0),
        )
        results = sorted(tuner.fit(), key=lambda result: result.metrics["trial_id"])
    assert [result.error for result in results] == [None] * 3
    assert len({int(result.metrics["pid"]) for result in results}) == 1  # one worker ran all
    epochs = [result.metrics_dataframe[list(RESULT_KEYS)].to_dict("records") for result in results]
    assert len(epochs[0]) == FIXED["max_epochs"]
    assert epochs[2] == epochs[0]
    assert epochs[1] != epochs[0]
    best = []
    for result in results:
        with CheckpointStore(checkpoints, result.metrics["trial_id"]).newest() as found:
            best.append(found.summary["best_metrics"])
    assert best[2] == best[0]


def test_each_trial_starts_on_the_workers_own_thread_count():
    worker = WorkerState()
    started = torch.get_num_threads()
    try:
        worker.begin_trial("a")
        worker.set_threads(started + 1)
        worker.end_trial("a", failed=False)
        worker.begin_trial("b")
        assert torch.get_num_threads() == started
        worker.set_threads(0)  # threads 0: torch's default, the worker's own
        assert torch.get_num_threads() == started
    finally:
        torch.set_num_threads(started)


def test_a_worker_whose_gpu_trial_failed_sends_the_next_trial_elsewhere(monkeypatch):
    """Its CUDA state may be broken: the next trial fails retryably, and Ray runs it again
    on a new worker; a CPU trial's failure leaves the worker as it was."""
    worker = WorkerState()
    worker.begin_trial("cpu")
    worker.end_trial("cpu", failed=True)
    worker.begin_trial("next")  # no CUDA in use: the worker stays
    monkeypatch.setattr(trainable.torch.cuda, "is_initialized", lambda: True)
    worker.end_trial("gpu", failed=True)
    with pytest.raises(WorkerUnusable, match="trial gpu failed on the GPU") as raised:
        worker.begin_trial("innocent")
    assert _retryable(raised.value)


@pytest.mark.slow  # two Ray Tune runs of one trial: ~15 s on the 2-core VM
def test_a_trial_restored_after_its_last_epoch_reports_that_epoch_again(tiny_dataset, tmp_path):
    """A kill after a trial's last checkpoint leaves nothing to train on resume: the trial
    still gives Ray one result with the metric (Ray refuses a run without it), marked so
    that the study does not log the epoch twice."""
    checkpoints = str(tmp_path / "checkpoints")
    config = {**FIXED, **FIRST, "max_epochs": 1}
    space = {trainable.RECORDED_KEY: {"key": "finished", "config": config}}
    with local_ray():
        runs = []
        for name in ("first", "restored"):
            tuner = tune.Tuner(
                tune.with_parameters(
                    run_trial, data=tiny_dataset.to_dict(), checkpoints=checkpoints
                ),
                param_space=space,
                tune_config=tune.TuneConfig(metric="val_roc_auc", mode="max"),
                run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
            )
            runs.append(tuner.fit()[0])
    first, restored = runs
    assert first.error is None and restored.error is None
    assert first.metrics_dataframe["epoch"].tolist() == [1]
    assert not first.metrics.get(trial_reports.ENDED_KEY)
    assert restored.metrics[trial_reports.ENDED_KEY] is True
    # The epoch it restored, reported first with its scores so far, then its end; no epoch
    # was trained again.
    reported = restored.metrics_dataframe
    assert reported["epoch"].tolist() == [1, 1]
    assert json.loads(reported[trial_reports.RESTORED_KEY][0]) == [first.metrics["val_roc_auc"]]
    for key in RESULT_KEYS:
        assert restored.metrics[key] == first.metrics[key], key
