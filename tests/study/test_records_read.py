"""The study reader follows the driver's folder contract and refuses what is not a study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from study_folder.records import (
    check_finished,
    finished_trials,
    load_study,
    ranked_trials,
    resolve_study,
)


def write_trial(
    study: Path, trial_id: str, roc: float | None, predictions: bool = True, running: bool = False
) -> None:
    folder = study / "trials" / trial_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "crnn", "lr": 0.001, "seed": 1}))
    if running:
        return
    history = [
        {
            "epoch": 1,
            "train_loss": 0.3,
            "val_roc_auc": roc,
            "val_pr_auc": 0.1,
            "lr": 0.001,
            "seconds": 2.0,
            "samples_per_second": 100.0,
        }
    ]
    (folder / "history.json").write_text(json.dumps(history))
    metrics = {
        "validation_pr_auc": 0.1,
        "test_roc_auc": 0.7,
        "test_pr_auc": 0.1,
        "best_epoch": 1,
        "epochs_run": 1,
        "end_state": "finished" if predictions else "error",
    }
    if roc is not None:
        metrics["validation_roc_auc"] = roc
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if predictions:
        for part in ("validation", "test"):
            np.save(folder / f"{part}_predictions.npy", np.full((4, 3), roc or 0.0, np.float32))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    description = {
        "name": "table1",
        "space": "search_spaces/table1.yaml",
        "data": {
            "metadata": str(tmp_path / "meta"),
            "melspecs": str(tmp_path / "mel"),
            "split": 0,
            "subset": "moodtheme",
        },
        "tracking_uri": "file:///tmp/mlruns",
        "experiment_id": "1",
        "parent_run_id": "abc",
    }
    (folder / "study.json").write_text(json.dumps(description))
    return folder


def test_a_study_is_read_and_ranked_by_validation_roc_auc(study):
    write_trial(study, "t0", 0.70)
    write_trial(study, "t1", 0.80)
    write_trial(study, "t2", 0.75)
    write_trial(study, "t3", None, predictions=False)  # errored before its first validation
    write_trial(study, "t4", None, running=True)
    result = load_study(study)
    assert result.name == "table1" and result.data.split == 0 and result.data.subset == "moodtheme"
    assert [t.key for t in result.trials] == ["t0", "t1", "t2", "t3", "t4"]
    t1 = result.trials[1]
    assert t1.has_predictions and t1.end_state == "finished"
    assert t1.config["lr"] == 0.001 and t1.train_config().lr == 0.001
    assert t1.history[0]["val_roc_auc"] == 0.80
    assert t1.load_predictions("test").dtype == np.float32
    assert not result.trials[3].has_predictions and result.trials[4].metrics == {}
    assert [t.key for t in ranked_trials(result)] == ["t1", "t2", "t0"]


def test_not_a_study_folder(tmp_path):
    with pytest.raises(ValueError, match="not a study folder"):
        load_study(tmp_path)


def test_an_empty_study_is_refused(study):
    with pytest.raises(ValueError, match="no trials yet"):
        load_study(study)


def test_an_unfinished_study_is_refused(study):
    write_trial(study, "t0", None, running=True)
    write_trial(study, "t1", None, predictions=False)
    with pytest.raises(ValueError, match="unfinished"):
        load_study(study)


def test_a_malformed_study_file_is_named(study):
    (study / "study.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="study.json: missing key"):
        load_study(study)
    (study / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match="study.json: not readable JSON"):
        load_study(study)


def test_a_trial_being_written_is_not_a_trial(study):
    write_trial(study, "t0", 0.70)
    write_trial(study, "t1.partial", None, running=True)  # the driver's staging folder
    assert [t.key for t in load_study(study).trials] == ["t0"]


def test_finished_trials_and_the_unfinished_check(study):
    write_trial(study, "t0", 0.70)
    write_trial(study, "t1", 0.90, predictions=False)  # errored: not a model to fuse
    write_trial(study, "t2", 0.80)
    result = load_study(study)
    assert [t.key for t in finished_trials(result)] == ["t2", "t0"]
    check_finished(result)
    write_trial(study, "t3", None, running=True)
    with pytest.raises(ValueError, match=r"unfinished: trial\(s\) t3 have no end state"):
        check_finished(load_study(study))


def test_a_study_is_found_by_folder_or_by_name(study, tmp_path):
    assert resolve_study(study, tmp_path / "elsewhere") == study
    assert resolve_study("study", tmp_path) == tmp_path / "study"
    with pytest.raises(ValueError, match="study 'other' not found"):
        resolve_study("other", tmp_path)


def test_tracking_coordinates_are_optional(study):
    description = json.loads((study / "study.json").read_text())
    for key in ("tracking_uri", "experiment_id", "parent_run_id"):
        del description[key]
    (study / "study.json").write_text(json.dumps(description))
    write_trial(study, "t0", 0.70)
    result = load_study(study)
    assert (result.tracking_uri, result.experiment_id, result.parent_run_id) == ("", "", "")


def test_a_study_selected_by_pr_auc_ranks_its_trials_by_it(study):
    """The metric in study.json ranks the trials: PR-AUC's order here is ROC-AUC's reversed."""
    for trial_id, roc in (("t0", 0.70), ("t1", 0.80), ("t2", 0.75)):
        write_trial(study, trial_id, roc)
        metrics_file = study / "trials" / trial_id / "metrics.json"
        metrics = json.loads(metrics_file.read_text())
        metrics["validation_pr_auc"] = 1.5 - roc
        metrics_file.write_text(json.dumps(metrics))
    assert [t.key for t in ranked_trials(load_study(study))] == ["t1", "t2", "t0"]
    description = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**description, "metric": "val_pr_auc"}))
    by_pr = load_study(study)
    assert by_pr.selection.validation == "validation_pr_auc"
    assert [t.key for t in ranked_trials(by_pr)] == ["t0", "t2", "t1"]
    assert [t.key for t in finished_trials(by_pr)] == ["t0", "t2", "t1"]
    (study / "study.json").write_text(json.dumps({**description, "metric": "val_f1"}))
    with pytest.raises(ValueError, match=r"study.json: unknown selection metric 'val_f1'"):
        ranked_trials(load_study(study))
