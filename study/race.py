"""Racing rows over their draws at synchronous rungs: the decision rule, free of Ray.

A study under `scheduler: {type: race, grace_period: G, reduction_factor: ETA,
alpha: A}` stops its trials at rungs G, G*ETA, G*ETA^2, ... epochs (below
the trials' max epochs). A rung is decided once every live trial has reached
it or ended, so the decisions depend on the trials' results only, never on
timing or on how many trials ran at once.

At a rung each live row (a configuration without its seed and split) is
scored by the mean over its draws of each trial's best validation selection
metric up to that rung. The best ceil(rows / ETA) rows by mean are kept
whatever happens. Of the others, a row is dropped only when it is
significantly worse than the best row:

1. the rows are not all equal: the F test of a randomized complete block
   design (rows x draws, the draws as blocks) rejects at `alpha`;
2. the row's paired differences to the best row (one per common draw) give
   a one-sided paired t test (n - 1 degrees of freedom) whose p value,
   Holm-adjusted over the rows tested at that rung, is at most `alpha`.

Step 1 is what keeps the rule honest: the best row is chosen for having the
highest mean, so its differences to the others are biased upwards, and the
paired tests alone drop one of five equal rows x 3 draws at about 20% of
first rungs in simulation. Gated by the F test, which under equal rows
rejects at `alpha`, no more than `alpha` of rungs drop an equal row
(`benchmarks/race_rule.py`: 3.4%, 2.0% and 1.7%). With 3 to 4 draws the t
tests assume roughly normal differences; an exact sign-flip test could never
go below 1/2^n and so never drop anything with 3 seeds. With one draw per row no test
is possible and the rule is plain synchronous successive halving (keep the
top ceil(n / ETA)), and `alpha: 1` gives plain halving with draws too.

`replay` derives every decision from the trials' histories alone: the
scheduler (`study.race_scheduler`) applies the same `decide` rung by rung as
results arrive, and a resumed study or the end of a study re-derives them
from its records, so both give the same `rungs.json`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from study_folder.records import BEST, DROPPED, KEPT

CONFIDENCE = 0.95


def score_of(value: Any) -> float:
    """A reported score as a float; NaN for anything that is not a number (missing, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def rung_epochs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """G, G*ETA, G*ETA^2, ... below `max_epochs` (a rung at the last epoch decides nothing)."""
    rungs, epoch = [], grace_period
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return tuple(rungs)


@dataclass
class Course:
    """One trial as the race sees it: its row, its draw and its scores so far.

    `scores[e - 1]` is the selection metric of epoch e (NaN where none).
    `ended`: the trial stopped by itself (patience, its last epoch); `failed`:
    it failed for good. A trial that ended stays in its row's score with its
    best; a failed one counts at the rungs it reached before failing."""

    key: str
    row: str
    draw: tuple[Any, ...]
    scores: list[float] = field(default_factory=list)
    ended: bool = False
    failed: bool = False

    @property
    def epochs(self) -> int:
        return len(self.scores)

    def counts_at(self, epoch: int) -> bool:
        """Whether this trial scores its row at a rung at `epoch`."""
        if self.epochs >= epoch:
            return True
        return self.ended and not self.failed and self.epochs > 0

    def waits_for(self, epoch: int) -> bool:
        """Whether a rung at `epoch` must wait for this trial (live and not there yet)."""
        return not (self.ended or self.failed) and self.epochs < epoch

    def best_up_to(self, epoch: int) -> float:
        window = np.asarray(self.scores[:epoch], dtype=np.float64)
        finite = window[np.isfinite(window)]
        return float(finite.max()) if finite.size else math.nan


@dataclass(frozen=True)
class RowDecision:
    """One row at one rung: `rungs.json`'s entry."""

    rung: int  # 1, 2, ...
    epoch: int
    row: str  # the row's name
    n: int  # its draws that count at this rung
    mean: float
    sd: float | None
    difference_to_best: float | None  # mean paired (row - best); None for the best row
    difference_low: float | None  # its 95% t interval (None below two pairs)
    difference_high: float | None
    p_value: float | None  # one-sided paired t test: worse than the best
    p_adjusted: float | None  # Holm over the rows tested at this rung
    rows_differ_p: float | None  # the rung's block F test (None: not tested)
    decision: str  # best, kept or dropped
    trials: tuple[str, ...] = ()
    why: str = ""  # the rule's reason for the decision, in a few words

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "epoch": self.epoch,
            "row": self.row,
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "difference_to_best": {
                "mean": self.difference_to_best,
                "low": self.difference_low,
                "high": self.difference_high,
            },
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "rows_differ_p": self.rows_differ_p,
            "decision": self.decision,
            "why": self.why,
            "trials": list(self.trials),
        }


@dataclass(frozen=True)
class RaceRule:
    """A space's `race` settings: the rungs and how a rung decides."""

    rungs: tuple[int, ...]  # epochs
    reduction_factor: int
    alpha: float

    def decide(
        self, rung: int, epoch: int, scores: Mapping[str, Mapping[Any, float]]
    ) -> list[RowDecision]:
        return decide(rung, epoch, scores, self.reduction_factor, self.alpha)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[index])
        adjusted[index] = min(running, 1.0)
    return adjusted


def rows_differ_p(matrix: np.ndarray) -> float:
    """p of the block F test that the rows (axis 0) of a rows x draws matrix are equal, the
    draws (axis 1) as blocks; needs >= 2 rows and >= 2 draws."""
    rows, draws = matrix.shape
    grand = matrix.mean()
    row_means, draw_means = matrix.mean(axis=1), matrix.mean(axis=0)
    between = draws * float(((row_means - grand) ** 2).sum())
    residual = matrix - row_means[:, None] - draw_means[None, :] + grand
    error = float((residual**2).sum())
    error_df = (rows - 1) * (draws - 1)
    if error <= 1e-15 * max(between, 1e-300):  # no noise at all: any difference is certain
        return 0.0 if between > 0 else 1.0
    statistic = (between / (rows - 1)) / (error / error_df)
    return float(stats.f.sf(statistic, rows - 1, error_df))


def paired_worse(differences: np.ndarray) -> tuple[float, float | None, float | None]:
    """One-sided paired t test that the differences (best - row) are > 0: p, and the 95%
    interval of their mean (None below two pairs)."""
    count = differences.size
    mean = float(differences.mean())
    sd = float(differences.std(ddof=1))
    if sd <= 1e-15 * max(abs(mean), 1e-300):
        return (0.0 if mean > 0 else 1.0), mean, mean
    error = sd / math.sqrt(count)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1)) * error
    return float(stats.t.sf(mean / error, count - 1)), mean - half, mean + half


def decide(
    rung: int,
    epoch: int,
    scores: Mapping[str, Mapping[Any, float]],
    reduction_factor: int,
    alpha: float,
) -> list[RowDecision]:
    """The decisions of one rung. `scores`: row name -> draw -> that trial's best up to the
    rung (rows with no draw are left out). Rows are ranked by mean (ties by name)."""
    rows = {row: dict(by_draw) for row, by_draw in scores.items() if by_draw}
    means = {row: float(np.mean(list(by_draw.values()))) for row, by_draw in rows.items()}
    ranked = sorted(rows, key=lambda row: (-means[row], row))
    keep = math.ceil(len(ranked) / reduction_factor)
    tested = ranked[keep:]
    single = all(len(by_draw) == 1 for by_draw in rows.values())
    differ_p = _rows_differ(rows, ranked) if tested and not single else None
    pairs = _pairs_to_best(rows, ranked)
    tested_p = [row for row in tested if row in pairs and pairs[row][3] is not None]
    adjusted = dict(zip(tested_p, holm([pairs[row][3] for row in tested_p]), strict=True))
    decisions = []
    for index, row in enumerate(ranked):
        values = list(rows[row].values())
        difference, low, high, p = pairs.get(row, (None, None, None, None))
        decision, why = _decision(
            index, keep, len(ranked), single, differ_p, adjusted.get(row), alpha
        )
        decisions.append(
            RowDecision(
                rung=rung,
                epoch=epoch,
                row=row,
                n=len(values),
                mean=means[row],
                sd=float(np.std(values, ddof=1)) if len(values) > 1 else None,
                difference_to_best=difference,
                difference_low=low,
                difference_high=high,
                p_value=p,
                p_adjusted=adjusted.get(row),
                rows_differ_p=differ_p,
                decision=decision,
                why=why,
            )
        )
    return decisions


def _rows_differ(rows: dict[str, dict[Any, float]], ranked: list[str]) -> float | None:
    """The block F test's p over the draws every row has (None below two such draws)."""
    common = sorted(set.intersection(*(set(rows[row]) for row in ranked)), key=repr)
    if len(common) < 2:
        return None
    matrix = np.array([[rows[row][draw] for draw in common] for row in ranked])
    return rows_differ_p(matrix)


def _pairs_to_best(
    rows: dict[str, dict[Any, float]], ranked: list[str]
) -> dict[str, tuple[float, float | None, float | None, float | None]]:
    """Each row but the best, paired with the best over their common draws: the mean
    difference (row - best), its 95% interval and the p that it is worse (None below two
    pairs); rows sharing no draw with the best are left out."""
    best = ranked[0] if ranked else None
    pairs: dict[str, tuple[float, float | None, float | None, float | None]] = {}
    for row in ranked[1:]:
        common = [draw for draw in rows[row] if draw in rows[best]]
        if not common:
            continue
        differences = np.array([rows[row][d] - rows[best][d] for d in common])
        if len(common) < 2:
            pairs[row] = (float(differences.mean()), None, None, None)
            continue
        p, low, high = paired_worse(-differences)
        pairs[row] = (float(differences.mean()), -high, -low, p)
    return pairs


def _decision(
    index: int,
    keep: int,
    count: int,
    single: bool,
    differ_p: float | None,
    p_adjusted: float | None,
    alpha: float,
) -> tuple[str, str]:
    """A row's decision from its rank, and why: the best, the top `keep` of `count` kept;
    below them dropped when the rows differ and it is tested worse (or, with one draw a
    row, always: plain successive halving), else kept."""
    if index == 0:
        return BEST, "the best mean"
    if index < keep:
        return KEPT, f"in the top {keep} of {count}"
    if single:  # no test possible: plain successive halving
        return DROPPED, "one draw a row: halving"
    if differ_p is None:
        return KEPT, "too few common draws to test"
    if differ_p > alpha:
        return KEPT, "the rows do not differ"
    if p_adjusted is None:
        return KEPT, "too few draws paired with the best"
    if p_adjusted > alpha:
        return KEPT, "not significantly worse"
    return DROPPED, "significantly worse"


def rung_scores(courses: Iterable[Course], epoch: int, live: Callable[[str], bool]):
    """Row -> draw -> best up to `epoch`, for the live rows' trials that count there; and
    row -> the keys of those trials."""
    scores: dict[str, dict[Any, float]] = {}
    members: dict[str, list[str]] = {}
    for course in courses:
        if not live(course.row) or not course.counts_at(epoch):
            continue
        value = course.best_up_to(epoch)
        if math.isfinite(value):
            scores.setdefault(course.row, {})[course.draw] = value
            members.setdefault(course.row, []).append(course.key)
    return scores, members


@dataclass
class Race:
    """The race so far: the decided rungs and the rows they dropped.

    `advance` decides every rung that is ready (each live trial reached it or
    ended, and all `expected` trials are known); the scheduler calls it as
    results arrive, `replay` once over finished histories."""

    rule: RaceRule
    expected: int  # trials the study runs: no rung is decided before all are known
    courses: dict[str, Course] = field(default_factory=dict)
    decided: list[list[RowDecision]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # row -> rung that dropped it

    @property
    def next_rung(self) -> int | None:
        """The epoch of the first undecided rung; None when every rung is decided."""
        index = len(self.decided)
        return self.rule.rungs[index] if index < len(self.rule.rungs) else None

    def live(self, row: str) -> bool:
        return row not in self.dropped

    def ready(self) -> bool:
        epoch = self.next_rung
        if epoch is None or len(self.courses) < self.expected:
            return False
        return not any(
            self.live(course.row) and course.waits_for(epoch) for course in self.courses.values()
        )

    def advance(self) -> list[list[RowDecision]]:
        """Decide every rung that is ready; the new rungs' decisions."""
        new = []
        while self.ready():
            epoch = self.next_rung
            scores, members = rung_scores(self.courses.values(), epoch, self.live)
            decisions = [
                _with_trials(d, members[d.row])
                for d in self.rule.decide(len(self.decided) + 1, epoch, scores)
            ]
            for decision in decisions:
                if decision.decision == DROPPED:
                    self.dropped[decision.row] = decision.rung
            self.decided.append(decisions)
            new.append(decisions)
        return new

    def to_json(self) -> list[dict[str, Any]]:
        return [decision.to_dict() for rung in self.decided for decision in rung]


def _with_trials(decision: RowDecision, keys: list[str]) -> RowDecision:
    return replace(decision, trials=tuple(sorted(keys)))


def replay(rule: RaceRule, courses: Iterable[Course]) -> Race:
    """Every rung's decisions from the trials' whole histories (all ended)."""
    courses = list(courses)
    race = Race(rule, expected=len(courses))
    for course in courses:
        race.courses[course.key] = course
    race.advance()
    return race


def rung_line(decisions: Sequence[RowDecision], metric_title: str = "") -> str:
    """The console's line for a rung: how many rows it kept, and each row it dropped with the
    evidence (points below the best, its interval, the adjusted p)."""
    first = decisions[0]
    best = next(d for d in decisions if d.decision == BEST)
    kept = sum(d.decision != DROPPED for d in decisions)
    dropped = [d for d in decisions if d.decision == DROPPED]
    text = f"rung {first.rung} at epoch {first.epoch}: kept {kept} row{'s' * (kept != 1)}"
    if not dropped:
        return text + f"; best {best.row} ({100 * best.mean:.1f})"
    parts = []
    for d in dropped:
        if d.difference_to_best is None:  # no draw in common with the best row
            below = f"{100 * (best.mean - d.mean):.1f} points below {best.row} (unpaired)"
        else:
            below = f"{-100 * d.difference_to_best:.1f} points below {best.row}"
        if d.difference_low is not None:
            below += f" [{-100 * d.difference_high:.1f}, {-100 * d.difference_low:.1f}]"
        evidence = (
            f", p adj. {d.p_adjusted:.3g}" if d.p_adjusted is not None else " (halving, 1 draw)"
        )
        parts.append(f"{d.row}, {below}{evidence}")
    return text + "; dropped " + "; ".join(parts)
