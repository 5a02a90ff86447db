"""Fusion of a study's trials: the mean of the best, selection on validation only, whole outputs,
a nested MLflow run, and a clear refusal of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from analysis.evaluate import evaluate
from analysis.fuse_study import fuse_study
from mer_models.data.splits import DatasetPaths, load_split
from mer_models.training.thresholds import read_thresholds, tune_thresholds
from study_folder.records import GROUNDTRUTH_FILES
from tests.analysis.conftest import copy_study, member_scores, read_json, run_main

RESAMPLES = "200"  # enough for the checks, quick on two cores


def study_data(study: Path) -> DatasetPaths:
    data = read_json(study / "study.json")["data"]
    return DatasetPaths(data["metadata"], data["melspecs"], data["split"], data["subset"])


def ranked_ids(study: Path) -> list[str]:
    """Finished trials by validation macro ROC-AUC as their metrics.json logged it, best first."""
    trials = []
    for folder in sorted((study / "trials").iterdir()):
        metrics = read_json(folder / "metrics.json")
        if metrics["end_state"] in ("finished", "early_stopped", "asha_stopped"):
            trials.append((-metrics["validation_roc_auc"], folder.name))
    return [name for _, name in sorted(trials)]


def predictions(study: Path, trial: str, part: str = "test") -> np.ndarray:
    return np.load(study / "trials" / trial / f"{part}_predictions.npy")


def check_fusion_folder(study: Path, out: Path, members: list[str]) -> dict:
    """A fusion folder holds the mean of its members, validation-tuned decisions and metrics."""
    metrics = read_json(out / "metrics.json")
    assert metrics["members"] == members
    fused = np.load(out / "predictions.npy")
    assert fused.dtype == np.float32
    expected = np.mean([predictions(study, m) for m in members], axis=0)
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-6)

    data = study_data(study)
    validation, test = load_split(data, "validation"), load_split(data, "test")
    fused_validation = np.mean([predictions(study, m, "validation") for m in members], axis=0)
    tags, thresholds = read_thresholds(out / "thresholds.txt", test.tags)
    assert tags == test.tags
    np.testing.assert_allclose(
        thresholds, tune_thresholds(validation.labels, fused_validation.astype(np.float32))
    )
    decisions = np.load(out / "decisions.npy")
    assert decisions.dtype == bool
    np.testing.assert_array_equal(decisions, fused > thresholds)
    assert metrics["thresholds_tuned_on"] == "validation"

    official = evaluate(test.labels, fused, decisions)
    assert {k: metrics[k] for k in official} == pytest.approx(official)
    for name in ("ROC-AUC-macro", "PR-AUC-macro"):
        interval = metrics["bootstrap"][name]
        assert interval["low"] <= interval["high"] and interval["seed"] == 0
        paired = metrics["paired_bootstrap_vs_best_single"][name]
        assert 0.0 <= paired["p_value"] <= 1.0
    best = ranked_ids(study)[0]
    assert metrics["best_single_trial"]["id"] == best
    best_test = evaluate(test.labels, predictions(study, best))
    assert metrics["best_single_trial"]["ROC-AUC-macro"] == pytest.approx(
        best_test["ROC-AUC-macro"]
    )
    return metrics


# Hand-built studies: the arithmetic and the refusals ---------------------------------------


def test_topk_is_the_numpy_mean_of_the_best_trials_on_validation(hand_study, capsys, tmp_path):
    code, out, err = run_main(capsys, "fuse", str(hand_study), "--top-k", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    top2 = ranked_ids(hand_study)[:2]
    assert top2 == ["t1", "t3"]  # signals 0.7 and 0.5
    assert summary["members"] == top2 and summary["out"] == str(hand_study / "fusions" / "top2")
    assert summary["mlflow_run_id"] is None  # the study has no MLflow store
    metrics = check_fusion_folder(hand_study, hand_study / "fusions" / "top2", top2)
    assert metrics["select"] == "topk" and metrics["top_k"] == 2
    assert not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("mlruns"))


def test_greedy_beats_top1_on_validation_and_never_looks_at_test(hand_study):
    data = study_data(hand_study)
    validation = load_split(data, "validation").labels
    greedy = fuse_study(hand_study, select="greedy", out=hand_study / "a", resamples=50)
    top1 = ranked_ids(hand_study)[0]
    top1_roc = roc_auc_score(validation, predictions(hand_study, top1, "validation"))
    assert greedy.result.members[0] == top1
    assert greedy.result.selection.validation_score >= top1_roc
    chosen = [predictions(hand_study, m, "validation") for m in greedy.result.members]
    assert greedy.result.selection.validation_score == pytest.approx(
        roc_auc_score(validation, np.mean(chosen, axis=0))
    )

    # Turn the test side upside down: other test labels and scores that invert every trial's
    # quality. A selection made on validation alone cannot change.
    stored = hand_study / GROUNDTRUTH_FILES["test"]  # the labels the study scored trials on
    np.save(stored, np.roll(np.load(stored), 1, axis=1))
    for folder in (hand_study / "trials").iterdir():
        scores = np.load(folder / "test_predictions.npy")
        np.save(folder / "test_predictions.npy", (2.0 - scores).astype(np.float32))
    again = fuse_study(hand_study, select="greedy", out=hand_study / "b", resamples=50)
    assert again.result.members == greedy.result.members
    assert again.result.selection == greedy.result.selection


def test_greedy_considers_only_the_top_k(hand_study):
    fusion = fuse_study(hand_study, top_k=2, select="greedy", resamples=50)
    assert fusion.name == "greedy-top2"
    assert set(fusion.result.members) <= {"t1", "t3"}
    assert read_json(fusion.out / "metrics.json")["candidates"] == ["t1", "t3"]


def test_an_external_system_joins_the_mean(hand_study, labelled_dataset, tmp_path, capsys):
    test = load_split(labelled_dataset, "test").labels
    validation = load_split(labelled_dataset, "validation").labels
    np.save(tmp_path / "ext-test.npy", member_scores(test, 99, 0.9))
    np.save(tmp_path / "ext-validation.npy", member_scores(validation, 98, 0.9))
    spec = f"vgg={tmp_path / 'ext-test.npy'}:{tmp_path / 'ext-validation.npy'}"
    code, _, err = run_main(capsys, "fuse", str(hand_study), "--top-k", "2", "--external", spec)
    assert code == 0, err
    out = hand_study / "fusions" / "top2+vgg"
    metrics = read_json(out / "metrics.json")
    assert metrics["members"] == ["t1", "t3", "vgg"]
    expected = np.mean(
        [
            predictions(hand_study, "t1"),
            predictions(hand_study, "t3"),
            np.load(tmp_path / "ext-test.npy"),
        ],
        axis=0,
    )
    np.testing.assert_allclose(np.load(out / "predictions.npy"), expected, atol=1e-6)
    assert metrics["member_details"][2]["kind"] == "external"


def break_nan(study: Path) -> str:
    path = study / "trials" / "t1" / "test_predictions.npy"
    scores = np.load(path)
    scores[3, 2] = np.nan
    np.save(path, scores)
    return "t1/test_predictions.npy"


def break_shape(study: Path) -> str:
    path = study / "trials" / "t3" / "validation_predictions.npy"
    np.save(path, np.load(path)[:, :3])
    return "t3/validation_predictions.npy"


def break_unfinished(study: Path) -> str:
    (study / "trials" / "t2" / "metrics.json").unlink()
    return "unfinished"


def break_empty(study: Path) -> str:
    shutil.rmtree(study / "trials")
    return "no trials yet"


def break_out(study: Path) -> str:
    (study / "fusions" / "top2").mkdir(parents=True)
    (study / "fusions" / "top2" / "notes.txt").write_text("mine")
    return "already exists and is not empty"


K2 = ["--top-k", "2"]
BAD_INPUT = {
    "nan": (break_nan, K2, "trials/t1/test_predictions.npy has 1 non-finite score"),
    "shape": (break_shape, K2, "t3/validation_predictions.npy has shape (40, 3)"),
    "unfinished": (break_unfinished, K2, "is unfinished: trial(s) t2 have no end state"),
    "empty": (break_empty, K2, "has no trials yet"),
    "out-taken": (break_out, K2, "already exists and is not empty"),
    "k-too-large": (None, ["--top-k", "5"], "--top-k 5 is larger than the number of finished"),
    "topk-without-k": (None, [], "needs --top-k K"),
    "external-spec": (None, [*K2, "--external", "vgg"], "expected NAME=TEST.npy"),
    "external-name": (None, [*K2, "--external", "v g=ext.npy"], "name 'v g' must be"),
    "external-missing": (None, [*K2, "--external", "vgg=missing.npy"], "missing.npy not found"),
    "external-shape": (
        None,
        [*K2, "--external", "vgg=wrong-shape.npy:wrong-shape.npy"],
        "external vgg validation scores wrong-shape.npy has shape (40, 7)",
    ),
    "external-clash": (None, [*K2, "--external", "t1=ext.npy"], "t1 are also trial ids"),
    "greedy-external-without-validation": (
        None,
        ["--select", "greedy", "--external", "vgg=ext.npy"],
        "give it as vgg=TEST.npy:VALIDATION.npy",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    hand_study, labelled_dataset, tmp_path, monkeypatch, capsys, case
):
    breakage, extra, expected = BAD_INPUT[case]
    monkeypatch.chdir(tmp_path)
    labels = load_split(labelled_dataset, "test").labels
    np.save(tmp_path / "ext.npy", member_scores(labels, 5, 0.5))
    np.save(tmp_path / "wrong-shape.npy", np.zeros((labels.shape[0], 7), np.float32))
    if breakage is not None:
        breakage(hand_study)
    before = sorted(p.relative_to(hand_study) for p in hand_study.rglob("*"))
    code, out, err = run_main(capsys, "fuse", str(hand_study), *extra)
    assert code == 2 and out == ""
    assert err.startswith("python -m analysis fuse: error: ") and err.count("\n") == 1, err
    assert expected in err
    after = sorted(p.relative_to(hand_study) for p in hand_study.rglob("*"))
    assert after == before  # nothing written, no staging folder left behind


def test_a_partial_trial_folder_is_not_a_trial(hand_study):
    (hand_study / "trials" / "t9.partial").mkdir()
    (hand_study / "trials" / "t9.partial" / "config.json").write_text("{}")
    fusion = fuse_study(hand_study, top_k=4, resamples=50)
    assert sorted(fusion.result.members) == ["t0", "t1", "t2", "t3"]


def test_an_errored_trial_is_not_fused(hand_study, labelled_dataset, capsys):
    from tests.analysis.conftest import write_hand_trial

    write_hand_trial(hand_study, "t4", labelled_dataset, 0.9, seed=4, end_state="error")
    code, _, err = run_main(capsys, "fuse", str(hand_study), "--top-k", "5")
    assert code == 2 and "4 of its 5 trial(s) finished" in err
    fusion = fuse_study(hand_study, top_k=1, resamples=50)
    assert fusion.result.members == ("t1",)


# The real study -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_study_ends_with_the_fusion_of_its_top_two_trials(smoke_study):
    study = smoke_study.dir
    top2 = ranked_ids(study)[:2]
    out = study / "fusions" / "top2"
    check_fusion_folder(study, out, top2)
    assert f"fusion of {top2[0]} + {top2[1]}: {out}" in smoke_study.stdout

    client = MlflowClient(smoke_study.tracking_uri)
    experiment = client.get_experiment_by_name(study.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`mer.role` = 'fusion'")
    (parent,) = client.search_runs(
        [experiment.experiment_id], "tags.`mer.role` = 'study' and tags.`mer.study` = 'smoke'"
    )
    (run,) = [r for r in runs if r.data.tags["mer.fusion"] == "top2"]
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    names = [read_json(study / "trials" / t / "metrics.json")["trial_name"] for t in top2]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"fusion top2: {names[0]} + {names[1]}"
    assert run.data.params["members"] == ",".join(top2)
    assert run.data.params["best_single_trial"] == top2[0]
    metrics = read_json(out / "metrics.json")
    assert run.data.metrics["fusion_test_roc_auc_macro"] == pytest.approx(metrics["ROC-AUC-macro"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "predictions.npy",
        "decisions.npy",
        "thresholds.txt",
        "metrics.json",
    }


@pytest.mark.slow
def test_fusing_a_copy_repeats_the_driver_and_greedy_holds_on_the_real_study(
    smoke_study, tmp_path, capsys
):
    study = copy_study(smoke_study.dir, tmp_path / "smoke")
    code, _, err = run_main(
        capsys, "fuse", str(study), "--top-k", "2", "--out", str(tmp_path / "again")
    )
    assert code == 0, err
    original = read_json(smoke_study.dir / "fusions" / "top2" / "metrics.json")
    again = read_json(tmp_path / "again" / "metrics.json")
    for key in (
        "members",
        "ROC-AUC-macro",
        "PR-AUC-macro",
        "bootstrap",
        "validation_roc_auc_macro",
    ):
        assert again[key] == original[key]
    np.testing.assert_array_equal(
        np.load(tmp_path / "again" / "predictions.npy"),
        np.load(smoke_study.dir / "fusions" / "top2" / "predictions.npy"),
    )

    greedy = fuse_study(study, select="greedy", resamples=50, track=False)
    best = ranked_ids(study)[0]
    labels = load_split(study_data(study), "validation").labels
    assert greedy.result.members[0] == best
    assert greedy.result.selection.validation_score >= roc_auc_score(
        labels, predictions(study, best, "validation")
    )

    code, _, err = run_main(capsys, "fuse", str(study), "--top-k", "5")
    assert code == 2 and "--top-k 5 is larger than the number of finished trials" in err


@pytest.mark.slow
def test_a_fusion_from_the_command_line_is_a_run_nested_in_the_study(smoke_study, tmp_path, capsys):
    # A copy of the study and of its MLflow store, so the original's runs stay as the driver left them.
    study = copy_study(smoke_study.dir, tmp_path / "smoke", tracking=True)
    shutil.copy2(smoke_study.tracking_uri.removeprefix("sqlite:///"), tmp_path / "copy.db")
    uri = f"sqlite:///{tmp_path / 'copy.db'}"
    description = read_json(study / "study.json")
    (study / "study.json").write_text(json.dumps({**description, "tracking_uri": uri}))
    code, out, err = run_main(
        capsys, "fuse", str(study), "--top-k", "3", "--resamples", RESAMPLES, "--json"
    )
    assert code == 0, err
    run_id = json.loads(out)["mlflow_run_id"]
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == description["parent_run_id"]
    assert run.data.tags["mer.role"] == "fusion" and run.data.tags["mer.fusion"] == "top3"
    assert run.data.params["members"] == ",".join(ranked_ids(study)[:3])
    assert run.data.params["bootstrap_resamples"] == RESAMPLES
