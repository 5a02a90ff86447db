"""Bootstrap intervals and paired tests for macro ROC-AUC and PR-AUC over test tracks.

The intervals are bias-corrected and accelerated (BCa; Efron, "Better
bootstrap confidence intervals", JASA 1987), with the acceleration from a
delete-a-group jackknife (Efron and Tibshirani, "An Introduction to the
Bootstrap", 1993, section 11.5): a full leave-one-track-out jackknife over
a few thousand tracks would cost four times the resamples themselves.

A resample of the test tracks with replacement is the same as giving every
track an integer weight (how often it was drawn), so each resample's
metrics are weighted metrics of the *original* rows. We sort each tag's
scores once and compute the weighted ROC-AUC (Mann-Whitney, ties count one
half) and weighted average precision (scikit-learn's step-wise definition)
of all resamples at once from cumulative weights; they equal scikit-learn's
``roc_auc_score`` / ``average_precision_score`` with ``sample_weight``
(checked in the tests), at a small fraction of the cost.

Two artefacts of resampling a few positives per tag would shift every
resample's macro scores away from the full test set's, often by more than
the interval is wide; no bias correction can undo a shift that large (BCa
contains the estimate exactly when the percentile interval does), so the
interval statistics avoid them:

- A track drawn twice is, for sklearn, one score with twice the weight, so
  its copies tie and share the precision of the last of them: AP rises.
  The intervals count the copies of a track as adjacent, distinct tracks
  (a smoothed bootstrap with vanishing noise). Tracks that tie in the
  test set still tie, so on the full test set this is sklearn's AP.
  ROC-AUC is unaffected: copies only ever tie with their own class.
- A resample in which a tag has no positive (or no negative) track leaves
  that tag's AUCs undefined. Averaging the other tags alone would change
  which tags the macro average is of (rare tags score lower); instead a
  resample's macro score is the full test set's plus the mean change, from
  the full test set, of the tags it does define. How many resamples had an
  undefined tag is reported with every interval.

Resamples are drawn with ``numpy.random.default_rng(seed)``, so the same
seed gives the same numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse, special, stats

from analysis.evaluate import check_groundtruth, check_scores

METRICS = ("ROC-AUC-macro", "PR-AUC-macro")
METHOD = "BCa"
JACKKNIFE_GROUPS = 100  # delete-a-group jackknife for the acceleration: groups of tracks
_CHUNK = 250  # resamples per block: bounds the (bins, resamples) sums in memory


@dataclass(frozen=True)
class Interval:
    """A metric on the full test set and its bootstrap (BCa) interval."""

    point: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int
    skipped: int  # (resample, tag) pairs undefined for lack of a positive or negative
    undefined_resamples: int = 0  # resamples in which at least one tag was undefined
    method: str = METHOD

    @property
    def undefined_share(self) -> float:
        """The share of resamples in which at least one tag was undefined."""
        return self.undefined_resamples / self.resamples

    def to_dict(self) -> dict:
        return {
            "point": self.point,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "resamples": self.resamples,
            "seed": self.seed,
            "skipped_tag_resamples": self.skipped,
            "undefined_resamples": self.undefined_resamples,
            "undefined_share": self.undefined_share,
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
    undefined_resamples: int = 0  # resamples in which at least one tag was undefined
    method: str = METHOD

    def to_dict(self) -> dict:
        return {
            "observed_difference": self.observed_difference,
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "level": self.level,
            "method": self.method,
            "resamples": self.resamples,
            "seed": self.seed,
            "undefined_resamples": self.undefined_resamples,
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


def jackknife_weights(n_rows: int, groups: int, rng: np.random.Generator) -> np.ndarray:
    """Delete-a-group jackknife: float (groups, n_rows), row g zero on group g's tracks, else one.

    The tracks are shuffled into `groups` groups of equal size (within one);
    with ``groups >= n_rows`` it is the leave-one-out jackknife.
    """
    groups = min(groups, n_rows)
    member = np.empty(n_rows, dtype=np.intp)
    member[rng.permutation(n_rows)] = np.arange(n_rows) % groups
    return (member[None, :] != np.arange(groups)[:, None]).astype(np.float64)


def _tag_bins(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Which sum each track's weight goes into, for one tag, and the positives per group.

    Only the thresholds at positive tracks' scores move recall, so with G
    distinct positive scores (group g = 0 the highest) both metrics need
    just 3G + 1 weight sums per resample: positives at group g (bin g),
    negatives strictly between groups g-1 and g (bin G + g), negatives tied
    with group g (bin 2G + g), and negatives below every positive (bin 3G).
    The third value is the number of positive tracks in each group (1
    unless positives tie).
    """
    positive_values = np.unique(scores[labels])  # ascending
    n_groups = positive_values.size
    below = np.searchsorted(positive_values, scores, side="left")  # positive values < score
    tied = below < n_groups
    tied[tied] = positive_values[below[tied]] == scores[tied]
    bins = np.where(below == 0, 3 * n_groups, 2 * n_groups - below)  # negatives between groups
    bins = np.where(tied, 3 * n_groups - 1 - below, bins)  # negatives tied with a group
    bins = np.where(labels, n_groups - 1 - below, bins)  # positives
    group_sizes = np.bincount(bins[labels], minlength=n_groups).astype(np.float64)
    return bins, n_groups, group_sizes


def _metrics_from_sums(
    sums: np.ndarray, n_groups: int, group_sizes: np.ndarray | None = None, integral: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and AP from one tag's (3G + 1, resamples) weight sums; NaN where undefined.

    With `group_sizes` (positive tracks per group), AP counts the copies of
    a track as distinct adjacent tracks instead of one tied score; see the
    module docstring; `integral` says that every weight is an integer.
    """
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
        if group_sizes is None:
            # AP: sum over thresholds of (recall step) x (precision at that threshold).
            precision = np.where(tp > 0, tp_cum / np.where(tp > 0, tp_cum + fp_cum, 1.0), 0.0)
            ap = (tp * precision).sum(axis=0) / pos
        else:
            copies = _distinct_copies_precision(tp, tp_cum - tp, fp_cum, group_sizes, integral)
            ap = copies.sum(axis=0) / pos
    roc[~defined] = np.nan
    ap[~defined] = np.nan
    return roc, ap


def _distinct_copies_precision(
    tp: np.ndarray, above: np.ndarray, fp: np.ndarray, group_sizes: np.ndarray, integral: bool
) -> np.ndarray:
    """Each group's summed precision over its positive weight, copies taken one after another.

    A group of n tied positive tracks with weight m is m / n steps of n
    tied positives, each step at its own precision: with `above` positive
    and `fp` negative weight ranked at or above the group, step k has
    precision (above + k n) / (above + k n + fp), and the steps sum to
    m - fp (psi(c + m / n + 1) - psi(c + 1)), c = (above + fp) / n, which
    extends to any non-negative weight. With weight n (the full test set)
    it is sklearn's n (above + n) / (above + n + fp). With integer weights
    (`integral`) and untied positives, the digamma difference is one of
    harmonic numbers, read from a table: five times faster.
    """
    gap = np.empty_like(tp)
    single = group_sizes <= 1.0
    if integral and single.any():
        start = (above[single] + fp[single]).astype(np.intp)
        stop = start + tp[single].astype(np.intp)
        harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, stop.max() + 1))))
        gap[single] = harmonic[stop] - harmonic[start]
    else:
        single[:] = False
    if not single.all():
        n = np.maximum(group_sizes[~single], 1.0)[:, None]  # (tied groups, 1)
        c = (above[~single] + fp[~single]) / n
        gap[~single] = special.digamma(c + tp[~single] / n + 1.0) - special.digamma(c + 1.0)
    return tp - fp * gap


def weighted_auc_ap(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, distinct_copies: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC-AUC and average precision of one tag for many weightings.

    labels, scores: (tracks,); weights: (resamples, tracks), non-negative.
    Returns two (resamples,) float64 arrays, equal to scikit-learn's scores
    with ``sample_weight``; NaN where the weighted data lack a positive or
    a negative. With `distinct_copies`, AP counts a track of weight w as w
    distinct adjacent tracks (the interval statistic; see the module
    docstring); equal to sklearn's at unit weights.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    bins, n_groups, group_sizes = _tag_bins(labels, scores)
    sums = np.zeros((3 * n_groups + 1, weights.shape[0]))
    np.add.at(sums, bins, weights.T)
    integral = bool(np.all(weights == np.round(weights)))
    return _metrics_from_sums(sums, n_groups, group_sizes if distinct_copies else None, integral)


def resampled_tags(
    groundtruth: np.ndarray, scores: np.ndarray, counts: np.ndarray, distinct_copies: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Every tag's ROC-AUC and AP under every weighting: two (resamples, tags) arrays, NaN undefined.

    All tags' weight sums come from one sparse product (bins x tracks) @
    (tracks x resamples), in float32: counts and their sums are integers
    below 2**24, so they are exact (as are jackknife weights of 0 and 1).
    """
    n_rows, n_tags = groundtruth.shape
    if n_rows >= 2**24:
        raise ValueError(f"{n_rows} tracks: too many for exact float32 resample counts")
    labels = np.asarray(groundtruth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    layout, bin_rows, offset = [], [], 0
    for j in range(n_tags):
        bins, n_groups, group_sizes = _tag_bins(labels[:, j], scores[:, j])
        layout.append((offset, n_groups, group_sizes if distinct_copies else None))
        bin_rows.append(bins + offset)
        offset += 3 * n_groups + 1
    indicator = sparse.csr_matrix(
        (
            np.ones(n_rows * n_tags, dtype=np.float32),
            (np.concatenate(bin_rows), np.tile(np.arange(n_rows), n_tags)),
        ),
        shape=(offset, n_rows),
    )
    integral = bool(np.all(counts == np.round(counts)))
    roc = np.empty((counts.shape[0], n_tags))
    ap = np.empty((counts.shape[0], n_tags))
    for start in range(0, counts.shape[0], _CHUNK):
        block = np.ascontiguousarray(counts[start : start + _CHUNK].T, dtype=np.float32)
        sums = np.asarray(indicator @ block, dtype=np.float64)  # (bins, resamples)
        for j, (first, n_groups, group_sizes) in enumerate(layout):
            tag_sums = sums[first : first + 3 * n_groups + 1]
            r, a = _metrics_from_sums(tag_sums, n_groups, group_sizes, integral)
            roc[start : start + block.shape[1], j] = r
            ap[start : start + block.shape[1], j] = a
    return roc, ap


def resampled_macro(
    groundtruth: np.ndarray, scores: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Macro ROC-AUC and PR-AUC of every resample as sklearn would score it, and the skipped pairs.

    A tag undefined in a resample is left out of that resample's macro
    average; the third value counts such (resample, tag) pairs. These are
    the plain resampled scores; the intervals use `_anchored_macro` instead.
    """
    roc, ap = resampled_tags(groundtruth, scores, counts)
    skipped = int(np.isnan(roc).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": all tags skipped
        return np.nanmean(roc, axis=1), np.nanmean(ap, axis=1), skipped


def macro_scores(groundtruth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro ROC-AUC and PR-AUC by official name, over the tags with both positive and
    negative tracks: scikit-learn's scores (to 1e-12) in one pass over all tags."""
    roc, ap, _ = resampled_macro(groundtruth, scores, np.ones((1, len(groundtruth))))
    if np.isnan(roc[0]):
        raise ValueError("no tag has both positive and negative tracks: AUCs are undefined")
    return {"ROC-AUC-macro": float(roc[0]), "PR-AUC-macro": float(ap[0])}


def undefined_share(groundtruth: np.ndarray, resamples: int = 1000, seed: int = 0) -> float:
    """The share of resamples in which some tag has no positive or no negative track.

    It depends on the labels and the draws only, so every interval drawn
    with the same test labels, resamples and seed has this share.
    """
    _check_settings(resamples, 0.5)
    labels = check_groundtruth(groundtruth)
    counts, _ = _draws(labels.shape[0], resamples, seed)
    positives = counts @ labels  # (resamples, tags): weight of the positive tracks
    return float(((positives == 0) | (positives == labels.shape[0])).any(axis=1).mean())


def _anchored_macro(per_tag: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Macro scores of (weightings, tags) per-tag scores, at fixed tags.

    The full test set's macro score plus the mean change of the tags a
    weighting defines; NaN where it defines none.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": no tag defined
        return full.mean() + np.nanmean(per_tag - full, axis=1)


def _check_settings(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _acceleration(jackknife: np.ndarray) -> float:
    """BCa's acceleration from jackknife values: skewness of their influence, over six."""
    jackknife = jackknife[np.isfinite(jackknife)]
    influence = jackknife.mean() - jackknife if jackknife.size else jackknife
    spread = float((influence**2).sum())
    if spread == 0.0:
        return 0.0
    return float((influence**3).sum() / (6.0 * spread**1.5))


def _bias_z(values: np.ndarray, estimate: float) -> float:
    """BCa's z0: the normal quantile of the share of resamples below the estimate (ties half)."""
    share = (np.sum(values < estimate) + 0.5 * np.sum(values == estimate)) / values.size
    half = 0.5 / values.size  # keep z0 finite when every resample lies on one side
    return float(stats.norm.ppf(np.clip(share, half, 1.0 - half)))


def bca_bounds(
    values: np.ndarray, estimate: float, acceleration: float, level: float
) -> tuple[float, float]:
    """The BCa interval from resampled values, the estimate and the acceleration.

    The percentile interval at the levels Phi(z0 + (z0 + z) / (1 - a (z0 + z)))
    for z the normal quantiles of the two tails (Efron 1987). NaN without
    finite resamples; the estimate itself where every resample equals it.
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if np.all(values == estimate):
        return float(estimate), float(estimate)
    z0 = _bias_z(values, estimate)
    shares = []
    for z in stats.norm.ppf([(1.0 - level) / 2.0, (1.0 + level) / 2.0]):
        denominator = 1.0 - acceleration * (z0 + z)
        if denominator <= 0.0:  # beyond where the correction holds: the extreme resample
            shares.append(0.0 if z < 0 else 1.0)
        else:
            shares.append(float(stats.norm.cdf(z0 + (z0 + z) / denominator)))
    low, high = np.quantile(values, shares)
    return float(low), float(high)


def _bca_p_value(values: np.ndarray, estimate: float, acceleration: float) -> float:
    """Two-sided p of H0 "zero": one minus the level of the widest BCa interval without zero.

    Inverts `bca_bounds` at zero. The share of resamples below zero is kept
    within [1/(B+1), B/(B+1)], the usual +1 correction, and p is at least
    2/(B+1): B resamples resolve no smaller tail.
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    if np.all(values == estimate):
        return 1.0 if estimate == 0.0 else 2.0 / (values.size + 1)
    z0 = _bias_z(values, estimate)
    share = (np.sum(values < 0.0) + 0.5 * np.sum(values == 0.0)) / values.size
    bound = 1.0 / (values.size + 1)
    w = float(stats.norm.ppf(np.clip(share, bound, 1.0 - bound))) - z0
    if 1.0 + acceleration * w <= 0.0:
        return 2.0 * bound
    z = w / (1.0 + acceleration * w) - z0
    return float(min(1.0, max(2.0 * bound, 2.0 * stats.norm.cdf(-abs(z)))))


def _draws(n_rows: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The resample counts (as before BCa, for the same seed) and the jackknife weights."""
    rng = np.random.default_rng(seed)
    counts = resample_counts(n_rows, resamples, rng)
    return counts, jackknife_weights(n_rows, JACKKNIFE_GROUPS, rng)


@dataclass(frozen=True)
class Resampled:
    """One system's per-tag (ROC-AUC, AP) on the full test set, every resample and every
    jackknife set of one draw (`resamples`, `seed`).

    Scoring is the costly part of an interval or a paired test; a report that
    sets every trial against the best scores each system once and takes its
    interval and its tests from the same `Resampled`.
    """

    full: tuple[np.ndarray, ...]  # (tags,) each: scikit-learn's per-tag scores
    resampled: tuple[np.ndarray, ...]  # (resamples, tags) each
    jackknifed: tuple[np.ndarray, ...]  # (groups, tags) each
    resamples: int
    seed: int

    @property
    def point(self) -> dict[str, float]:
        """Macro ROC-AUC and PR-AUC of the full test set, by official name (sklearn's, to
        1e-12: the per-tag scores equal `roc_auc_score` and `average_precision_score`)."""
        return {name: float(f.mean()) for name, f in zip(METRICS, self.full, strict=True)}


def resample_scores(
    groundtruth: np.ndarray,
    scores: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    name: str = "scores",
) -> Resampled:
    """Score one system under the draw of (`resamples`, `seed`); the labels and scores
    checked (`name`: what an error calls the scores)."""
    _check_settings(resamples, 0.5)
    labels = check_groundtruth(groundtruth)
    scores = check_scores(scores, name, labels.shape)
    counts, jackknife = _draws(labels.shape[0], resamples, seed)
    weights = np.vstack([np.ones((1, labels.shape[0])), counts, jackknife])
    roc, ap = resampled_tags(labels, scores, weights, distinct_copies=True)
    split = (1, 1 + counts.shape[0])
    parts = [np.split(m, split) for m in (roc, ap)]
    return Resampled(
        full=tuple(p[0][0] for p in parts),
        resampled=tuple(p[1] for p in parts),
        jackknifed=tuple(p[2] for p in parts),
        resamples=resamples,
        seed=seed,
    )


def intervals_of(system: Resampled, level: float = 0.95) -> dict[str, Interval]:
    """BCa intervals of macro ROC-AUC and PR-AUC of a scored system, keyed by official name."""
    _check_settings(system.resamples, level)
    undefined = np.isnan(system.resampled[0])  # ROC-AUC and AP are undefined together
    skipped, undefined_resamples = int(undefined.sum()), int(undefined.any(axis=1).sum())
    point = system.point
    result = {}
    for name, f, r, j in zip(
        METRICS, system.full, system.resampled, system.jackknifed, strict=True
    ):
        acceleration = _acceleration(_anchored_macro(j, f))
        low, high = bca_bounds(_anchored_macro(r, f), float(f.mean()), acceleration, level)
        result[name] = Interval(
            point[name],
            low,
            high,
            level,
            system.resamples,
            system.seed,
            skipped,
            undefined_resamples,
        )
    return result


def paired_of(a: Resampled, b: Resampled, level: float = 0.95) -> dict[str, PairedResult]:
    """Paired test of scored system A against B; both must come from the same draw."""
    _check_settings(a.resamples, level)
    if (a.resamples, a.seed) != (b.resamples, b.seed) or a.full[0].shape != b.full[0].shape:
        raise ValueError(
            f"a paired test needs both systems scored on the same draw and tags: "
            f"{a.resamples} resamples, seed {a.seed}, {a.full[0].size} tags against "
            f"{b.resamples}, seed {b.seed}, {b.full[0].size}"
        )
    undefined_resamples = int(np.isnan(a.resampled[0]).any(axis=1).sum())
    point_a, point_b = a.point, b.point
    result = {}
    for k, name in enumerate(METRICS):
        full = a.full[k] - b.full[k]
        diff = _anchored_macro(a.resampled[k] - b.resampled[k], full)
        acceleration = _acceleration(_anchored_macro(a.jackknifed[k] - b.jackknifed[k], full))
        estimate = float(full.mean())
        low, high = bca_bounds(diff, estimate, acceleration, level)
        finite = diff[np.isfinite(diff)]
        result[name] = PairedResult(
            observed_difference=point_a[name] - point_b[name],
            mean_difference=float(finite.mean()) if finite.size else float("nan"),
            low=low,
            high=high,
            p_value=_bca_p_value(diff, estimate, acceleration),
            level=level,
            resamples=a.resamples,
            seed=a.seed,
            undefined_resamples=undefined_resamples,
        )
    return result


def bootstrap_intervals(
    groundtruth: np.ndarray,
    scores: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """BCa bootstrap intervals of macro ROC-AUC and PR-AUC, keyed by official name."""
    _check_settings(resamples, level)  # before the costly scoring
    return intervals_of(resample_scores(groundtruth, scores, resamples, seed), level)


def paired_bootstrap(
    groundtruth: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, PairedResult]:
    """Paired bootstrap test of system A against B on macro ROC-AUC and PR-AUC.

    Both systems are scored on the same resampled tracks; the interval of
    the difference is BCa, and the two-sided p-value is the one that
    interval implies: one minus the level at which it just reaches zero.
    """
    _check_settings(resamples, level)  # before the costly scoring
    return paired_of(
        resample_scores(groundtruth, scores_a, resamples, seed, "scores of system A"),
        resample_scores(groundtruth, scores_b, resamples, seed, "scores of system B"),
        level,
    )
