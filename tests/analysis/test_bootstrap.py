"""Fast weighted AUCs equal scikit-learn's; bootstrap intervals and paired tests behave."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis.bootstrap import (
    bootstrap_intervals,
    paired_bootstrap,
    resample_counts,
    resampled_macro,
    weighted_auc_ap,
)


def system(seed: int, tracks: int = 300, tags: int = 8, signal: float = 0.6):
    rng = np.random.default_rng(seed)
    labels = rng.random((tracks, tags)) < 0.15
    labels[:2, :] = [[True], [False]]
    scores = rng.random((tracks, tags)) + signal * labels
    return labels, scores


@pytest.mark.parametrize("ties", [False, True])
def test_fast_weighted_auc_and_ap_equal_sklearn_with_sample_weight(ties):
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = rng.random(60) < 0.3
        scores = rng.random(60) + 0.3 * labels
        if ties:
            scores = np.round(scores, 1)
        weights = rng.integers(0, 4, size=(6, 60)).astype(float)
        weights[0] = rng.random(60)  # non-integer weights too
        roc, ap = weighted_auc_ap(labels, scores, weights)
        for b, w in enumerate(weights):
            if (w * labels).sum() == 0 or (w * ~labels).sum() == 0:
                assert np.isnan(roc[b]) and np.isnan(ap[b])
                continue
            assert roc[b] == pytest.approx(
                roc_auc_score(labels, scores, sample_weight=w), abs=1e-12
            )
            assert ap[b] == pytest.approx(
                average_precision_score(labels, scores, sample_weight=w), abs=1e-12
            )


def test_resampled_macro_is_the_mean_of_the_per_tag_weighted_scores():
    labels, scores = system(2, tracks=80, tags=5)
    scores = np.round(scores, 2)
    counts = resample_counts(80, 30, np.random.default_rng(0))
    assert (counts.sum(axis=1) == 80).all()
    roc, ap, skipped = resampled_macro(labels, scores, counts)
    per_tag = [weighted_auc_ap(labels[:, j], scores[:, j], counts) for j in range(5)]
    assert skipped == 0
    assert np.allclose(roc, np.mean([r for r, _ in per_tag], axis=0))
    assert np.allclose(ap, np.mean([a for _, a in per_tag], axis=0))
    ones = np.ones((1, 80))
    assert roc_auc_score(labels, scores, average="macro") == pytest.approx(
        resampled_macro(labels, scores, ones)[0][0]
    )


def test_tags_without_a_positive_in_a_resample_are_skipped_not_fatal():
    labels, scores = system(3, tracks=40, tags=3)
    labels[:, 2] = False
    labels[5, 2] = True  # a single positive: often absent from a resample
    counts = resample_counts(40, 200, np.random.default_rng(0))
    roc, ap, skipped = resampled_macro(labels, scores, counts)
    positives = counts @ labels  # (resamples, tags): weighted positives
    negatives = counts @ ~labels
    assert skipped == int(((positives == 0) | (negatives == 0)).sum())
    assert skipped >= int((counts[:, 5] == 0).sum()) > 0
    assert np.isfinite(roc).all() and np.isfinite(ap).all()


def test_intervals_contain_the_point_estimate():
    labels, scores = system(4)
    intervals = bootstrap_intervals(labels, scores, resamples=300, seed=0)
    assert set(intervals) == {"ROC-AUC-macro", "PR-AUC-macro"}
    assert intervals["ROC-AUC-macro"].point == pytest.approx(
        roc_auc_score(labels, scores, average="macro")
    )
    for interval in intervals.values():
        assert interval.low < interval.point < interval.high


def test_same_seed_repeats_and_a_different_seed_differs():
    labels, scores = system(5)
    first = bootstrap_intervals(labels, scores, resamples=200, seed=7)
    assert bootstrap_intervals(labels, scores, resamples=200, seed=7) == first
    other = bootstrap_intervals(labels, scores, resamples=200, seed=8)
    assert other["ROC-AUC-macro"].low != first["ROC-AUC-macro"].low


def test_paired_test_of_a_system_against_itself_finds_no_difference():
    labels, scores = system(6)
    for result in paired_bootstrap(labels, scores, scores, resamples=200, seed=0).values():
        assert result.observed_difference == 0.0
        assert result.mean_difference == 0.0
        assert result.low == result.high == 0.0
        assert result.p_value == 1.0


def test_paired_test_detects_a_clearly_better_system():
    labels, strong = system(7, signal=1.0)
    rng = np.random.default_rng(0)
    weak = strong + rng.normal(0.0, 1.0, size=strong.shape)
    result = paired_bootstrap(labels, strong, weak, resamples=500, seed=0)["ROC-AUC-macro"]
    assert result.observed_difference > 0
    assert 0 < result.low <= result.mean_difference <= result.high
    assert result.p_value < 0.01
    reverse = paired_bootstrap(labels, weak, strong, resamples=500, seed=0)["ROC-AUC-macro"]
    assert reverse.mean_difference == pytest.approx(-result.mean_difference)


def test_1000_resamples_of_a_challenge_sized_test_set_take_seconds():
    rng = np.random.default_rng(0)
    labels = rng.random((4231, 56)) < 0.03
    labels[:2] = [[True], [False]]
    scores = rng.random((4231, 56)).astype(np.float32)
    start = time.perf_counter()
    bootstrap_intervals(labels, scores, resamples=1000, seed=0)
    assert time.perf_counter() - start < 10.0


def test_bad_settings_are_refused():
    labels, scores = system(8)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_intervals(labels, scores, resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(labels, scores, level=1.5)
    with pytest.raises(ValueError, match="system B"):
        paired_bootstrap(labels, scores, scores[:, :-1])
