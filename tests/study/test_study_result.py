"""What the real smoke study leaves in MLflow: the parent run's result, the registered best
model, the dataset input, the experiment's kind, and a quiet console."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from mer_models.config import TrainConfig, applicable_fields
from study.best_model import load_trial_model
from study.result import SUMMARY_TABLE
from study_folder.records import finished_trials, load_study
from tracking.names import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FINAL_METRICS, NOTE_TAG
from tracking.study_tracker import RESULT_ARTIFACTS

pytestmark = pytest.mark.slow


def parent_run(client, study):
    experiment = client.get_experiment_by_name(study)
    (parent,) = client.search_runs(
        [experiment.experiment_id], f"tags.`mer.role` = 'study' and tags.`mer.study` = '{study}'"
    )
    return experiment, parent


def test_the_parent_run_carries_the_result(smoke_study, tmp_path):
    client = MlflowClient(smoke_study.tracking_uri)
    experiment, parent = parent_run(client, "smoke")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert experiment.tags[NOTE_TAG].startswith("A seconds-long study for the tests")
    study = load_study(smoke_study.dir)
    best = finished_trials(study)[0]
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["mer.best_trial"] == best.key
    assert tags["mer.best_trial_name"] == best.metrics["trial_name"]
    config = applicable_fields(TrainConfig.from_dict(best.config), "cpu")
    assert config["bf16"] is False and config["device"] == "cpu"  # what ran, not what was asked
    assert json.loads(tags["mer.best_config"]) == config
    for key, name in FINAL_METRICS.items():
        assert metrics[name] == pytest.approx(best.metrics[key])
    fusion = json.loads((smoke_study.dir / "fusions" / "top2" / "metrics.json").read_text())
    assert metrics["fusion_test_roc_auc_macro"] == pytest.approx(fusion["ROC-AUC-macro"])
    assert metrics["fusion_test_pr_auc_macro"] == pytest.approx(fusion["PR-AUC-macro"])
    folder = client.download_artifacts(parent.info.run_id, RESULT_ARTIFACTS, str(tmp_path))
    summary = (tmp_path / RESULT_ARTIFACTS / SUMMARY_TABLE).read_text()
    assert summary.strip() in smoke_study.stdout and best.key in summary
    assert "scheduler: {type: asha" in (tmp_path / RESULT_ARTIFACTS / "smoke.yaml").read_text()
    assert folder.endswith(RESULT_ARTIFACTS)
    # The report says which scheduler ran and that ASHA made the budgets unequal.
    report = (smoke_study.dir / "report" / "report.md").read_text()
    assert "Scheduler: ASHA; it stopped" in report and "--scheduler fifo" in report
    # The dataset the study read is the input of the parent run and of every trial run.
    trial_runs = client.search_runs([experiment.experiment_id], "tags.`mer.role` = 'trial'")
    for run in [parent, *trial_runs]:
        (dataset,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        profile = json.loads(dataset.dataset.profile)
        assert dataset.dataset.name == "synthetic-moodtheme-split0"
        assert profile["synthetic"] is True and profile["subset"] == "moodtheme"
        counts = [profile[f"{part}_tracks"] for part in ("train", "validation", "test")]
        assert counts == [90, 30, 30]


def test_the_best_model_is_registered_and_loads(smoke_study, tmp_path):
    client = MlflowClient(smoke_study.tracking_uri)
    _, parent = parent_run(client, "smoke")
    best = finished_trials(load_study(smoke_study.dir))[0]
    (version,) = client.search_model_versions("name = 'smoke-best'")
    assert str(version.version) == "1" and version.run_id == parent.info.run_id
    assert parent.data.tags["mer.best_model"] == "models:/smoke-best/1"
    assert "MLflow: models:/smoke-best/1" in smoke_study.stdout
    assert f"model:  {best.dir / 'best_model.pt'}" in smoke_study.stdout

    mlflow.set_tracking_uri(smoke_study.tracking_uri)
    loaded = mlflow.pytorch.load_model("models:/smoke-best/1")
    reference, saved = load_trial_model(best)
    windows = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 1, 96, 64)))
    with torch.no_grad():
        expected = reference(windows.float())
        assert torch.allclose(loaded.eval()(windows.float()), expected)
    assert expected.shape == (3, len(saved["tags"]))
    local = mlflow.artifacts.download_artifacts("models:/smoke-best/1", dst_path=str(tmp_path))
    extra = tmp_path / "extra_files"
    assert local and (extra / "tags.txt").read_text().splitlines() == saved["tags"]
    assert json.loads((extra / "band_stats.json").read_text()) == saved["band_stats"]
    assert json.loads((extra / "config.json").read_text()) == saved["config"]
    signature = mlflow.models.get_model_info("models:/smoke-best/1").signature
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 96, 64]


def test_the_console_shows_only_the_study(smoke_study):
    noise = (
        "TensorBoard",
        "Token authentication",
        "Creating initial MLflow database",
        "alembic",
        "Configuration for experiment",
        "Downloading artifacts",
        "Successfully registered",
    )
    for text in noise:
        assert text not in smoke_study.stdout + smoke_study.stderr
    assert smoke_study.stderr.strip() == ""
    assert "best trial: " in smoke_study.stdout and "  config: model=crnn " in smoke_study.stdout
    # Progress and summary tables name their trials and show the searched learning rate.
    progress = r"^trial\s+conv\. attention\s+model\s+RNN cell\s+RNN units\s+lr\s+status\s+epoch"
    summary = r"^trial\s+conv\. attention\s+model\s+RNN cell\s+RNN units\s+lr\s+val ROC-AUC"
    assert re.search(progress, smoke_study.stdout, re.MULTILINE)
    assert re.search(summary, smoke_study.stdout, re.MULTILINE)
    assert re.search(r"^\w{5}_0000\d\s+none\s+CRNN\s+GRU\s+8\s+1\.0e-7\s", smoke_study.stdout, re.M)
