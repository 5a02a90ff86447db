"""Bootstrap intervals and paired tests for macro ROC-AUC and PR-AUC over test tracks.

A resample of the test tracks with replacement is the same as giving every
track an integer weight (how often it was drawn), so each resample's
metrics are weighted metrics of the *original* rows. We sort each tag's
scores once and compute the weighted ROC-AUC (Mann-Whitney, ties count one
half) and weighted average precision (scikit-learn's step-wise definition)
of all resamples at once from cumulative weights; they equal scikit-learn's
``roc_auc_score`` / ``average_precision_score`` with ``sample_weight``
(checked in the tests), at a small fraction of the cost.

A resample in which a tag has no positive (or no negative) track leaves
that tag's AUCs undefined; that tag is skipped in that resample's macro
average (the other tags still count), and the number of such skips is
reported. Resamples are drawn with ``numpy.random.default_rng(seed)``, so
the same seed gives the same numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from analysis.evaluate import check_groundtruth, check_scores, evaluate

METRICS = ("ROC-AUC-macro", "PR-AUC-macro")
_CHUNK = 250  # resamples per block: bounds the (bins, resamples) sums in memory


@dataclass(frozen=True)
class Interval:
    """A metric on the full test set and its bootstrap percentile interval."""

    point: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int
    skipped: int  # (resample, tag) pairs left out for lack of a positive or negative

    def to_dict(self) -> dict:
        return {
            "point": self.point,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "skipped_tag_resamples": self.skipped,
        }


@dataclass(frozen=True)
class PairedResult:
    """System A minus system B on the same resampled tracks."""

    observed_difference: float  # on the full test set
    mean_difference: float  # over resamples
    low: float
    high: float
    p_value: float  # two-sided, H0: no difference
    level: float
    resamples: int
    seed: int

    def to_dict(self) -> dict:
        return {
            "observed_difference": self.observed_difference,
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def resample_counts(n_rows: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each row is drawn in each resample: int (resamples, n_rows), rows sum to n_rows."""
    if n_rows < 1 or resamples < 1:
        raise ValueError(f"need at least one row and one resample, got {n_rows} and {resamples}")
    draws = rng.integers(0, n_rows, size=(resamples, n_rows))
    offsets = np.arange(resamples)[:, None] * n_rows
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n_rows).reshape(
        resamples, n_rows
    )


def _tag_bins(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Which sum each track's weight goes into, for one tag.

    Only the thresholds at positive tracks' scores move recall, so with G
    distinct positive scores (group g = 0 the highest) both metrics need
    just 3G + 1 weight sums per resample: positives at group g (bin g),
    negatives strictly between groups g-1 and g (bin G + g), negatives tied
    with group g (bin 2G + g), and negatives below every positive (bin 3G).
    """
    positive_values = np.unique(scores[labels])  # ascending
    n_groups = positive_values.size
    below = np.searchsorted(positive_values, scores, side="left")  # positive values < score
    tied = below < n_groups
    tied[tied] = positive_values[below[tied]] == scores[tied]
    bins = np.where(below == 0, 3 * n_groups, 2 * n_groups - below)  # negatives between groups
    bins = np.where(tied, 3 * n_groups - 1 - below, bins)  # negatives tied with a group
    bins = np.where(labels, n_groups - 1 - below, bins)  # positives
    return bins, n_groups


def _metrics_from_sums(sums: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and AP from one tag's (3G + 1, resamples) weight sums; NaN where undefined."""
    g = n_groups
    tp, between, tied, tail = sums[:g], sums[g : 2 * g], sums[2 * g : 3 * g], sums[3 * g]
    tp_cum = np.cumsum(tp, axis=0)  # positive weight at score >= group g
    fp_cum = np.cumsum(between + tied, axis=0)  # negative weight at score >= group g
    pos = tp_cum[-1] if g else np.zeros_like(tail)
    neg = (fp_cum[-1] if g else 0.0) + tail
    defined = (pos > 0) & (neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ROC-AUC (Mann-Whitney): each positive beats the negatives below it, half the tied ones.
        roc = (tp * (neg - fp_cum + 0.5 * tied)).sum(axis=0) / (pos * neg)
        # AP: sum over thresholds of (recall step) x (precision at that threshold).
        precision = np.where(tp > 0, tp_cum / np.where(tp > 0, tp_cum + fp_cum, 1.0), 0.0)
        ap = (tp * precision).sum(axis=0) / pos
    roc[~defined] = np.nan
    ap[~defined] = np.nan
    return roc, ap


def weighted_auc_ap(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC-AUC and average precision of one tag for many weightings.

    labels, scores: (tracks,); weights: (resamples, tracks), non-negative.
    Returns two (resamples,) float64 arrays, equal to scikit-learn's scores
    with ``sample_weight``; NaN where the weighted data lack a positive or
    a negative.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    bins, n_groups = _tag_bins(labels, scores)
    sums = np.zeros((3 * n_groups + 1, weights.shape[0]))
    np.add.at(sums, bins, weights.T)
    return _metrics_from_sums(sums, n_groups)


def resampled_macro(
    groundtruth: np.ndarray, scores: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Macro ROC-AUC and PR-AUC of every resample, and the number of skipped (resample, tag) pairs.

    All tags' weight sums come from one sparse product (bins x tracks) @
    (tracks x resamples), in float32: counts and their sums are integers
    below 2**24, so they are exact.
    """
    n_rows, n_tags = groundtruth.shape
    if n_rows >= 2**24:
        raise ValueError(f"{n_rows} tracks: too many for exact float32 resample counts")
    labels = np.asarray(groundtruth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    layout, bin_rows, offset = [], [], 0
    for j in range(n_tags):
        bins, n_groups = _tag_bins(labels[:, j], scores[:, j])
        layout.append((offset, n_groups))
        bin_rows.append(bins + offset)
        offset += 3 * n_groups + 1
    indicator = sparse.csr_matrix(
        (
            np.ones(n_rows * n_tags, dtype=np.float32),
            (np.concatenate(bin_rows), np.tile(np.arange(n_rows), n_tags)),
        ),
        shape=(offset, n_rows),
    )
    roc = np.empty((counts.shape[0], n_tags))
    ap = np.empty((counts.shape[0], n_tags))
    for start in range(0, counts.shape[0], _CHUNK):
        block = np.ascontiguousarray(counts[start : start + _CHUNK].T, dtype=np.float32)
        sums = np.asarray(indicator @ block, dtype=np.float64)  # (bins, resamples)
        for j, (first, n_groups) in enumerate(layout):
            r, a = _metrics_from_sums(sums[first : first + 3 * n_groups + 1], n_groups)
            roc[start : start + block.shape[1], j] = r
            ap[start : start + block.shape[1], j] = a
    skipped = int(np.isnan(roc).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": all tags skipped
        return np.nanmean(roc, axis=1), np.nanmean(ap, axis=1), skipped


def _check_settings(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    groundtruth: np.ndarray,
    scores: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of macro ROC-AUC and PR-AUC, keyed by official name."""
    _check_settings(resamples, level)
    labels = check_groundtruth(groundtruth)
    scores = check_scores(scores, "scores", labels.shape)
    point = evaluate(labels, scores)
    counts = resample_counts(labels.shape[0], resamples, np.random.default_rng(seed))
    roc, ap, skipped = resampled_macro(labels, scores, counts)
    result = {}
    for name, values in zip(METRICS, (roc, ap), strict=True):
        low, high = _percentiles(values, level)
        result[name] = Interval(point[name], low, high, level, resamples, seed, skipped)
    return result


def paired_bootstrap(
    groundtruth: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, PairedResult]:
    """Paired bootstrap test of system A against B on macro ROC-AUC and PR-AUC.

    Both systems are scored on the same resampled tracks. The p-value is
    two-sided: twice the smaller share of resampled differences on either
    side of zero, with the usual +1 correction, capped at 1.
    """
    _check_settings(resamples, level)
    labels = check_groundtruth(groundtruth)
    scores_a = check_scores(scores_a, "scores of system A", labels.shape)
    scores_b = check_scores(scores_b, "scores of system B", labels.shape)
    point_a, point_b = evaluate(labels, scores_a), evaluate(labels, scores_b)
    counts = resample_counts(labels.shape[0], resamples, np.random.default_rng(seed))
    roc_a, ap_a, _ = resampled_macro(labels, scores_a, counts)
    roc_b, ap_b, _ = resampled_macro(labels, scores_b, counts)
    result = {}
    for name, diff in zip(METRICS, (roc_a - roc_b, ap_a - ap_b), strict=True):
        diff = diff[np.isfinite(diff)]
        low, high = _percentiles(diff, level)
        at_or_below, at_or_above = int((diff <= 0).sum()), int((diff >= 0).sum())
        p_value = min(1.0, 2.0 * (1 + min(at_or_below, at_or_above)) / (diff.size + 1))
        result[name] = PairedResult(
            observed_difference=point_a[name] - point_b[name],
            mean_difference=float(diff.mean()) if diff.size else float("nan"),
            low=low,
            high=high,
            p_value=p_value,
            level=level,
            resamples=resamples,
            seed=seed,
        )
    return result
