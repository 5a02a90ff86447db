"""Late fusion: the mean of members, selection on validation only, checked inputs, whole outputs."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.evaluate import evaluate_files
from analysis.fusion import Member, fuse, run_fusion, select_members
from mer_models.training.thresholds import read_thresholds, tune_thresholds
from tests.analysis.conftest import member_scores, run_cli, run_main

TRACKS, TAGS = 150, 5


def labels_for(seed: int, tracks: int = TRACKS, tags: int = TAGS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.random((tracks, tags)) < 0.2
    labels[0], labels[1] = True, False
    return labels


def test_fusion_is_the_numpy_mean_of_the_members():
    rng = np.random.default_rng(0)
    members = [rng.random((20, 4)).astype(np.float32) for _ in range(3)]
    assert np.allclose(fuse(members), np.mean(members, axis=0))
    weights = [1.0, 2.0, 5.0]
    assert np.allclose(fuse(members, weights), np.average(members, axis=0, weights=weights))


@pytest.mark.parametrize("seed", range(5))
def test_greedy_is_never_worse_on_validation_than_the_best_single_member(seed):
    labels = labels_for(seed)
    validation = [member_scores(labels, seed * 10 + i, signal=0.2 + 0.1 * i) for i in range(5)]
    best_single = max(roc_auc_score(labels, v, average="macro") for v in validation)
    greedy = select_members(validation, labels, "greedy")
    assert greedy.validation_score >= best_single
    chosen = [validation[i] for i in greedy.indices]
    assert greedy.validation_score == pytest.approx(
        roc_auc_score(labels, np.mean(chosen, axis=0), average="macro")
    )


def test_topk_keeps_the_k_best_members_on_validation():
    labels = labels_for(1)
    validation = [member_scores(labels, i, signal) for i, signal in enumerate([0.1, 0.9, 0.5, 0.3])]
    assert select_members(validation, labels, "topk", top_k=2).indices == (1, 2)


def test_selection_cannot_see_test_labels():
    # The selection API has no test labels to read ...
    assert not {"test", "test_groundtruth", "groundtruth"} & set(
        inspect.signature(select_members).parameters
    )
    # ... and fusing the same members against opposite test labels picks the same members.
    validation_labels, test_labels = labels_for(2), labels_for(3)
    members = []
    for i, signal in enumerate([0.9, 0.6, 0.3]):
        # Good on validation is bad on test and vice versa.
        members.append(
            Member(
                f"m{i}",
                test=member_scores(test_labels, 100 + i, 1.2 - signal),
                validation=member_scores(validation_labels, 200 + i, signal),
            )
        )
    flipped = test_labels.copy()
    flipped[2:] = ~flipped[2:]
    for select, top_k in (("topk", 1), ("topk", 2), ("greedy", None)):
        chosen = {
            run_fusion(members, truth, validation_labels, select, top_k, resamples=20).members
            for truth in (test_labels, flipped)
        }
        assert len(chosen) == 1, select
        assert next(iter(chosen))[0] == "m0"  # the validation favourite, the test's worst


def test_topk_and_greedy_without_validation_are_refused():
    labels = labels_for(4)
    members = [Member(f"m{i}", member_scores(labels, i, 0.5)) for i in range(2)]
    for select in ("topk", "greedy"):
        with pytest.raises(ValueError, match="validation"):
            run_fusion(members, labels, None, select, 1 if select == "topk" else None)


@pytest.mark.parametrize("k", [0, 4])
def test_k_out_of_range_is_refused(k):
    labels = labels_for(5)
    validation = [member_scores(labels, i, 0.5) for i in range(3)]
    with pytest.raises(ValueError, match=f"top_k={k} is not between 1 and the number of members"):
        select_members(validation, labels, "topk", top_k=k)


def test_bad_scores_and_labels_are_refused():
    labels = labels_for(6)
    good = member_scores(labels, 0, 0.5)
    with pytest.raises(ValueError, match="shape"):
        fuse([good, good[:, :-1]])
    bad = good.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        fuse([good, bad])
    with pytest.raises(ValueError, match="not binary"):
        run_fusion([Member("m", good)], labels.astype(int) * 3)
    with pytest.raises(ValueError, match="weights"):
        fuse([good, good], [1.0, -1.0])


# The fuse-files command line.


@pytest.fixture
def study_files(tmp_path: Path) -> dict:
    """Three members' test and validation scores, labels and a tag list, as files."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    test_labels, validation_labels = labels_for(10), labels_for(11, tracks=120)
    np.save(folder / "test_gt.npy", test_labels)
    np.save(folder / "validation_gt.npy", validation_labels.astype(np.int64))
    specs = []
    for i, signal in enumerate([0.8, 0.5, 0.2]):
        np.save(folder / f"test{i}.npy", member_scores(test_labels, i, signal))
        np.save(folder / f"val{i}.npy", member_scores(validation_labels, 50 + i, signal))
        specs.append(f"{folder / f'test{i}.npy'}:{folder / f'val{i}.npy'}")
    tags = folder / "tags.txt"
    tags.write_text("".join(f"mood/theme---t{j}\n" for j in range(TAGS)))
    return {"dir": folder, "specs": specs, "tags": tags, "test_labels": test_labels}


def fuse_args(files: dict, *extra: str | Path) -> list:
    folder = files["dir"]
    return [
        "fuse-files",
        *files["specs"],
        "--groundtruth",
        folder / "test_gt.npy",
        "--validation-groundtruth",
        folder / "validation_gt.npy",
        "--tags",
        files["tags"],
        "--resamples",
        "50",
        *extra,
    ]


def test_cli_writes_the_four_files(study_files, tmp_path):
    out = tmp_path / "fused"
    done = run_cli(*fuse_args(study_files, "--select", "greedy", "--out", out, "--json"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "decisions.npy",
        "metrics.json",
        "predictions.npy",
        "thresholds.txt",
    ]
    printed = json.loads(done.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["members"] == metrics["members"] and printed["members"]
    predictions = np.load(out / "predictions.npy")
    decisions = np.load(out / "decisions.npy")
    assert predictions.dtype == np.float32 and decisions.dtype == bool
    # The saved files re-evaluate to the saved metrics.
    again = evaluate_files(
        study_files["dir"] / "test_gt.npy", out / "predictions.npy", out / "decisions.npy"
    )
    for name, value in again.items():
        assert metrics[name] == printed[name] == value
    for name in ("ROC-AUC-macro", "PR-AUC-macro"):
        interval = metrics["bootstrap"][name]
        assert interval["low"] <= metrics[name] <= interval["high"]
    # Thresholds come from the fused validation scores of the chosen members.
    tags, thresholds = read_thresholds(out / "thresholds.txt")
    assert tags[0] == "mood/theme---t0" and metrics["thresholds_tuned_on"] == "validation"
    chosen = [np.load(spec.split(":")[1]) for spec in metrics["members"]]
    validation_labels = np.load(study_files["dir"] / "validation_gt.npy")
    expected = tune_thresholds(validation_labels, np.mean(chosen, axis=0).astype(np.float32))
    assert np.array_equal(thresholds, expected)


def test_cli_fuses_all_members_by_default(study_files, capsys):
    code, out, err = run_main(capsys, *fuse_args(study_files, "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["members"] == study_files["specs"]
    mean = np.mean([np.load(s.split(":")[0]) for s in study_files["specs"]], axis=0)
    assert result["ROC-AUC-macro"] == pytest.approx(
        roc_auc_score(study_files["test_labels"], mean, average="macro")
    )


def corrupt(files: dict, what: str) -> tuple[list, str]:
    folder = files["dir"]
    if what == "shape":
        np.save(folder / "test1.npy", np.zeros((TRACKS, TAGS + 1), dtype=np.float32))
        return fuse_args(files), "test1.npy"
    if what == "nan":
        scores = np.load(folder / "val2.npy")
        scores[7, 0] = np.nan
        np.save(folder / "val2.npy", scores)
        return fuse_args(files), "val2.npy"
    if what == "labels":
        np.save(folder / "test_gt.npy", np.full((TRACKS, TAGS), 0.5))
        return fuse_args(files), "test_gt.npy"
    if what == "topk":
        return fuse_args(files, "--select", "topk", "--top-k", "4"), "top_k=4"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["shape", "nan", "labels", "topk"])
def test_cli_bad_input_exits_2_and_writes_nothing(study_files, tmp_path, what, capsys):
    args, culprit = corrupt(study_files, what)
    out = tmp_path / "fused"
    before = sorted(tmp_path.rglob("*"))
    code, stdout, err = run_main(capsys, *args, "--out", out)
    assert code == 2, err
    assert culprit in err and "Traceback" not in err
    assert stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # no output folder, no temporary leftovers


def test_cli_refuses_a_non_empty_output_folder(study_files, tmp_path, capsys):
    out = tmp_path / "fused"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_main(capsys, *fuse_args(study_files, "--out", out))
    assert code == 2
    assert "not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_fuse_files_tests_the_fusion_against_the_best_single_member(study_files, tmp_path, capsys):
    out = tmp_path / "fused"
    code, printed, err = run_main(capsys, *fuse_args(study_files, "--out", out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    best = metrics["best_single_member"]
    # Member 0 has the strongest signal: the best on validation, where it is chosen.
    validation_labels = np.load(study_files["dir"] / "validation_gt.npy")
    on_validation = [
        roc_auc_score(validation_labels, np.load(spec.split(":")[1]), average="macro")
        for spec in study_files["specs"]
    ]
    assert best["name"] == study_files["specs"][int(np.argmax(on_validation))]
    assert best["chosen_on"] == "validation"
    best_test = np.load(best["name"].split(":")[0])
    assert best["ROC-AUC-macro"] == pytest.approx(
        roc_auc_score(study_files["test_labels"], best_test, average="macro")
    )
    paired = metrics["paired_bootstrap_vs_best_single"]
    assert set(paired) == {"ROC-AUC-macro", "PR-AUC-macro"}  # as `fuse` writes it
    assert paired["ROC-AUC-macro"]["observed_difference"] == pytest.approx(
        metrics["ROC-AUC-macro"] - best["ROC-AUC-macro"]
    )
    assert 0 <= paired["ROC-AUC-macro"]["p_value"] <= 1
    assert "fusion - best single ROC-AUC-macro\t" in printed


def test_a_member_may_be_a_folder_of_predictions(study_files, tmp_path, capsys):
    folders = []
    for i, spec in enumerate(study_files["specs"]):
        folder = tmp_path / f"trial{i}"
        folder.mkdir()
        test, validation = spec.split(":")
        (folder / "test_predictions.npy").write_bytes(Path(test).read_bytes())
        (folder / "validation_predictions.npy").write_bytes(Path(validation).read_bytes())
        folders.append(str(folder))
    by_files = run_main(capsys, *fuse_args(study_files, "--select", "greedy", "--json"))
    args = fuse_args(study_files, "--select", "greedy", "--json")
    args[1 : 1 + len(folders)] = folders
    by_folders = run_main(capsys, *args)
    assert by_files[0] == by_folders[0] == 0
    files, folders_result = json.loads(by_files[1]), json.loads(by_folders[1])
    assert files["ROC-AUC-macro"] == folders_result["ROC-AUC-macro"]
    assert [f"trial{spec[-5]}" for spec in files["members"]] == folders_result["members"]


def test_members_are_ranked_by_the_selection_metric():
    """By validation PR-AUC, topk and the best single member follow PR-AUC where it and
    ROC-AUC disagree; the summary names the metric and its score."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = labels_for(7)
    for seed in range(100):
        members = [member_scores(labels, seed * 10 + i, 0.25) for i in range(4)]
        roc = [roc_auc_score(labels, m, average="macro") for m in members]
        pr = [average_precision_score(labels, m, average="macro") for m in members]
        if np.argmax(roc) != np.argmax(pr):
            break
    else:
        pytest.fail("no seed where ROC-AUC and PR-AUC pick different members")
    by_roc = select_members(members, labels, "topk", top_k=1)
    by_pr = select_members(members, labels, "topk", top_k=1, metric="val_pr_auc")
    assert by_roc.indices == (int(np.argmax(roc)),) and by_roc.metric == "val_roc_auc"
    assert by_pr.indices == (int(np.argmax(pr)),) and by_pr.metric == "val_pr_auc"
    assert by_pr.validation_score == pytest.approx(max(pr))
    fused = [Member(f"m{i}", m, m) for i, m in enumerate(members)]
    result = run_fusion(fused, labels, labels, "topk", 1, resamples=10, metric="val_pr_auc")
    summary = result.summary()
    assert summary["selection_metric"] == "val_pr_auc"
    assert summary["validation_pr_auc_macro"] == pytest.approx(max(pr))
    with pytest.raises(ValueError, match="unknown selection metric 'val_f1'"):
        select_members(members, labels, "topk", top_k=1, metric="val_f1")
