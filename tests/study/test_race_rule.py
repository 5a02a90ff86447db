"""study/race.py: the rule that decides a rung, on hand-made and simulated scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from study.race import (
    BEST,
    DROPPED,
    KEPT,
    Course,
    Race,
    RaceRule,
    decide,
    holm,
    replay,
    rows_differ_p,
    rung_epochs,
    rung_line,
)
from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def simulation():
    return load_benchmark("race_rule")


def test_rungs_grow_by_the_reduction_factor_below_the_last_epoch():
    assert rung_epochs(2, 2, 12) == (2, 4, 8)
    assert rung_epochs(4, 3, 12) == (4,)
    assert rung_epochs(2, 3, 100) == (2, 6, 18, 54)
    assert rung_epochs(12, 2, 12) == ()


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2 x 0.5, then no lower than the step before


def test_the_block_f_test_equals_a_two_way_anova_by_hand():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(4, 3)) + np.array([[0.0], [0.5], [1.0], [3.0]])
    residual = matrix - matrix.mean(1, keepdims=True) - matrix.mean(0) + matrix.mean()
    f = (3 * matrix.mean(1).var(ddof=0) * 4 / 3) / ((residual**2).sum() / 6)
    assert rows_differ_p(matrix) == pytest.approx(stats.f.sf(f, 3, 6))


def scores(rows: dict[str, list[float]]) -> dict[str, dict[int, float]]:
    return {row: dict(enumerate(values)) for row, values in rows.items()}


def test_a_clearly_worse_row_is_dropped_with_its_evidence():
    rows = {
        "a": [0.80, 0.81, 0.79],
        "b": [0.795, 0.805, 0.79],
        "c": [0.80, 0.79, 0.795],  # below a on average, not consistently
        "cnn": [0.62, 0.64, 0.61],
    }
    decisions = {d.row: d for d in decide(1, 4, scores(rows), 2, 0.05)}
    assert [decisions[r].decision for r in "abc"] == [BEST, KEPT, KEPT]
    # Each decision says why: b is kept whatever its p (the top half), c was tested.
    assert [decisions[r].why for r in ("a", "b", "c", "cnn")] == [
        "the best mean",
        "in the top 2 of 4",
        "not significantly worse",
        "significantly worse",
    ]
    assert decisions["b"].p_adjusted is None and decisions["c"].p_adjusted > 0.05
    cnn = decisions["cnn"]
    assert cnn.decision == DROPPED
    assert cnn.difference_to_best == pytest.approx(np.mean([-0.18, -0.17, -0.18]))
    assert cnn.difference_low < cnn.difference_to_best < cnn.difference_high < 0
    assert cnn.p_value == pytest.approx(
        stats.ttest_rel(rows["a"], rows["cnn"], alternative="greater").pvalue
    )
    assert cnn.p_adjusted == pytest.approx(2 * cnn.p_value)  # Holm: 2 rows tested
    line = rung_line(list(decisions.values()))
    assert line.startswith("rung 1 at epoch 4: kept 3 rows; dropped cnn, 17.7 points below a [")


def test_one_draw_per_row_is_plain_synchronous_halving():
    rows = {"a": [0.80], "b": [0.79], "c": [0.78], "d": [0.77], "e": [0.76]}
    decisions = decide(1, 2, scores(rows), 2, 0.05)
    assert [d.decision for d in decisions] == [BEST, KEPT, KEPT, DROPPED, DROPPED]
    assert all(d.p_value is None for d in decisions)
    assert decisions[-1].why == "one draw a row: halving"


def test_alpha_one_is_plain_halving_with_draws_and_close_rows_survive_at_005():
    rows = {r: [0.8 - 0.001 * i + 0.01 * s for s in range(3)] for i, r in enumerate("abcd")}
    rows["d"] = [0.797, 0.815, 0.81]  # within the seed noise of the others
    halving = [d.decision for d in decide(1, 2, scores(rows), 2, 1.0)]
    assert halving.count(DROPPED) == 2
    tested = decide(1, 2, scores(rows), 2, 0.05)
    assert [d.decision for d in tested].count(DROPPED) == 0
    assert {d.why for d in tested[2:]} <= {"the rows do not differ", "not significantly worse"}


def test_replay_drops_rows_for_good_and_leaves_their_later_epochs_out():
    rule = RaceRule(rungs=(2, 4), reduction_factor=2, alpha=0.05)
    offsets = {"good": (0, 1, 2), "near": (1, 0, 2), "bad": (0, 1, 2), "worse": (2, 1, 0)}
    courses = [
        Course(
            f"{row}{seed}",
            row,
            (seed,),
            [base + 0.01 * offsets[row][seed] + 0.001 * e for e in range(8)],
        )
        for row, base in (("good", 0.8), ("near", 0.7995), ("bad", 0.5), ("worse", 0.4))
        for seed in range(3)
    ]
    for course in courses:
        course.ended = True
    race = replay(rule, courses)
    assert race.dropped == {"bad": 1, "worse": 1}
    assert {d["row"] for d in race.to_json() if d["rung"] == 2} == {"good", "near"}
    assert [d["trials"] for d in race.to_json()][0] == ["good0", "good1", "good2"]


def test_a_rung_waits_for_every_trial_of_the_study_and_for_live_ones_to_reach_it():
    rule = RaceRule(rungs=(2,), reduction_factor=2, alpha=1.0)
    race = Race(rule, expected=3)
    race.courses["a"] = Course("a", "A", (0,), [0.5, 0.6])
    race.courses["b"] = Course("b", "B", (0,), [0.4])
    assert race.advance() == []  # a trial not yet known, and b not at epoch 2
    race.courses["c"] = Course("c", "C", (0,), [0.3], ended=True)  # ended: counts as is
    assert race.advance() == []
    race.courses["b"].scores.append(0.45)
    (decisions,) = race.advance()
    assert {d.row: d.decision for d in decisions} == {"A": BEST, "B": KEPT, "C": DROPPED}
    assert race.next_rung is None


def test_a_failed_trial_leaves_its_row_from_the_rungs_it_did_not_reach():
    course = Course("x", "X", (0,), [0.5], failed=True, ended=True)
    assert not course.counts_at(2) and not course.waits_for(2)
    assert course.counts_at(1)
    assert math.isnan(Course("y", "Y", (0,), [math.nan]).best_up_to(1))


def test_equal_rows_are_dropped_at_no_more_than_alpha_of_rungs(simulation):
    """1,000 seeded races of 5 equal rows x 3 draws over 3 rungs."""
    by_rung, anywhere = simulation.equal_rows(races=1000, seed=0)
    assert all(share <= simulation.RULE.alpha for share in by_rung), by_rung
    assert anywhere <= 3 * simulation.RULE.alpha
    assert simulation.power(races=200, seed=1, shift=8) >= 0.95
