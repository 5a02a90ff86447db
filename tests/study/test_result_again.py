"""A resumed study that finds another best trial records it on the parent run after the
first, and its best model still logs there (MLflow links the run's metrics to it)."""

from __future__ import annotations

import mlflow
import mlflow.pytorch
import torch

from tracking.study_tracker import StudyTracker


def test_a_second_result_replaces_the_first_and_the_model_still_logs(tmp_path, monkeypatch):
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "again", tmp_path)
    tracker.start({"space": "again", "repeats": 1})
    first = {"best_epoch": 29, "test_roc_auc": 0.70, "test_pr_auc": 0.20}
    second = {"best_epoch": 30, "test_roc_auc": 0.60, "test_pr_auc": 0.15}  # lower: a resume
    # whose new best has the better validation score but the lower test score
    for best_id, metrics in (("t1", first), ("t2", second)):
        tracker.log_result(best_id, best_id, {}, metrics, {}, {"summary.txt": best_id})
    assert tracker.drain(60)  # the end's writes are queued
    client = tracker.client
    logged = client.get_run(tracker.parent_run_id).data.metrics
    assert logged["test_roc_auc"] == 0.60 and logged["best_epoch"] == 30
    history = client.get_metric_history(tracker.parent_run_id, "test_roc_auc")
    assert len({(m.timestamp, m.step) for m in history}) == len(history) == 2
    # MLflow's fluent API keeps its store in the process and in MLFLOW_TRACKING_URI, which
    # the studies the later tests start would inherit: both are put back.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracker.tracking_uri)
    try:
        with mlflow.start_run(run_id=tracker.parent_run_id):  # as study.best_model logs it
            info = mlflow.pytorch.log_model(
                torch.nn.Linear(2, 1), name="model", serialization_format="pickle"
            )
    finally:
        mlflow.set_tracking_uri(previous)
    linked = client.get_logged_model(info.model_id).metrics
    assert {m.value for m in linked if m.key == "test_roc_auc"} == {0.60, 0.70}
