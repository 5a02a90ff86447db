"""End-to-end studies on `smoke.yaml`: a real local Ray cluster and real MLflow stores."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from mer_models.config import FIELD_NAMES, TrainConfig, applicable_fields
from mer_models.training.metrics import BEST_VALUE_KEY
from study.recorder import StudyRecorder
from tests.study.processes import RUN, mlflow_server, run_driver, study_command
from tests.study.test_repeats import fake_trial
from tracking.names import EPOCH_METRICS, FINAL_METRICS
from tracking.study_tracker import StudyTracker
from tracking.ui import SHARED_VIEW_TAG, VIEW_KEY, comparison_metrics, comparison_url

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def trial_runs(client, study):
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mer.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("mer.role") == "trial"]
    return parents, trials


def check_study(client, study_dir, expected_trials):
    trials = sorted((study_dir / "trials").iterdir())
    assert len(trials) == expected_trials
    parents, runs = trial_runs(client, study_dir.name)
    assert len(parents) == 1
    by_trial = {run.data.tags["mer.trial_id"]: run for run in runs}
    assert len(runs) == len(by_trial) == expected_trials  # one run per trial, none duplicated
    for folder in trials:
        metrics = json.loads((folder / "metrics.json").read_text())
        run = by_trial[folder.name]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["mer.end_state"] == metrics["end_state"]
        config = json.loads((folder / "config.json").read_text())
        assert set(run.data.params) == set(applicable_fields(TrainConfig(**config), "cpu"))
        assert set(run.data.params) <= {*FIELD_NAMES, "device"}
        assert run.data.params["device"] == "cpu" and run.data.params["bf16"] == "False"
        assert run.info.run_name == metrics["trial_name"]
        # One seed per row (no repeats): the row's name is the run's, its tags say both.
        assert run.data.tags["mer.row"] == metrics["row"] == metrics["trial_name"]
        assert run.data.tags["mer.seed"] == str(config["seed"])
        assert run.info.run_name.startswith(("block ", "no attention "))
        assert " lr=" in run.info.run_name  # smoke.yaml varies the learning rate
        assert run.data.params["units"] == str(config["units"])
        history = client.get_metric_history(run.info.run_id, "val_roc_auc")
        assert sorted(m.step for m in history) == list(range(1, metrics["epochs_run"] + 1))
        logged = json.loads((folder / "history.json").read_text())
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
            [row["val_roc_auc"] for row in logged]
        )
        assert set(EPOCH_METRICS.values()) <= set(run.data.metrics)
        assert {"best_val_roc_auc", "test_roc_auc", "epoch_seconds"} <= set(run.data.metrics)
        assert not {"validation_roc_auc", "seconds"} & set(run.data.metrics)
        for key, name in FINAL_METRICS.items():
            assert run.data.metrics[name] == pytest.approx(metrics[key])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {
            "config.json",
            "best_model.pt",
            "validation_predictions.npy",
            "test_predictions.npy",
        }
    return [json.loads((f / "metrics.json").read_text()) for f in trials]


def api(uri: str, path: str, body: dict | None = None) -> dict:
    """A call to the tracking server's REST API, the one the MLflow UI makes."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def check_ui_api(uri: str, study_dir: Path, metrics: list[dict], stdout: str) -> None:
    """What the UI shows: an experiment of runs, runs named by what they are, the best model,
    and the printed link's page: the trials flat, best first, with their scores as columns."""
    experiment = api(uri, "experiments/get-by-name?experiment_name=smoke")["experiment"]
    tags = {tag["key"]: tag["value"] for tag in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"].startswith("A seconds-long study")
    view = json.loads(tags[SHARED_VIEW_TAG + VIEW_KEY])
    # Ordered by the study's selection metric, its best validation value (this study's: PR-AUC).
    assert view["orderByKey"] == "metrics.`best_val_pr_auc`" and not view["orderByAsc"]
    assert "params.`lr`" in view["selectedColumns"]
    (opened,) = [line.split()[1] for line in stdout.splitlines() if line.startswith("open:")]
    assert opened == (
        f"{uri}/#/experiments/{experiment['experiment_id']}/runs"
        f"?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
    )
    runs = api(
        uri,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
    )["runs"]
    names = {run["info"]["run_name"] for run in runs}
    trial_names = {m["trial_name"] for m in metrics}
    assert len(trial_names) == 4 and trial_names <= names
    assert "no attention GRU 8 lr=1.0e-7" in trial_names
    (fusion,) = [name for name in names if name.startswith("fusion top2: ")]
    assert all(part in trial_names for part in fusion.removeprefix("fusion top2: ").split(" + "))
    (parent,) = [run for run in runs if run["info"]["run_name"] == "smoke"]
    parent_metrics = {m["key"] for m in parent["data"]["metrics"]}
    assert {"best_val_roc_auc", "test_roc_auc", "fusion_test_roc_auc_macro"} <= parent_metrics
    model = api(uri, "registered-models/get?name=smoke-best")["registered_model"]
    assert [v["version"] for v in model["latest_versions"]] == ["1"]
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model("models:/smoke-best/1")  # artifacts through the server
    assert loaded(torch.zeros(2, 1, 96, 64)).shape == (2, 56)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is not None:  # the page itself, where a headless Chromium is installed
        experiment_page = rendered_page(
            browser, f"{uri}/#/experiments/{experiment['experiment_id']}/runs"
        )
        assert "Training runs" in experiment_page and "A seconds-long study" in experiment_page
        trial = next(run for run in runs if run["info"]["run_name"] in trial_names)
        run_page = rendered_page(
            browser,
            f"{uri}/#/experiments/{experiment['experiment_id']}/runs/{trial['info']['run_id']}",
        )
        assert trial["info"]["run_name"] in run_page
        assert "best_val_roc_auc" in run_page and "epoch_seconds" in run_page
        comparison = rendered_page(browser, opened)  # an empty profile: the view is the tag's
        assert all(name in comparison for name in trial_names)
        shown = re.sub(r"<[^>]+>", " ", comparison)
        assert re.search(rf"\b{len(trial_names)}\s+matching runs", shown)  # no parent run
        for name in comparison_metrics("val_pr_auc"):
            assert f'col-id="metrics.`{name}`"' in comparison  # a column of the runs table
        assert 'col-id="params.`lr`"' in comparison


def rendered_page(browser: str, url: str) -> str:
    """The DOM of a UI page after its scripts ran (headless Chromium)."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=20000",
            "--window-size=2600,1000",  # the table renders only the columns in view
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium")
def test_the_link_of_a_repeated_study_opens_one_group_per_row(tmp_path):
    """Rows with two seeds each, their runs written and tagged by the study's tracker and
    recorder on an `mlflow server`: the link's page (an empty profile) groups the trials by
    row, MLflow's own Group by mer.row, best mean first, each row's seeds under it."""
    rows = [
        {"model": "crnn", "cbam": cbam, "cell": cell, "units": 256, "layers": 1}
        for cbam, cell in ((False, "gru"), (True, "gru"), (True, "lstm"))
    ]
    searched = ("cbam", "cell")
    with mlflow_server(tmp_path) as uri:
        tracker = StudyTracker(uri, "rep", searched=searched)
        tracker.start({"space": "rep", "repeats": 2}, per_row=2)
        recorder = StudyRecorder(tmp_path, tracker, str(tmp_path), searched=searched, repeats=2)
        for r, row in enumerate(rows):
            for seed in (0, 1):
                run_id = recorder._run_id(fake_trial(f"t{r}{seed}", row, seed))
                scores = {BEST_VALUE_KEY: 0.5 + r / 10 + seed / 100, "epochs_run": 3}
                tracker.finish_trial(run_id, scores, "finished", [])
        tracker.finish_study()
        page = rendered_page(BROWSER, comparison_url(uri, tracker.experiment_id))
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Group by: mer.row" in shown and "6 matching runs" in shown
    names = ["block LSTM 256", "block GRU 256", "no attention GRU 256"]  # best mean first
    headers = [re.search(rf"Group: {re.escape(name)} (\d+) ", shown) for name in names]
    assert all(headers) and shown.count("Group: ") == len(names)
    assert [header.group(1) for header in headers] == ["2"] * len(names)  # its trial count
    assert [header.start() for header in headers] == sorted(h.start() for h in headers)
    for name, group in zip(names, shown.split("Group: ")[1:], strict=True):
        assert f"{name} seed=0" in group and f"{name} seed=1" in group  # its trials under it
    for mean in ("0.705", "0.605", "0.505"):  # the row's best_val_selection_metric, averaged
        assert f"{mean} (average)" in shown


def check_selected_by_pr_auc(client, study_dir):
    """Every choice follows the space's metric: each trial's best epoch, the ranking, the best
    trial on the parent run (the registered model's) and the fusion's members."""
    assert json.loads((study_dir / "study.json").read_text())["metric"] == "val_pr_auc"
    trials = {
        f.name: json.loads((f / "metrics.json").read_text()) for f in study_dir.glob("trials/*")
    }
    for key, metrics in trials.items():
        history = json.loads((study_dir / "trials" / key / "history.json").read_text())
        best = max(history, key=lambda row: (row["val_pr_auc"], -row["epoch"]))
        assert metrics["selection_metric"] == "val_pr_auc"
        assert metrics["best_epoch"] == best["epoch"]
        assert metrics["best_metric"] == metrics["validation_pr_auc"] == best["val_pr_auc"]
    ranked = sorted(
        (key for key, m in trials.items() if m["end_state"] != "error"),
        key=lambda key: (-trials[key]["validation_pr_auc"], key),
    )
    (parent,) = trial_runs(client, study_dir.name)[0]
    assert parent.data.tags["mer.best_trial"] == ranked[0]
    fusion = json.loads((study_dir / "fusions" / "top2" / "metrics.json").read_text())
    assert fusion["members"] == ranked[:2] and fusion["selection_metric"] == "val_pr_auc"


def test_smoke_study_against_a_real_mlflow_server(small_synthetic, tmp_path):
    """The smoke study, selected by validation PR-AUC, against an `mlflow server`."""
    space = tmp_path / "smoke.yaml"
    text = (RUN.parents[1] / "search_spaces" / "smoke.yaml").read_text()
    space.write_text(text.replace("{name: val_roc_auc", "{name: val_pr_auc"))
    with mlflow_server(tmp_path) as uri:
        done = run_driver(
            study_command(
                small_synthetic,
                "--tracking-uri",
                uri,
                "--storage",
                str(tmp_path / "ray"),
                space=space,
            ),
            tmp_path,
        )
        study_dir = tmp_path / "ray" / "smoke"
        metrics = check_study(MlflowClient(uri), study_dir, expected_trials=4)
        check_selected_by_pr_auc(MlflowClient(uri), study_dir)
        states = [m["end_state"] for m in metrics]
        assert "asha_stopped" in states
        assert all(s in ("finished", "early_stopped", "asha_stopped") for s in states)
        for m in metrics:
            if m["end_state"] == "asha_stopped":
                assert m["epochs_run"] < 4
        assert "conv. attention" in done.stdout and "asha_stopped" in done.stdout
        assert f"open the MLflow UI at: {uri}" in done.stdout
        assert "View run" not in done.stdout  # MLflow's per-run lines: only with --verbose
        assert json.loads((study_dir / "study.json").read_text())["tracking_uri"] == uri
        check_ui_api(uri, study_dir, metrics, done.stdout)
