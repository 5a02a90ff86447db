"""Late fusion of systems' score matrices, with member selection on validation only.

Gerczuk et al. (MediaEval 2020) fuse their best models by averaging their
sigmoid outputs; `fuse` is that mean (or a weighted mean). Which members
to fuse is chosen by `select_members`, whose only labels are the
VALIDATION labels: the test labels are not an argument, so no choice can
depend on them. `run_fusion` then scores the fused test matrix with the
official metrics, validation-tuned thresholds and bootstrap intervals, and
`write_fusion` saves it all at once (into a temporary folder, then renamed)
so that a failed run leaves nothing half-written.

Greedy selection scores every remaining member in every round, so it
scores with `RankScorer` (one float sort per tag instead of scikit-learn's
curves) on running sums of the chosen members; `greedy_selection_sklearn`
keeps the plain definition that it must match. It may keep the best member
alone: that result is no fusion (`FusionResult.fused`), and says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bootstrap import Interval, bootstrap_intervals, paired_bootstrap
from analysis.evaluate import (
    check_groundtruth,
    check_scores,
    evaluate,
    load_groundtruth,
    load_matrix,
)
from analysis.staging import check_output_dir, staged_folder
from mer_models.data.splits import read_tags
from mer_models.training.metrics import (
    DEFAULT_SELECTION,
    SELECTION_KEY,
    Metric,
    selection_metric,
)
from mer_models.training.thresholds import decide, tune_thresholds, write_thresholds

log = logging.getLogger(__name__)

SELECTIONS = ("all", "topk", "greedy")


@dataclass(frozen=True)
class Member:
    """One system to fuse: its test scores and, optionally, its validation scores.

    ``name`` identifies it in messages and reports (e.g. ``TEST.npy:VALIDATION.npy``).
    """

    name: str
    test: np.ndarray
    validation: np.ndarray | None = None


@dataclass(frozen=True)
class Selection:
    """Chosen members (indices into the given list) and the validation score that chose them."""

    method: str
    indices: tuple[int, ...]
    validation_score: float | None  # of the fused chosen members; None without labels
    metric: str = DEFAULT_SELECTION  # the selection metric that scored them

    @property
    def validation_key(self) -> str:
        """metrics.json's key of the score: ``validation_roc_auc_macro``."""
        return selection_metric(self.metric).fused_validation


@dataclass(frozen=True)
class FusionResult:
    """Everything `write_fusion` saves: fused scores, decisions, metrics and provenance."""

    members: tuple[str, ...]  # names of the chosen members, in selection order
    weights: tuple[float, ...]  # normalised, aligned with members
    selection: Selection
    predictions: np.ndarray  # float32 fused test scores
    thresholds: np.ndarray  # float64, tag order
    thresholds_tuned_on: str  # "validation" or "test"
    decisions: np.ndarray  # bool
    metrics: dict[str, float]  # official names, on the fused test scores and decisions
    intervals: dict[str, Interval] = field(default_factory=dict)
    # The comparison with the best single member (the paired bootstrap) and, for a study,
    # its provenance; metrics.json records it with the rest.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def fused(self) -> bool:
        """Whether members were fused: greedy selection (or a top 1) may keep one member
        alone, whose scores are then its own and no fusion's."""
        return len(self.members) > 1

    @property
    def note(self) -> str | None:
        """What a one-member result is, in words (console and metrics.json); None if fused."""
        if self.fused:
            return None
        if self.selection.method == "greedy":
            return (
                f"no fusion improved on the best member: greedy selection kept "
                f"{self.members[0]} alone"
            )
        return f"no fusion: the {self.selection.method} selection kept {self.members[0]} alone"

    def summary(self) -> dict:
        """The metrics.json object: official metrics, bootstrap intervals, members, context;
        ``fused`` says whether it is a fusion, and a one-member result adds its ``note``."""
        return {
            **self.metrics,
            "bootstrap": {name: interval.to_dict() for name, interval in self.intervals.items()},
            "members": list(self.members),
            "weights": list(self.weights),
            "fused": self.fused,
            **({} if self.fused else {"note": self.note}),
            "select": self.selection.method,
            SELECTION_KEY: self.selection.metric,
            self.selection.validation_key: self.selection.validation_score,
            "thresholds_tuned_on": self.thresholds_tuned_on,
            **self.context,
        }


MEMBER_FOLDER_FILES = ("test_predictions.npy", "validation_predictions.npy")


def parse_member(spec: str) -> tuple[Path, Path | None]:
    """``TEST.npy``, ``TEST.npy:VALIDATION.npy`` or a folder -> (test path, validation or None).

    A folder is a study's trial folder (or any folder holding
    ``test_predictions.npy`` and, optionally, ``validation_predictions.npy``).
    """
    if Path(spec).is_dir():
        test, validation = (Path(spec) / name for name in MEMBER_FOLDER_FILES)
        if not test.is_file():
            raise ValueError(f"member folder {spec} has no {MEMBER_FOLDER_FILES[0]}")
        return test, validation if validation.is_file() else None
    test, sep, validation = spec.partition(":")
    if not test or (sep and not validation) or ":" in validation:
        raise ValueError(f"member {spec!r}: expected TEST.npy or TEST.npy:VALIDATION.npy")
    return Path(test), Path(validation) if sep else None


def load_members(specs: Sequence[str]) -> list[Member]:
    """Load members from ``TEST.npy[:VALIDATION.npy]`` specs; errors name the file."""
    members = []
    for spec in specs:
        test_path, validation_path = parse_member(spec)
        test = check_scores(
            load_matrix(test_path, "member test scores"), f"member file {test_path}"
        )
        validation = None
        if validation_path is not None:
            validation = check_scores(
                load_matrix(validation_path, "member validation scores"),
                f"member file {validation_path}",
            )
        name = Path(spec).name if Path(spec).is_dir() else spec
        members.append(Member(name, test, validation))
    return members


def check_members(members: Sequence[Member]) -> bool:
    """Members agree in shape and finiteness; returns whether all have validation scores."""
    if not members:
        raise ValueError("no members to fuse")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member {next(n for n in names if names.count(n) > 1)!r} is given twice")
    first = members[0]
    for member in members:
        check_scores(member.test, f"test scores of member {member.name}", first.test.shape)
    with_validation = [m.validation is not None for m in members]
    if any(with_validation) and not all(with_validation):
        missing = members[with_validation.index(False)].name
        raise ValueError(
            f"member {missing} has no validation scores while others do; give TEST:VALIDATION "
            f"for every member or for none"
        )
    if all(with_validation):
        shape = first.validation.shape
        for member in members:
            check_scores(member.validation, f"validation scores of member {member.name}", shape)
            if member.validation.shape[1] != first.test.shape[1]:
                raise ValueError(
                    f"member {member.name}: validation scores have {shape[1]} tag columns, "
                    f"test scores {first.test.shape[1]}"
                )
    return all(with_validation)


def _normalised_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    if weights is None:
        return np.full(count, 1.0 / count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise ValueError(f"{weights.size} weights for {count} members")
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError(f"weights must be finite and > 0, got {weights.tolist()}")
    return weights / weights.sum()


def fuse(scores: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Late fusion: the (weighted) mean of same-shaped score matrices, float64."""
    if len(scores) == 0:
        raise ValueError("no score matrices to fuse")
    first = np.asarray(scores[0])
    for i, matrix in enumerate(scores):
        check_scores(matrix, f"score matrix {i}", first.shape)
    w = _normalised_weights(weights, len(scores))
    stacked = np.stack([np.asarray(m, dtype=np.float64) for m in scores])  # (members, tracks, tags)
    return np.tensordot(w, stacked, axes=1)


class RankScorer:
    """One selection metric of many score matrices against the same labels, by sorting.

    Greedy selection scores every remaining member in every round, and
    scikit-learn's curves cost ~55 ms a matrix at the real validation size
    (3,802 tracks x 56 tags); this costs ~2 ms. A float sort of each tag's
    scores tells every positive how many tracks score below it and level
    with it, which gives ROC-AUC (Mann-Whitney: each positive beats the
    negatives below it and half those level with it) and average precision
    (scikit-learn's step-wise sum: each positive counts the precision at its
    score, positives level with it included). Equal to scikit-learn's to
    rounding (tested). Macro metrics average the tags; micro ones pool every
    (track, tag) pair as one tag.
    """

    def __init__(self, labels: np.ndarray, metric: Metric):
        if metric.label not in ("ROC-AUC", "PR-AUC"):
            raise ValueError(f"no rank formula for the metric {metric.key!r}")
        self.roc = metric.label == "ROC-AUC"
        self.macro = metric.average == "macro"
        rows = self.rows(np.asarray(labels, dtype=bool))
        self.items = rows.shape[1]
        self.positives = np.flatnonzero(rows)  # into a C-ordered (groups, items) matrix
        self.bounds = np.concatenate(([0], np.cumsum(rows.sum(axis=1))))  # positives per row

    def rows(self, matrix: np.ndarray) -> np.ndarray:
        """A (tracks, tags) matrix as the scored rows, a view: one per tag (macro), or one."""
        return matrix.T if self.macro else matrix.reshape(1, -1)

    def __call__(self, rows: np.ndarray) -> float:
        """The metric of scores laid out as C-contiguous ``rows`` (see `rows`)."""
        ordered = np.sort(rows, axis=1)
        positive_scores = rows.ravel()[self.positives]
        values = np.empty(len(self.bounds) - 1)
        for row, (start, stop) in enumerate(zip(self.bounds[:-1], self.bounds[1:], strict=True)):
            positives = np.sort(positive_scores[start:stop])
            count, negatives = positives.size, self.items - positives.size
            below = np.searchsorted(ordered[row], positives, "left")
            positives_below = np.searchsorted(positives, positives, "left")
            if self.roc:
                level = np.searchsorted(ordered[row], positives, "right") - below
                positives_level = np.searchsorted(positives, positives, "right") - positives_below
                twice_wins = 2 * (below - positives_below).sum() + (level - positives_level).sum()
                values[row] = twice_wins / (2 * count * negatives)
            else:  # precision at each positive's score: positives over tracks at or above it
                values[row] = np.mean((count - positives_below) / (self.items - below))
        return float(values.mean())


def greedy_selection(
    validation_scores: Sequence[np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray,
    metric: Metric,
) -> tuple[tuple[int, ...], float]:
    """Forward selection on validation: the chosen indices in order, and their `RankScorer` score.

    Start from the best member; each round adds the member whose addition
    raises the fused validation score most (ties: the member listed first),
    until none raises it. Each member joins at most once. The chosen
    members' weighted sum is kept and a candidate is scored on sum +
    weight x its scores: the metrics depend on order alone, so dividing by
    the total weight (the weighted mean) would change nothing.
    """
    scorer = RankScorer(labels, metric)
    rows = [scorer.rows(matrix) for matrix in validation_scores]
    candidate = np.empty(rows[0].shape)  # float64, C order: (tags, tracks) or (1, pairs)

    def score_with(total: np.ndarray | None, i: int) -> float:
        np.multiply(rows[i], weights[i], out=candidate, dtype=np.float64)
        if total is not None:
            np.add(candidate, total, out=candidate)
        return scorer(candidate)

    single = [score_with(None, i) for i in range(len(rows))]
    first = min(range(len(rows)), key=lambda i: (-single[i], i))
    chosen, best = [first], single[first]
    total = np.multiply(rows[first], weights[first], dtype=np.float64, order="C")
    while len(chosen) < len(rows):
        pick, value = None, -np.inf
        for i in range(len(rows)):
            if i not in chosen:
                score = score_with(total, i)
                if score > value:  # strictly: a tie stays with the member listed first
                    pick, value = i, score
        if not value > best:
            break
        chosen.append(pick)
        best = value
        total += np.multiply(rows[pick], weights[pick], dtype=np.float64)
    return tuple(chosen), best


def greedy_selection_sklearn(
    validation_scores: Sequence[np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray,
    metric: Metric,
) -> tuple[tuple[int, ...], float]:
    """`greedy_selection` as first written, the definition it must match (tests, benchmark):
    scikit-learn's score of the re-averaged members for every candidate, ~55 ms each."""

    def score(indices: Sequence[int]) -> float:
        chosen = [validation_scores[i] for i in indices]
        return metric.score(labels, fuse(chosen, weights[list(indices)]))

    n = len(validation_scores)
    single = [score([i]) for i in range(n)]
    first = min(range(n), key=lambda i: (-single[i], i))
    chosen, best = [first], single[first]
    while len(chosen) < n:
        candidates = [(score([*chosen, i]), i) for i in range(n) if i not in chosen]
        value, pick = max(candidates, key=lambda c: (c[0], -c[1]))
        if not value > best:
            break
        chosen.append(pick)
        best = value
    return tuple(chosen), best


def select_members(
    validation_scores: Sequence[np.ndarray] | None,
    validation_groundtruth: np.ndarray | None,
    method: str = "all",
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
    count: int | None = None,
    metric: str = DEFAULT_SELECTION,
) -> Selection:
    """Choose which members to fuse, looking at validation data only.

    ``all`` keeps every member (``count`` of them when no validation scores
    are given). ``topk`` ranks members by their own validation score of
    ``metric`` (a selection metric: macro ROC-AUC by default) and keeps the
    ``top_k`` best. ``greedy`` is `greedy_selection`: it starts from the best
    single member and keeps adding the member whose addition most raises the
    validation score of the (weighted) mean, until no addition raises it;
    it may keep one member. Ties go to the member listed first. The score
    recorded is scikit-learn's, as every other.
    """
    measure = selection_metric(metric)
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection {method!r}; expected one of {', '.join(SELECTIONS)}")
    n = len(validation_scores) if validation_scores is not None else count
    if n is None or n < 1:
        raise ValueError("no members to select from")
    if top_k is not None and method != "topk":
        raise ValueError(f"top_k is only used by the 'topk' selection, not {method!r}")
    if method == "topk":
        if top_k is None:
            raise ValueError("the 'topk' selection needs top_k")
        if not 1 <= top_k <= n:
            raise ValueError(f"top_k={top_k} is not between 1 and the number of members ({n})")
    w = _normalised_weights(weights, n)
    if validation_scores is None or validation_groundtruth is None:
        if method != "all":
            raise ValueError(
                f"the {method!r} selection ranks members on validation data: give every member's "
                f"validation scores and the validation groundtruth (test labels are never used)"
            )
        return Selection("all", tuple(range(n)), None, measure.epoch)
    labels = check_groundtruth(validation_groundtruth, "validation groundtruth")
    for i, matrix in enumerate(validation_scores):
        check_scores(matrix, f"validation scores of member {i}", labels.shape)

    def score(indices: Sequence[int]) -> float:
        chosen = [validation_scores[i] for i in indices]
        return measure.score(labels, fuse(chosen, w[list(indices)]))

    if method == "all":
        return Selection("all", tuple(range(n)), score(range(n)), measure.epoch)
    if method == "greedy":
        chosen, _ = greedy_selection(validation_scores, labels, w, measure)
        return Selection("greedy", chosen, score(chosen), measure.epoch)
    single = [score([i]) for i in range(n)]
    chosen = tuple(sorted(range(n), key=lambda i: (-single[i], i))[:top_k])
    return Selection("topk", chosen, score(chosen), measure.epoch)


def run_fusion(
    members: Sequence[Member],
    test_groundtruth: np.ndarray,
    validation_groundtruth: np.ndarray | None = None,
    select: str = "all",
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    metric: str = DEFAULT_SELECTION,
) -> FusionResult:
    """Select on validation (by the selection ``metric``), fuse, decide and evaluate on test:
    the whole fuse-files job.

    Thresholds are tuned on the fused validation scores when every member
    has them and validation labels are given; otherwise on test, like the
    official MediaEval script (optimistic; recorded as ``thresholds_tuned_on``).
    """
    test_labels, validation_labels = _checked_labels(
        members, test_groundtruth, validation_groundtruth
    )
    selection = select_members(
        [m.validation for m in members] if validation_labels is not None else None,
        validation_labels,
        select,
        top_k,
        weights,
        count=len(members),
        metric=metric,
    )
    all_weights = _normalised_weights(weights, len(members))
    chosen_weights = all_weights[list(selection.indices)]
    chosen_weights = chosen_weights / chosen_weights.sum()
    chosen = [members[i] for i in selection.indices]
    # Everything downstream sees the float32 matrix that is saved, so re-evaluating the files agrees.
    predictions = fuse([m.test for m in chosen], chosen_weights).astype(np.float32)
    thresholds, tuned_on = _fused_thresholds(
        chosen, chosen_weights, predictions, test_labels, validation_labels
    )
    decisions = decide(predictions, thresholds)
    return FusionResult(
        members=tuple(m.name for m in chosen),
        weights=tuple(float(w) for w in chosen_weights),
        selection=selection,
        predictions=predictions,
        thresholds=thresholds,
        thresholds_tuned_on=tuned_on,
        decisions=decisions,
        metrics=evaluate(test_labels, predictions, decisions),
        intervals=bootstrap_intervals(test_labels, predictions, resamples=resamples, seed=seed),
    )


def _checked_labels(
    members: Sequence[Member],
    test_groundtruth: np.ndarray,
    validation_groundtruth: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The test and (given) validation labels, checked against the members' scores."""
    has_validation = check_members(members)
    test_labels = check_groundtruth(test_groundtruth, "test groundtruth")
    check_scores(members[0].test, f"test scores of member {members[0].name}", test_labels.shape)
    if validation_groundtruth is not None and not has_validation:
        raise ValueError(
            "validation groundtruth given but the members have no validation scores; "
            "give members as TEST.npy:VALIDATION.npy"
        )
    validation_labels = None
    if validation_groundtruth is not None:
        validation_labels = check_groundtruth(validation_groundtruth, "validation groundtruth")
        if validation_labels.shape != members[0].validation.shape:
            raise ValueError(
                f"validation groundtruth has shape {validation_labels.shape}; the members' "
                f"validation scores have {members[0].validation.shape}"
            )
    return test_labels, validation_labels


def _fused_thresholds(
    chosen: Sequence[Member],
    weights: np.ndarray,
    predictions: np.ndarray,
    test_labels: np.ndarray,
    validation_labels: np.ndarray | None,
) -> tuple[np.ndarray, str]:
    """Decision thresholds tuned on the fused validation scores, else on test; and which."""
    if validation_labels is not None:
        validation = fuse([m.validation for m in chosen], weights).astype(np.float32)
        return tune_thresholds(validation_labels, validation), "validation"
    log.warning(
        "no validation scores and labels: decision thresholds are tuned on the test set "
        "(the official MediaEval practice; the F-scores are optimistic)"
    )
    return tune_thresholds(test_labels, predictions), "test"


def best_single_member(
    members: Sequence[Member],
    test_labels: np.ndarray,
    validation_labels: np.ndarray | None,
    metric: str = DEFAULT_SELECTION,
) -> tuple[Member, str]:
    """The member with the best score of the selection `metric` on validation (on test
    without validation).

    Returns it and the part it was chosen on ("validation" or "test").
    """
    measure = selection_metric(metric)
    if validation_labels is not None and all(m.validation is not None for m in members):
        scores = [measure.score(validation_labels, m.validation) for m in members]
        return members[int(np.argmax(scores))], "validation"
    scores = [measure.score(test_labels, m.test) for m in members]
    return members[int(np.argmax(scores))], "test"


def with_best_single(
    result: FusionResult,
    members: Sequence[Member],
    test_labels: np.ndarray,
    validation_labels: np.ndarray | None,
    resamples: int,
    seed: int,
) -> FusionResult:
    """The result with its paired bootstrap test against the best single member (as `fuse`)."""
    best, chosen_on = best_single_member(
        members, test_labels, validation_labels, result.selection.metric
    )
    paired = paired_bootstrap(
        test_labels, result.predictions, best.test, resamples=resamples, seed=seed
    )
    context = {
        "best_single_member": {
            "name": best.name,
            "chosen_on": chosen_on,
            **evaluate(test_labels, best.test),
        },
        "paired_bootstrap_vs_best_single": {k: v.to_dict() for k, v in paired.items()},
    }
    return dataclasses.replace(result, context={**result.context, **context})


FUSION_FILES = ("predictions.npy", "decisions.npy", "thresholds.txt", "metrics.json")


def is_fusion_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the files of a fusion and nothing else (so it may be replaced)."""
    return {p.name for p in folder.iterdir()} == set(FUSION_FILES)


def write_fusion(
    result: FusionResult, out: str | Path, tags: Sequence[str], replace: bool = False
) -> None:
    """Write predictions.npy, decisions.npy, thresholds.txt and metrics.json, all or nothing.

    ``out`` must be absent or empty; with ``replace``, an earlier fusion folder
    there is swapped for the new one once it is complete.
    """
    if len(tags) != result.predictions.shape[1]:
        raise ValueError(f"{len(tags)} tags for {result.predictions.shape[1]} score columns")
    with staged_folder(out, is_fusion_folder if replace else None) as staging:
        np.save(staging / "predictions.npy", result.predictions.astype(np.float32))
        np.save(staging / "decisions.npy", result.decisions.astype(bool))
        write_thresholds(staging / "thresholds.txt", tags, result.thresholds)
        (staging / "metrics.json").write_text(json.dumps(result.summary(), indent=2) + "\n")


def fuse_files(
    member_specs: Sequence[str],
    groundtruth: str | Path,
    validation_groundtruth: str | Path | None = None,
    select: str = "all",
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
    tags: str | Path | None = None,
    out: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    metric: str = DEFAULT_SELECTION,
) -> FusionResult:
    """`run_fusion` on .npy files, then `write_fusion` into ``out`` if given.

    Every input is read and checked before anything is written. Without a
    tag file the thresholds file names the columns ``column-0``, ``column-1``...
    """
    if out is not None:
        check_output_dir(out)
    members = load_members(member_specs)
    test_labels = load_groundtruth(groundtruth, "test groundtruth")
    validation_labels = None
    if validation_groundtruth is not None:
        validation_labels = load_groundtruth(validation_groundtruth, "validation groundtruth")
    n_tags = test_labels.shape[1]
    tag_names = tuple(f"column-{j}" for j in range(n_tags))
    if tags is not None:
        tag_names = read_tags(tags)
        if len(tag_names) != n_tags:
            raise ValueError(
                f"tag file {tags} lists {len(tag_names)} tags; the matrices have {n_tags}"
            )
    for member in members:
        if member.test.shape != test_labels.shape:
            raise ValueError(
                f"member {member.name}: test scores have shape {member.test.shape}; "
                f"test groundtruth {groundtruth} has {test_labels.shape}"
            )
        if validation_labels is not None and member.validation is not None:
            if member.validation.shape != validation_labels.shape:
                raise ValueError(
                    f"member {member.name}: validation scores have shape "
                    f"{member.validation.shape}; validation groundtruth {validation_groundtruth} "
                    f"has {validation_labels.shape}"
                )
    result = run_fusion(
        members, test_labels, validation_labels, select, top_k, weights, resamples, seed, metric
    )
    result = with_best_single(result, members, test_labels, validation_labels, resamples, seed)
    if out is not None:
        write_fusion(result, out, tag_names)
    return result
