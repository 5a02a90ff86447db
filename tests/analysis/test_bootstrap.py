"""Fast weighted AUCs equal scikit-learn's; BCa bootstrap intervals and paired tests behave."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis.bootstrap import (
    bootstrap_intervals,
    paired_bootstrap,
    resample_counts,
    resampled_macro,
    undefined_share,
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


def test_distinct_copies_ap_is_sklearns_at_unit_weights_and_of_copies_broken_apart():
    rng = np.random.default_rng(11)
    for _ in range(10):
        labels = rng.random(50) < 0.3
        scores = rng.random(50) + 0.3 * labels
        tied = np.round(scores, 1)  # tied positives too
        for values in (scores, tied):
            _, ap = weighted_auc_ap(labels, values, np.ones((1, 50)), distinct_copies=True)
            assert ap[0] == pytest.approx(average_precision_score(labels, values), abs=1e-12)
        # Integer weights: each copy a track of its own, just below the previous copy.
        weights = rng.integers(0, 4, size=50)
        rows = np.repeat(np.arange(50), weights)
        copy = np.concatenate([np.arange(w) for w in weights])
        jittered = scores[rows] - 1e-9 * copy
        _, ap = weighted_auc_ap(labels, scores, weights[None, :], distinct_copies=True)
        assert ap[0] == pytest.approx(average_precision_score(labels[rows], jittered), abs=1e-12)
        # The digamma form (any weight) agrees with the harmonic table (integer weights).
        _, smooth = weighted_auc_ap(labels, scores, weights[None, :] + 1e-13, distinct_copies=True)
        assert smooth[0] == pytest.approx(ap[0], abs=1e-9)


def skewed(seed: int, tracks: int = 200, signal: float = 0.3):
    """A weak system on 80 tags with 1 to 3 positive tracks each, several with one."""
    rng = np.random.default_rng(seed)
    positives = (1, 2, 2, 3) * 20
    labels = np.zeros((tracks, len(positives)), dtype=bool)
    for j, k in enumerate(positives):
        labels[rng.choice(tracks, k, replace=False), j] = True
    return labels, rng.normal(size=labels.shape) + signal * labels


def test_bca_holds_the_estimate_where_the_percentile_interval_misses_it():
    missed = 0
    for seed in range(4, 12):
        labels, scores = skewed(seed)
        interval = bootstrap_intervals(labels, scores, resamples=500, seed=0)["PR-AUC-macro"]
        # The percentile interval of the same resamples, as sklearn scores them (before BCa).
        counts = resample_counts(labels.shape[0], 500, np.random.default_rng(0))
        low, high = np.percentile(resampled_macro(labels, scores, counts)[1], [2.5, 97.5])
        missed += not low <= interval.point <= high
        assert interval.low <= interval.point <= interval.high, seed
        assert interval.method == "BCa"
    assert missed >= 4  # of 8: the skew this module corrects is there


def _binormal_ap(prevalence: float, shift: float) -> float:
    """Population AP of scores N(shift, 1) for positives and N(0, 1) for negatives."""

    def precision_density(t: float) -> float:
        tpr, fpr = stats.norm.sf(t - shift), stats.norm.sf(t)
        precision = prevalence * tpr / (prevalence * tpr + (1 - prevalence) * fpr)
        return precision * stats.norm.pdf(t - shift)

    return integrate.quad(precision_density, -12.0, 12.0 + shift, limit=200)[0]


def test_intervals_cover_the_true_values_at_about_the_nominal_rate():
    # Well posed: 300 tracks, 3 tags of prevalence 0.3, binormal scores.
    shift, prevalence, sims = 1.0, 0.3, 120
    truth = {
        "ROC-AUC-macro": stats.norm.cdf(shift / np.sqrt(2.0)),
        "PR-AUC-macro": _binormal_ap(prevalence, shift),
    }
    rng = np.random.default_rng(12)
    covered = dict.fromkeys(truth, 0)
    for sim in range(sims):
        labels = rng.random((300, 3)) < prevalence
        scores = rng.normal(size=labels.shape) + shift * labels
        for name, interval in bootstrap_intervals(labels, scores, 200, seed=sim).items():
            covered[name] += interval.low <= truth[name] <= interval.high
    for name, hits in covered.items():
        assert 0.86 <= hits / sims <= 0.99, (name, hits)  # measured: 0.975 and 0.908


def test_undefined_resamples_are_counted():
    rng = np.random.default_rng(13)
    labels = rng.random((40, 3)) < 0.5
    labels[:, 2] = False
    labels[5, 2] = True  # tag 2 is undefined exactly where track 5 is not drawn
    scores = rng.random((40, 3)) + 0.3 * labels
    interval = bootstrap_intervals(labels, scores, resamples=400, seed=3)["ROC-AUC-macro"]
    counts = resample_counts(40, 400, np.random.default_rng(3))
    undefined = (counts @ labels == 0) | (counts @ ~labels == 0)  # (resamples, tags)
    assert undefined[:, 2].sum() == (counts[:, 5] == 0).sum()
    assert interval.skipped == undefined.sum()
    assert interval.undefined_resamples == undefined.any(axis=1).sum()
    assert interval.undefined_share == pytest.approx(interval.undefined_resamples / 400)
    assert interval.undefined_share == pytest.approx((1 - 1 / 40) ** 40, abs=0.06)
    assert undefined_share(labels, 400, seed=3) == interval.undefined_share  # from labels alone
    saved = interval.to_dict()
    assert saved["undefined_resamples"] == interval.undefined_resamples
    assert saved["undefined_share"] == interval.undefined_share and saved["method"] == "BCa"
    assert np.isfinite([interval.low, interval.high]).all()


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


def test_paired_p_value_is_below_the_level_where_the_interval_excludes_zero():
    labels, strong = system(9, signal=0.8)
    rng = np.random.default_rng(1)
    for noise in (0.05, 0.1, 0.2, 0.4, 0.8):
        weak = strong + rng.normal(0.0, noise, size=strong.shape)
        for result in paired_bootstrap(labels, strong, weak, resamples=400, seed=0).values():
            excludes_zero = not result.low <= 0.0 <= result.high
            assert excludes_zero == (result.p_value < 0.05), (noise, result)


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


def test_one_scoring_per_system_gives_the_standalone_intervals_and_tests():
    """The report scores each system once: its interval and its paired test from the same
    `Resampled` are the standalone functions' numbers, and its point is sklearn's macro score."""
    from analysis.bootstrap import intervals_of, macro_scores, paired_of, resample_scores

    rng = np.random.default_rng(3)
    labels = rng.random((120, 9)) < 0.2
    labels[0], labels[1] = True, False
    a = np.round(rng.random((120, 9)), 2)  # ties
    b = np.round(0.5 * a + 0.5 * rng.random((120, 9)), 2)
    scored_a, scored_b = resample_scores(labels, a, 200, 5), resample_scores(labels, b, 200, 5)
    assert intervals_of(scored_a) == bootstrap_intervals(labels, a, resamples=200, seed=5)
    assert paired_of(scored_a, scored_b) == paired_bootstrap(labels, a, b, resamples=200, seed=5)
    macro = macro_scores(labels, a)
    assert macro["ROC-AUC-macro"] == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert macro["PR-AUC-macro"] == pytest.approx(average_precision_score(labels, a), abs=1e-12)
    assert scored_a.point == pytest.approx(macro, abs=1e-12)
    with pytest.raises(ValueError, match="same draw"):
        paired_of(scored_a, resample_scores(labels, b, 200, 6))
