from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mer_models.data.splits import load_split
from mer_models.training.thresholds import read_thresholds, tune_thresholds
from tagging.tagger import ModelSourceError, load_tagger

pytestmark = pytest.mark.slow


def test_a_run_stores_thresholds_tuned_on_its_validation_scores(runs, small_synthetic):
    validation = load_split(small_synthetic, "validation")
    tags, stored = read_thresholds(runs["seed0"] / "thresholds.txt")
    assert tags == validation.tags
    scores = np.load(runs["seed0"] / "validation_predictions.npy")
    np.testing.assert_array_equal(stored, tune_thresholds(validation.labels, scores))
    tagger = load_tagger(runs["seed0"])
    assert tagger.tags == validation.tags and len(tagger.members) == 1
    np.testing.assert_array_equal(tagger.thresholds, stored)


def test_a_trial_tunes_thresholds_against_the_study_labels(study, runs):
    tagger = load_tagger(study / "trials" / "seed1")
    assert tagger.description.startswith("trial seed1 of study")
    np.testing.assert_array_equal(
        tagger.thresholds, read_thresholds(runs["seed1"] / "thresholds.txt")[1]
    )


def test_a_moved_study_tunes_on_the_labels_saved_beside_study_json(study, runs, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(study, moved)
    description = json.loads((moved / "study.json").read_text())
    description["data"]["metadata"] = str(tmp_path / "gone")  # the dataset is not here
    (moved / "study.json").write_text(json.dumps(description))
    tagger = load_tagger(moved / "trials" / "seed0")
    np.testing.assert_array_equal(
        tagger.thresholds, read_thresholds(runs["seed0"] / "thresholds.txt")[1]
    )
    (moved / "validation_groundtruth.npy").unlink()  # then the split files are needed
    with pytest.raises(ModelSourceError, match="cannot read the validation labels"):
        load_tagger(moved / "trials" / "seed0")


def test_a_study_gives_its_best_trial_by_validation_roc_auc(study, tmp_path):
    metrics = {
        name: json.loads((study / "trials" / name / "metrics.json").read_text())
        for name in ("seed0", "seed1")
    }
    best = max(metrics, key=lambda name: metrics[name]["validation_roc_auc"])
    for what, root in ((study, "unused"), ("tiny", study.parent)):
        tagger = load_tagger(what, results_root=root)
        assert tagger.description.startswith(f"best trial {best} of study")


def test_a_fusion_uses_its_members_weights_and_thresholds(study):
    tagger = load_tagger(study, fusion="top2")
    summary = json.loads((study / "fusions" / "top2" / "metrics.json").read_text())
    assert [m.name for m in tagger.members] == summary["members"]
    assert list(tagger.weights) == summary["weights"] == [0.5, 0.5]
    np.testing.assert_array_equal(
        tagger.thresholds, read_thresholds(study / "fusions" / "top2" / "thresholds.txt")[1]
    )


def test_missing_files_are_errors_naming_them(runs, study, small_synthetic, tmp_path):
    with pytest.raises(ModelSourceError, match="neither a run or trial folder"):
        load_tagger(tmp_path / "nothing")
    old = tmp_path / "old-run"
    shutil.copytree(runs["seed0"], old)
    (old / "thresholds.txt").unlink()
    with pytest.raises(ModelSourceError, match=r"old-run: no thresholds.txt .* --metadata"):
        load_tagger(old)
    tuned = load_tagger(old, metadata=small_synthetic)
    np.testing.assert_array_equal(
        tuned.thresholds, read_thresholds(runs["seed0"] / "thresholds.txt")[1]
    )
    (old / "best_model.pt").write_bytes(b"damaged")
    with pytest.raises(ModelSourceError, match="best_model.pt: unreadable model file"):
        load_tagger(old)
    with pytest.raises(ModelSourceError, match="no fusion 'top9'.*fusions there: top2"):
        load_tagger(study, fusion="top9")


def test_a_fusion_with_an_external_member_cannot_tag(study, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    summary_file = copy / "fusions" / "top2" / "metrics.json"
    summary = json.loads(summary_file.read_text())
    summary["members"][1] = "vggish"
    summary_file.write_text(json.dumps(summary))
    with pytest.raises(ModelSourceError, match="member.s. vggish have no best_model.pt"):
        load_tagger(copy, fusion="top2")
