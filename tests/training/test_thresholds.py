"""Validation-tuned thresholds maximise each tag's F-score; thresholds.txt round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mer_models.training.thresholds import (
    decide,
    read_thresholds,
    tune_thresholds,
    write_thresholds,
)

MEDIAEVAL = Path(__file__).resolve().parents[3] / "shared" / "mtg-jamendo" / "results" / "mediaeval"


def best_f_by_brute_force(labels: np.ndarray, scores: np.ndarray) -> float:
    """Try every cut of the `>` rule: below the lowest score and at every distinct score."""
    candidates = np.r_[scores.min() - 1.0, np.unique(scores)]
    return max(f1_score(labels, scores > t, zero_division=0.0) for t in candidates)


@pytest.mark.parametrize("seed", range(8))
def test_thresholds_maximise_each_tags_validation_f_score(seed):
    rng = np.random.default_rng(seed)
    tracks, tags = 40, 5
    labels = rng.random((tracks, tags)) < rng.uniform(0.05, 0.6, size=tags)
    labels[0] = True
    scores = rng.random((tracks, tags)) + 0.5 * labels
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    thresholds = tune_thresholds(labels, scores)
    decisions = decide(scores, thresholds)
    for j in range(tags):
        reached = f1_score(labels[:, j], decisions[:, j], zero_division=0.0)
        assert reached == pytest.approx(best_f_by_brute_force(labels[:, j], scores[:, j]))


def test_threshold_sits_between_validation_scores_and_predicts_none_without_positives():
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
    scores = np.array([[0.9, 0.1], [0.7, 0.2], [0.3, 0.3], [0.1, 0.4]])
    thresholds = tune_thresholds(labels, scores)
    assert thresholds[0] == pytest.approx(0.5)  # midway between 0.7 and 0.3
    assert not decide(scores, thresholds)[:, 1].any()


def test_all_positive_tag_predicts_every_track():
    labels = np.ones((3, 1), dtype=bool)
    scores = np.array([[0.2], [0.5], [0.2]])
    assert decide(scores, tune_thresholds(labels, scores)).all()


def test_format_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    tags = tuple(f"mood/theme---tag{j}" for j in range(7))
    thresholds = rng.random(7)
    path = tmp_path / "thresholds.txt"
    write_thresholds(path, tags, thresholds)
    assert path.read_text().splitlines()[0] == f"{tags[0]}\t{float(thresholds[0])!r}"
    names, values = read_thresholds(path, tags)
    assert names == tags
    assert np.array_equal(values, thresholds)


def test_reading_checks_the_tag_order_and_the_numbers(tmp_path):
    path = tmp_path / "thresholds.txt"
    write_thresholds(path, ("a", "b"), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="tag 'b'; expected 'c'"):
        read_thresholds(path, ("a", "c"))
    with pytest.raises(ValueError, match="2 thresholds for 3 tags"):
        read_thresholds(path, ("a", "b", "c"))
    path.write_text("a\tnope\n")
    with pytest.raises(ValueError, match="line 1.*not a number"):
        read_thresholds(path)
    path.write_text("a 0.1\n")
    with pytest.raises(ValueError, match="line 1"):
        read_thresholds(path)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="3 thresholds for scores with 2"):
        decide(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        tune_thresholds(np.ones((2, 1), dtype=bool), np.array([[np.nan], [0.0]]))
    with pytest.raises(ValueError, match="not binary"):
        tune_thresholds(np.full((2, 1), 2), np.zeros((2, 1)))


@pytest.mark.skipif(
    not (MEDIAEVAL / "baseline_vggish_thresholds.txt").is_file(),
    reason=f"the official MediaEval artefacts are not at {MEDIAEVAL} (shared reference data)",
)
def test_official_thresholds_file_reads_and_reproduces_the_official_decisions():
    tags, thresholds = read_thresholds(MEDIAEVAL / "baseline_vggish_thresholds.txt")
    assert len(tags) == 56 and tags[0] == "mood/theme---action"
    predictions = np.load(MEDIAEVAL / "baseline_vggish_predictions.npy")
    assert np.array_equal(
        decide(predictions, thresholds), np.load(MEDIAEVAL / "baseline_vggish_decisions.npy")
    )
