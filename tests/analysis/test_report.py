"""The report of a real tiny study: Table 1 rows holding what the trials logged, the fusion
under them, the published figures, plots, MLflow artifacts, and a clear refusal of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis.effects import EFFECTS_FILE
from analysis.plots import ASHA_LABEL, curve_from_history, validation_curves_figure
from analysis.report import CURVES_FILE, PER_TAG_FILE, REPORT_FILE
from analysis.rows import ROWS_FILE
from study_folder.records import load_study
from tests.analysis.conftest import copy_study, read_json, run_main
from tracking.names import FINAL_METRICS, row_metric

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def table_rows(report: str) -> dict[str, list[str]]:
    """The results table of report.md: first cell -> cells."""
    lines = report.split("## Trials", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| system")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    return {row[0]: row for row in cells}


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def trial_folders(study: Path) -> list[Path]:
    return sorted((study / "trials").iterdir())


def system(folder: Path) -> str:
    """A trial's first cell in the results table: its run name and its id."""
    return f"{read_json(folder / 'metrics.json')['trial_name']} ({folder.name})"


def best_single(study: Path) -> str:
    finished = [
        (read_json(f / "metrics.json")["validation_roc_auc"], f.name)
        for f in trial_folders(study)
        if read_json(f / "metrics.json")["end_state"] != "error"
    ]
    return max(finished)[1]


def test_the_report_holds_the_values_the_trials_logged(smoke_study):
    study = smoke_study.dir
    report = (study / "report" / REPORT_FILE).read_text()
    assert f"report: {study / 'report' / REPORT_FILE}" in smoke_study.stdout
    rows = table_rows(report)
    best = best_single(study)
    client = MlflowClient(smoke_study.tracking_uri)
    for folder in trial_folders(study):
        metrics, config = read_json(folder / "metrics.json"), read_json(folder / "config.json")
        name = f"{system(folder)} (best single)" if folder.name == best else system(folder)
        row = rows[name]
        assert row[1:5] == [
            "block" if config["cbam"] else "none",
            "CRNN",
            config["cell"].upper(),
            str(config["units"])
            if config["layers"] == 1
            else f"{config['layers']} x {config['units']}",
        ]
        assert row[5] == percent(metrics["validation_roc_auc"])
        assert row[6].startswith(percent(metrics["test_roc_auc"]) + " [")
        assert row[7].startswith(percent(metrics["test_pr_auc"]) + " [")
        assert row[8] == f"{metrics['epochs_run']} (best {metrics['best_epoch']})"
        assert row[9] == metrics["end_state"]
        if folder.name == best:
            assert row[10] == "–"
        else:
            p_roc, p_pr = (float(p) for p in row[10].split(" / "))
            assert 0 <= p_roc <= 1 and 0 <= p_pr <= 1
        # ... which are also what MLflow recorded for the trial.
        run = client.get_run(metrics["mlflow_run_id"])
        for key in ("validation_roc_auc", "test_roc_auc", "test_pr_auc"):
            assert percent(run.data.metrics[FINAL_METRICS[key]]) == percent(metrics[key])

    fusion = read_json(study / "fusions" / "top2" / "metrics.json")
    row = rows[f"fusion top2 ({' + '.join(fusion['members'])})"]
    assert row[5] == percent(fusion["validation_roc_auc_macro"])
    assert row[6].startswith(percent(fusion["ROC-AUC-macro"]) + " [")
    assert row[7].startswith(percent(fusion["PR-AUC-macro"]) + " [")
    assert list(rows)[-1].startswith("fusion top2")  # fusion rows under the trials

    published = report.split("## The paper, real data (for reference)", 1)[1]
    for figure in ("| 73.9 |", "| 75.3 |", "| 13.1 |", "| 72.58 |", "| 10.77 |"):
        assert figure in published
    assert "ours" not in published  # never beside this study's figures
    assert report.index("## Answer") < report.index("## Trials") < report.index("## The paper")
    assert "**Synthetic data**" in report


def test_the_report_plots_and_mlflow_artifacts(smoke_study):
    study = smoke_study.dir
    for name in (CURVES_FILE, PER_TAG_FILE):
        assert (study / "report" / name).read_bytes().startswith(PNG)
        assert f"]({name})" in (study / "report" / REPORT_FILE).read_text()

    # ASHA's stops are marked: one cross per stopped trial, and a legend entry for them.
    trials = load_study(study).trials
    stopped = [t for t in trials if t.end_state == "asha_stopped"]
    assert stopped, "the smoke space is built so that ASHA stops a trial"
    figure = validation_curves_figure(
        [curve_from_history(t.key, t.history, t.end_state) for t in trials]
    )
    axes = figure.axes[0]
    crosses = [line for line in axes.get_lines() if line.get_gid() == "asha-stop"]
    assert len(crosses) == len(stopped)
    for cross, trial in zip(crosses, stopped, strict=True):
        assert cross.get_ydata()[0] == pytest.approx(trial.history[-1]["val_roc_auc"])
    assert ASHA_LABEL in [text.get_text() for text in figure.legends[0].get_texts()]

    client = MlflowClient(smoke_study.tracking_uri)
    experiment = client.get_experiment_by_name(study.name)
    (parent,) = client.search_runs(
        [experiment.experiment_id], "tags.`mer.role` = 'study' and tags.`mer.study` = 'smoke'"
    )
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    # One seed per row: no forest plot or row curves, but the rows' and effects' records, and
    # the importance of its searched fields (four trials: too few for a number or a plot).
    logged = (REPORT_FILE, CURVES_FILE, PER_TAG_FILE, ROWS_FILE, EFFECTS_FILE, "importance.json")
    assert artifacts == {f"report/{name}" for name in logged}
    rows = read_json(study / ROWS_FILE)
    assert len(rows) == len([t for t in trials if t.end_state != "error"])
    assert parent.data.metrics[row_metric(rows[0]["row"], "test_roc_auc_mean")] == pytest.approx(
        rows[0]["test_roc_auc"]["mean"]
    )


def test_report_command_on_a_copy(smoke_study, tmp_path, capsys, monkeypatch):
    study = copy_study(smoke_study.dir, tmp_path / "results" / "smoke")
    # By name under --results; an earlier report folder is replaced as a whole.
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(
        capsys, "report", "smoke", "--results", "results", "--resamples", "200"
    )
    assert code == 0, err
    assert "mlflow_logged\tFalse" in out  # the copy has no MLflow store
    report = (study / "report" / REPORT_FILE).read_text()
    assert "200 resamples, seed 0" in report
    assert sorted(p.name for p in (study / "report").iterdir()) == sorted(
        [REPORT_FILE, CURVES_FILE, PER_TAG_FILE]
    )
    assert not [p for p in study.iterdir() if p.name.startswith(".")]
    # The table is the driver's, but for the bootstrap settings.
    original = table_rows((smoke_study.dir / "report" / REPORT_FILE).read_text())
    assert {k: v[:5] for k, v in table_rows(report).items()} == {
        k: v[:5] for k, v in original.items()
    }

    # A folder holding anything else is not overwritten.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.md").write_text("mine")
    code, out, err = run_main(capsys, "report", str(study), "--out", str(taken))
    assert code == 2 and "already exists and is not empty" in err
    assert [p.name for p in taken.iterdir()] == ["notes.md"]

    code, _, err = run_main(capsys, "report", "nosuchstudy", "--results", "results")
    assert code == 2 and "study 'nosuchstudy' not found" in err


def break_nan(study: Path) -> str:
    trial = trial_folders(study)[-1]
    scores = np.load(trial / "test_predictions.npy")
    scores[0, 0] = np.inf
    np.save(trial / "test_predictions.npy", scores)
    return f"{trial.name}/test_predictions.npy has 1 non-finite score"


def break_shape(study: Path) -> str:
    trial = trial_folders(study)[0]
    np.save(trial / "test_predictions.npy", np.load(trial / "test_predictions.npy")[:-1])
    return f"{trial.name}/test_predictions.npy has shape"


def break_fusion(study: Path) -> str:
    np.save(study / "fusions" / "top2" / "predictions.npy", np.zeros((3, 3), np.float32))
    return "predictions of fusion top2"


def break_unfinished(study: Path) -> str:
    trial = trial_folders(study)[1]
    (trial / "metrics.json").unlink()
    return f"is unfinished: trial(s) {trial.name} have no end state"


def break_empty(study: Path) -> str:
    shutil.rmtree(study / "trials")
    return "has no trials yet"


def break_study_file(study: Path) -> str:
    (study / "study.json").write_text(json.dumps({"name": "smoke"}))
    return "study.json: missing key(s) space, data"


@pytest.mark.parametrize(
    "breakage",
    [break_nan, break_shape, break_fusion, break_unfinished, break_empty, break_study_file],
    ids=["nan", "shape", "fusion", "unfinished", "empty", "study-file"],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(smoke_study, tmp_path, capsys, breakage):
    study = copy_study(smoke_study.dir, tmp_path / "smoke")
    expected = breakage(study)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_main(capsys, "report", str(study), "--out", str(tmp_path / "new"))
    assert code == 2 and out == ""
    assert err.startswith("python -m analysis report: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_failed_report_does_not_fail_the_study(smoke_study, tmp_path, capsys):
    from study.run import finish

    study = copy_study(smoke_study.dir, tmp_path / "smoke")
    shutil.rmtree(study / "report")
    expected = break_fusion(study)
    ended = []
    options = SimpleNamespace(
        study_dir=study,
        name="smoke",
        space=SimpleNamespace(file="smoke.yaml"),
        storage=study.parent,
        ray_storage=None,
    )
    tracker = SimpleNamespace(
        tracking_uri="sqlite:///unused.db",
        experiment_id="1",  # finish() prints the link to the experiment's runs
        finish_study=lambda status="FINISHED": ended.append(status),
    )
    trials_before = sorted(p.relative_to(study) for p in (study / "trials").rglob("*"))
    assert finish(options, tracker, trials_started=4) == 1
    captured = capsys.readouterr()
    assert "conv. attention" in captured.out  # the summary came first
    assert "error: the study's trials finished but its report or fusion failed" in captured.err
    assert expected in captured.err and f"intact in {study}" in captured.err
    assert "--name smoke --resume" in captured.err  # the resume finishes the study's end
    assert ended == ["FAILED"]  # FINISHED only once everything is recorded
    assert sorted(p.relative_to(study) for p in (study / "trials").rglob("*")) == trials_before
    assert not (study / "report").exists()


@pytest.mark.parametrize("subset", ["moodtheme", "genre"])
def test_the_published_figures_stand_only_beside_their_own_subset(hand_study, subset):
    """The paper's and the baseline's figures are of the mood/theme subset: a study of another
    subset is reported without them (its labels are the study's own)."""
    from analysis.report import write_report

    description = read_json(hand_study / "study.json")
    description["data"]["subset"] = subset
    (hand_study / "study.json").write_text(json.dumps(description))
    report = write_report(hand_study, resamples=20, track=False)
    text = (report.out / REPORT_FILE).read_text()
    assert ("## The paper, real data (for reference)" in text) == (subset == "moodtheme")
    assert ("Gerczuk et al., MediaEval 2020, and the challenge" in text) == (subset == "moodtheme")
    assert f"subset {subset}" in text
