"""Factor effects: what changing one searched field does, paired by draw.

For every searched field (a factor: cbam, cell, units, ...; never the
seed) and every two rows that differ in that field alone, the trials of
the two rows are paired by draw (`analysis.rows.draw_of`: the seed, which
gives both the same data order, masks and initial draws, and the split,
which gives both the same tracks) and the paired
differences ``to - from`` of test macro ROC-AUC and PR-AUC are tested:

- the mean difference with a 95% Student-t interval (n - 1 df);
- a two-sided p-value: with n <= `EXACT_UP_TO` pairs the exact sign-flip
  permutation test (every one of the 2^n sign patterns of the differences;
  its smallest possible p is 2 / 2^n, 0.125 for 4 pairs: so few seeds cannot
  show an effect, and a t-test on 1 to 3 degrees of freedom would pretend
  they can), else the paired t-test (`scipy.stats.ttest_1samp` on the
  differences), from 5 pairs, where the sign-flip floor (0.0625 at 5) would
  hide any effect however large; both p are kept;
- the Benjamini-Hochberg adjusted p over every effect reported
  (`scipy.stats.false_discovery_control`).

A row pair with draws on one side only names them (`Effect.unmatched`);
one with fewer than two pairs has no interval and no test, and is listed
in `Effects.unmatched` with why, never silently dropped.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from analysis.rows import TEST_KEYS, RowResult, RowTable, draw_label, draw_of, summarise
from mer_models.files import atomic_write_text
from study_folder.records import DRAW_FIELDS, Trial

log = logging.getLogger(__name__)

EFFECTS_FILE = "effects.json"
EXACT_UP_TO = 4  # pairs up to which the exact sign-flip test gives the reported p (see above)
SIGN_FLIP = "sign-flip permutation"
PAIRED_T = "paired t"
MIN_PAIRS = 2  # an interval and a test need at least two paired differences
ALPHA = 0.05  # an effect whose adjusted p is at most this is a detected difference


@dataclass(frozen=True)
class Effect:
    """One factor's paired effect on one metric between two rows."""

    factor: str
    source: Any  # the factor's value in the `from` row
    target: Any  # ... and in the `to` row
    from_row: str
    to_row: str
    metric: str  # metrics.json key: test_roc_auc or test_pr_auc
    draws: tuple[tuple[Any, ...], ...]  # the paired draws (seeds)
    differences: tuple[float, ...]  # to - from, one per draw
    mean_difference: float
    low: float
    high: float
    p_value: float  # of `test`
    p_t: float  # the paired t-test's, whichever test is reported
    test: str
    p_adjusted: float | None = None  # set over all effects reported
    unmatched: tuple[str, ...] = ()  # draws of one row the other lacks ("seed 3 only in ...")

    @property
    def pairs(self) -> int:
        return len(self.differences)

    @property
    def detected(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted <= ALPHA

    @property
    def p_floor(self) -> float | None:
        """The smallest p its test can give: 2 / 2^n for the exact sign-flip test (0.25 at 3
        pairs), None for the t-test."""
        return sign_flip_floor(self.pairs) if self.test == SIGN_FLIP else None

    @property
    def decidable(self) -> bool:
        """Whether this many pairs could show a difference at all (p at most `ALPHA`)."""
        return self.p_floor is None or self.p_floor <= ALPHA

    @property
    def verdict(self) -> str:
        """In words: higher or lower (detected), else undecided, and why: too few pairs for
        the test to reach `ALPHA` at all, or an adjusted p above it. Never "no difference":
        an interval that spans zero also spans differences that matter."""
        if self.detected:
            return "higher" if self.mean_difference > 0 else "lower"
        if not self.decidable:
            return (
                f"undecided: {self.pairs} pairs cannot show a difference (p >= {self.p_floor:.3g})"
            )
        return f"undecided: adjusted p above {ALPHA}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "from": self.source,
            "to": self.target,
            "from_row": self.from_row,
            "to_row": self.to_row,
            "metric": self.metric,
            "pairs": self.pairs,
            "draws": [list(draw) for draw in self.draws],
            "differences": list(self.differences),
            "mean_difference": self.mean_difference,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "test": self.test,
            "p_paired_t": self.p_t,
            "unmatched": list(self.unmatched),
        }


@dataclass(frozen=True)
class Unmatched:
    """A row pair that differs in one factor alone but could not be compared, and why."""

    factor: str
    from_row: str
    to_row: str
    why: str

    def line(self) -> str:
        return f"{self.factor}: {self.from_row} -> {self.to_row}: {self.why}"


@dataclass(frozen=True)
class FactorVerdict:
    """What one factor's effects on one metric say together: the study's answer for it."""

    factor: str
    effects: tuple[Effect, ...]

    @property
    def verdict(self) -> str:
        count = f"{len(self.effects)} comparison(s)"
        detected = sum(effect.detected for effect in self.effects)
        if detected:
            return f"made a detectable difference in {detected} of its {count}"
        if not any(effect.decidable for effect in self.effects):
            return f"is undecided: too few seeds to show a difference ({count})"
        return f"is undecided: no adjusted p at most {ALPHA} ({count})"


@dataclass(frozen=True)
class Effects:
    effects: tuple[Effect, ...]
    unmatched: tuple[Unmatched, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [effect.to_dict() for effect in self.effects]

    def by_factor(self, metric: str = "test_roc_auc") -> list[FactorVerdict]:
        """The effects on `metric` grouped by factor, in the order first found."""
        grouped: dict[str, list[Effect]] = {}
        for effect in self.effects:
            if effect.metric == metric:
                grouped.setdefault(effect.factor, []).append(effect)
        return [FactorVerdict(factor, tuple(found)) for factor, found in grouped.items()]


def sign_flip_floor(pairs: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give at `pairs` pairs."""
    return 2 / 2**pairs


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided p of the mean difference under every sign pattern (2^n of them).

    Under no effect each paired difference is as likely negative as
    positive; p is the share of patterns whose |mean| reaches the observed.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size > 20:
        raise ValueError(f"{d.size} pairs: 2^{d.size} sign patterns are too many to enumerate")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2^n, n)
    means = np.abs(signs @ d) / d.size
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def paired_t_p(differences: Sequence[float]) -> float:
    """Two-sided p of the paired t-test (one-sample t of the differences against 0)."""
    d = np.asarray(differences, dtype=np.float64)
    if np.all(d == d[0]):  # no spread: t is undefined; every pair agrees
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def paired_test(differences: Sequence[float]) -> tuple[float, float, str]:
    """(reported p, paired t p, the reported test's name)."""
    p_t = paired_t_p(differences)
    if len(differences) <= EXACT_UP_TO:
        return sign_flip_p(differences), p_t, SIGN_FLIP
    return p_t, p_t, PAIRED_T


def _without(config: dict[str, Any], field: str) -> str:
    return json.dumps({k: v for k, v in config.items() if k != field}, sort_keys=True)


def _level_order(value: Any) -> tuple:
    """Factor levels in a readable order: false before true, numbers ascending, text A-Z."""
    if isinstance(value, bool):
        return (0, int(value), "")
    if isinstance(value, int | float):
        return (1, value, "")
    return (2, 0, str(value))


def _pair_trials(
    first: RowResult, second: RowResult
) -> tuple[list[tuple[Trial, Trial]], list[str]]:
    """Trials of two rows with the same draw, in draw order, and the draws one side lacks.

    A draw a row holds twice (the same seed trained twice) pairs its k-th
    trial with the other row's k-th of that draw.
    """

    def by_draw(row: RowResult) -> dict[tuple, list[Trial]]:
        grouped: dict[tuple, list[Trial]] = {}
        for trial in row.trials:
            grouped.setdefault(draw_of(trial.config), []).append(trial)
        return grouped

    a, b = by_draw(first), by_draw(second)
    pairs, unmatched = [], []
    draws = sorted(set(a) | set(b), key=repr)
    for draw in draws:
        left, right = a.get(draw, []), b.get(draw, [])
        pairs += list(zip(left, right, strict=False))
        extra_left, extra_right = len(left) - len(right), len(right) - len(left)
        if extra_left > 0:
            unmatched.append(
                f"{draw_label(draw, draws)} only in {first.name} ({extra_left} trial(s))"
            )
        if extra_right > 0:
            unmatched.append(
                f"{draw_label(draw, draws)} only in {second.name} ({extra_right} trial(s))"
            )
    return pairs, unmatched


def factor_effects(table: RowTable, metrics: Sequence[str] = TEST_KEYS) -> Effects:
    """Every factor's paired effects between rows that differ in it alone, FDR-adjusted."""
    found: list[Effect] = []
    unmatched: list[Unmatched] = []
    factors = [field for field in table.searched if field not in DRAW_FIELDS]
    for factor in factors:
        groups: dict[str, list[RowResult]] = {}
        for row in table.rows:
            if factor in row.config:
                groups.setdefault(_without(row.config, factor), []).append(row)
        for rows in groups.values():
            rows = sorted(rows, key=lambda row: _level_order(row.config[factor]))
            for source, target in itertools.combinations(rows, 2):
                pairs, missing = _pair_trials(source, target)
                if len(pairs) < MIN_PAIRS:
                    why = f"{len(pairs)} paired draw(s); an interval and a test need {MIN_PAIRS}"
                    if missing:
                        why += f" ({'; '.join(missing)})"
                    unmatched.append(Unmatched(factor, source.name, target.name, why))
                    continue
                for metric in metrics:
                    found.append(_effect(factor, source, target, metric, pairs, missing))
    adjusted = (
        stats.false_discovery_control([effect.p_value for effect in found], method="bh")
        if found
        else []
    )
    effects = tuple(
        _with_adjusted(effect, float(p)) for effect, p in zip(found, adjusted, strict=True)
    )
    for entry in unmatched:
        log.warning("effect not tested: %s", entry.line())
    for effect in effects:
        if effect.unmatched:
            log.warning(
                "effect of %s (%s -> %s) on %d pair(s); unmatched: %s",
                effect.factor,
                effect.from_row,
                effect.to_row,
                effect.pairs,
                "; ".join(effect.unmatched),
            )
    return Effects(effects, tuple(unmatched))


def _with_adjusted(effect: Effect, p: float) -> Effect:
    return replace(effect, p_adjusted=min(1.0, p))


def _effect(
    factor: str,
    source: RowResult,
    target: RowResult,
    metric: str,
    pairs: list[tuple[Trial, Trial]],
    missing: list[str],
) -> Effect:
    differences = [float(b.metrics[metric]) - float(a.metrics[metric]) for a, b in pairs]
    summary = summarise(differences)
    p_value, p_t, test = paired_test(differences)
    assert summary.low is not None and summary.high is not None  # n >= MIN_PAIRS
    return Effect(
        factor=factor,
        source=source.config[factor],
        target=target.config[factor],
        from_row=source.name,
        to_row=target.name,
        metric=metric,
        draws=tuple(draw_of(a.config) for a, _ in pairs),
        differences=tuple(differences),
        mean_difference=summary.mean,
        low=summary.low,
        high=summary.high,
        p_value=p_value,
        p_t=p_t if math.isfinite(p_t) else 1.0,
        test=test,
        unmatched=tuple(missing),
    )


def write_effects(effects: Effects, study_dir: str | Path) -> Path:
    """``STUDY/effects.json`` (one object per effect), written whole; its path."""
    path = Path(study_dir) / EFFECTS_FILE
    atomic_write_text(path, json.dumps(effects.to_json(), indent=2) + "\n")
    return path
