"""The store-side conventions against a real SQLite MLflow store."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from tracking.names import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG
from tracking.runs import create_nested_run, dataset_input, study_experiment, study_run_filter


def test_the_experiment_opens_on_runs_and_carries_the_description(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = study_experiment(client, "table1", "Table 1 of the paper.\n")
    tags = client.get_experiment(experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert tags[NOTE_TAG] == "Table 1 of the paper."
    # An experiment made before (without the tags) gets them, and keeps its id.
    older = client.create_experiment("old")
    assert study_experiment(client, "old", "A later description.") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_nested_runs_and_the_dataset_input(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = study_experiment(client, "s", "")
    parent = client.create_run(experiment_id, tags={"mer.role": "study", "mer.study": "s"})
    child = create_nested_run(
        client, experiment_id, parent.info.run_id, "s", "trial", "block GRU 256", {"x": "1"}
    )
    (found,) = client.search_runs([experiment_id], study_run_filter("s"))
    assert found.info.run_id == parent.info.run_id
    run = client.get_run(child)
    assert run.info.run_name == "block GRU 256"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    dataset = dataset_input("synthetic-moodtheme-split0", "file:///m", {"train_tracks": 7})
    client.log_inputs(child, datasets=[dataset])
    (logged,) = client.get_run(child).inputs.dataset_inputs
    assert logged.dataset.name == "synthetic-moodtheme-split0"
    assert json.loads(logged.dataset.profile) == {"train_tracks": 7}
    assert {(t.key, t.value) for t in logged.tags} == {("mlflow.data.context", "training")}
