"""The link that opens a study's trials in the MLflow UI, and the view its experiment carries."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from tracking.names import FINAL_METRICS
from tracking.runs import create_nested_run, study_experiment
from tracking.store import TrackingStore
from tracking.ui import (
    RUN_NAME_COLUMN,
    SHARED_VIEW_TAG,
    VIEW_KEY,
    comparison_metrics,
    comparison_url,
    comparison_view,
)

SEARCHED = ("cbam", "cell", "lr")


def test_the_view_shows_the_trials_scores_and_searched_params_best_first():
    view = comparison_view(SEARCHED)
    assert view["orderByKey"] == "metrics.`best_val_roc_auc`"
    assert view["orderByAsc"] is False
    assert set(comparison_metrics()) <= set(FINAL_METRICS.values())
    # What a comparison needs, once each, in the order a laptop shows without scrolling.
    assert view["selectedColumns"] == [
        "metrics.`best_val_roc_auc`",
        "metrics.`test_roc_auc`",
        "metrics.`test_pr_auc`",
        "metrics.`epochs_run`",
        "tags.`mer.end_state`",
        "params.`cbam`",
        "params.`cell`",
        "params.`lr`",
    ]
    by_pr = comparison_view(SEARCHED, metric="val_pr_auc")
    assert by_pr["orderByKey"] == "metrics.`best_val_pr_auc`"
    assert by_pr["selectedColumns"][0] == "metrics.`best_val_pr_auc`"
    # About 1,440 px: the run name and the scores and end state fit without scrolling.
    widths = view["columnWidths"]
    shown = [RUN_NAME_COLUMN, *view["selectedColumns"][:5]]
    assert sum(widths[name] for name in shown) <= 1440 - 300  # the page's own margins
    # The UI sizes only the columns its order lists: the run name first, wide enough to read.
    assert view["columnOrder"] == [RUN_NAME_COLUMN, *view["selectedColumns"]]
    assert set(view["columnWidths"]) == set(view["columnOrder"])
    assert view["columnWidths"]["metrics.`best_val_roc_auc`"] >= 7 * len("best_val_roc_auc")


def test_the_experiment_carries_the_view_and_its_filter_finds_only_the_trials(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = study_experiment(client, "s", "", searched=SEARCHED)
    tag = client.get_experiment(experiment_id).tags[SHARED_VIEW_TAG + VIEW_KEY]
    assert json.loads(tag) == comparison_view(SEARCHED)
    parent = client.create_run(experiment_id, tags={"mer.role": "study", "mer.study": "s"})
    trials = [
        create_nested_run(client, experiment_id, parent.info.run_id, "s", "trial", name, {})
        for name in ("block GRU 8", "no attention GRU 8")
    ]
    for run_id, score in zip(trials, (0.4, 0.6), strict=True):
        client.log_metric(run_id, "best_val_selection_metric", score)
    found = client.search_runs(
        [experiment_id],
        comparison_view(SEARCHED)["searchFilter"],
        order_by=["metrics.`best_val_selection_metric` DESC"],
    )
    assert [run.info.run_id for run in found] == trials[::-1]  # no parent: the UI shows them flat
    # A study that searches other fields later gets the view of those.
    study_experiment(client, "s", "", searched=("dropout",))
    tag = client.get_experiment(experiment_id).tags[SHARED_VIEW_TAG + VIEW_KEY]
    assert json.loads(tag)["selectedColumns"][-1] == "params.`dropout`"


def test_the_link_opens_the_view_on_the_runs_table_of_the_store_ui():
    server = TrackingStore("http://mlflow.example.org:5000/")
    local = TrackingStore("sqlite:////data/mlflow.db")
    assert comparison_url(server.ui_address, "7") == (
        "http://mlflow.example.org:5000/#/experiments/7/runs"
        "?viewStateShareKey=trials&workflowType=machine_learning"
    )
    assert comparison_url(local.ui_address, "1").startswith(
        "http://127.0.0.1:5000/#/experiments/1/"
    )


def test_a_repeated_study_groups_its_trials_by_row_and_one_seed_a_row_stays_flat(tmp_path):
    grouped = comparison_view(SEARCHED, repeats=3)
    assert grouped["groupBy"] == {  # MLflow's "Group by" the tag: a group per row, its mean
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "mer.row"}],
    }
    assert "groupBy" not in comparison_view(SEARCHED, repeats=1)
    assert {key: grouped[key] for key in grouped if key != "groupBy"} == comparison_view(SEARCHED)
    # The experiment's view follows the study: grouped while it repeats rows, flat after.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = study_experiment(client, "s", "", searched=SEARCHED, repeats=2)
    tag = client.get_experiment(experiment_id).tags[SHARED_VIEW_TAG + VIEW_KEY]
    assert json.loads(tag)["groupBy"] == grouped["groupBy"]
    study_experiment(client, "s", "", searched=SEARCHED)
    tag = client.get_experiment(experiment_id).tags[SHARED_VIEW_TAG + VIEW_KEY]
    assert "groupBy" not in json.loads(tag)
