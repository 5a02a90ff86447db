"""Per-tag decision thresholds, tuned on validation scores, in the challenge format.

The MediaEval decisions are ``scores > threshold`` per tag (that is how the
official ``calculate_decisions.py`` applies its thresholds, and how the
baseline's ``decisions.npy`` was made). The official script picks each
threshold on the *test* set; we pick it on the validation set, so the test
F-score is an honest estimate.

For each tag we pick the threshold that maximises that tag's validation
F-score under the same ``>`` rule. Cutting the validation scores between
two neighbouring distinct values, the threshold is their midpoint (it
generalises better than sitting on a training score); ties in F-score keep
the highest threshold (fewer positives).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mer_models.matrices import check_binary, check_scores

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.txt"  # beside a run's predictions, and in a fusion's folder


def _tag_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The F-maximising ``>`` threshold of one tag (scores as float64)."""
    values, inverse = np.unique(scores, return_inverse=True)  # ascending distinct scores
    values, positives = (
        values[::-1],
        np.bincount(inverse, weights=labels, minlength=values.size)[::-1],
    )
    counts = np.bincount(inverse, minlength=values.size)[::-1]
    n_pos = labels.sum()
    if n_pos == 0:
        # No positive to find: predict none, i.e. nothing strictly above the top score.
        return float(values[0])
    # Predict positive the k top distinct score groups (k = 1..m): F = 2 TP / (predicted + actual).
    tp = np.cumsum(positives)
    predicted = np.cumsum(counts)
    f_score = 2.0 * tp / (predicted + n_pos)
    k = int(np.argmax(f_score))  # first maximum: the highest threshold among ties
    if k + 1 == values.size:  # everything positive: just below the lowest score
        return float(np.nextafter(values[k], -np.inf))
    threshold = (values[k] + values[k + 1]) / 2.0
    if not values[k + 1] <= threshold < values[k]:  # neighbours too close to split
        threshold = float(values[k + 1])
    return float(threshold)


def tune_thresholds(groundtruth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-tag thresholds (float64, tag order) maximising each tag's F-score on these data.

    Pass VALIDATION labels and scores; `decide` then applies them to test scores.
    A tag without a positive here gets a threshold that predicts nothing.
    """
    labels = check_binary(groundtruth, "groundtruth")
    scores = check_scores(scores, "scores", labels.shape).astype(np.float64)
    missing = np.flatnonzero(~labels.any(axis=0))
    if missing.size:
        log.warning(
            "tag column(s) %s have no positive track to tune on; their threshold predicts none",
            ", ".join(map(str, missing)),
        )
    return np.array([_tag_threshold(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])


def decide(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bool decisions ``scores > threshold`` per tag, the official rule."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    scores = check_scores(scores, "scores")
    if thresholds.shape != (scores.shape[1],):
        raise ValueError(
            f"{thresholds.size} thresholds for scores with {scores.shape[1]} tag columns"
        )
    return scores > thresholds


def write_thresholds(path: str | Path, tags: Sequence[str], thresholds: np.ndarray) -> None:
    """Write ``tag<TAB>threshold`` a line, in tag order (the challenge's thresholds.txt).

    Values are written with ``repr`` so that reading them back is exact.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(tags),):
        raise ValueError(f"{thresholds.size} thresholds for {len(tags)} tags")
    if not np.isfinite(thresholds).all():
        raise ValueError("thresholds must be finite")
    for tag in tags:
        if not tag or "\t" in tag or "\n" in tag:
            raise ValueError(f"tag {tag!r} cannot be written in a tab-separated thresholds file")
    lines = [f"{tag}\t{float(value)!r}" for tag, value in zip(tags, thresholds, strict=True)]
    Path(path).write_text("\n".join(lines) + "\n")


def read_thresholds(
    path: str | Path, tags: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Read a thresholds.txt: (tags, float64 thresholds); with ``tags``, the order must match."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"thresholds file {path} not found")
    names: list[str] = []
    values: list[float] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected 'tag<TAB>threshold', got {line!r}")
        tag, text = fields[0].strip(), fields[1].strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{path}, line {number}: threshold {text!r} is not a number") from None
        if math.isnan(value):
            raise ValueError(f"{path}, line {number}: threshold of {tag!r} is NaN")
        if tag in names:
            raise ValueError(f"{path}, line {number}: tag {tag!r} is listed twice")
        names.append(tag)
        values.append(value)
    if not names:
        raise ValueError(f"{path}: no thresholds in the file")
    if tags is not None and tuple(names) != tuple(tags):
        if len(names) != len(tags):
            raise ValueError(f"{path}: {len(names)} thresholds for {len(tags)} tags")
        i = next(i for i, (a, b) in enumerate(zip(names, tags, strict=True)) if a != b)
        raise ValueError(
            f"{path}: threshold {i + 1} is for tag {names[i]!r}; expected {tags[i]!r} (tag order)"
        )
    return tuple(names), np.asarray(values, dtype=np.float64)
