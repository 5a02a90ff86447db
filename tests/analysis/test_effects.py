"""Factor effects: the right trials are paired, a planted effect is found after FDR, no effect
is found where there is none, and a row pair that cannot be paired is named."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from analysis.effects import (
    EFFECTS_FILE,
    PAIRED_T,
    SIGN_FLIP,
    Effect,
    Effects,
    factor_effects,
    paired_test,
    sign_flip_p,
    write_effects,
)
from analysis.rows import row_results
from study_folder.records import load_study
from tests.analysis.repeated import repeated_study

SEARCHED = ("cell", "units")
SEEDS = range(8)  # more than EXACT_UP_TO pairs: the paired t-test decides
KEYS = {
    "factor", "from", "to", "metric", "pairs", "mean_difference", "low", "high", "p_value",
    "p_adjusted", "test",
}  # fmt: skip


def grid(cell_signal: dict[str, float]) -> list[tuple[dict, float]]:
    return [
        ({"cell": cell, "units": units}, cell_signal[cell])
        for cell, units in itertools.product(("gru", "lstm"), (128, 256))
    ]


def effects_of(study):
    return factor_effects(row_results(load_study(study)))


def metric(study, trial_id: str, key: str) -> float:
    return json.loads((study / "trials" / trial_id / "metrics.json").read_text())[key]


def test_effects_pair_the_trials_of_one_seed(tmp_path, labelled_dataset):
    study = repeated_study(
        tmp_path / "s", labelled_dataset, grid({"gru": 0.5, "lstm": 0.5}), SEEDS, SEARCHED
    )
    found = effects_of(study)
    # Two factors, each between two row pairs, on two metrics.
    assert len(found.effects) == 8 and not found.unmatched
    rows = {"r0": ("gru", 128), "r1": ("gru", 256), "r2": ("lstm", 128), "r3": ("lstm", 256)}
    by_values = {values: row for row, values in rows.items()}
    for effect in found.effects:
        assert effect.pairs == len(SEEDS)
        assert [draw[0] for draw in effect.draws] == list(SEEDS)
        for seed, difference in zip(SEEDS, effect.differences, strict=True):
            if effect.factor == "cell":
                units = int(effect.from_row.split()[-1])
                source, target = by_values[("gru", units)], by_values[("lstm", units)]
            else:
                cell = effect.from_row.split()[1].lower()
                source, target = by_values[(cell, 128)], by_values[(cell, 256)]
            expected = metric(study, f"{target}s{seed}", effect.metric) - metric(
                study, f"{source}s{seed}", effect.metric
            )
            assert difference == pytest.approx(expected)
        d = np.array(effect.differences)
        half = stats.t.ppf(0.975, d.size - 1) * stats.sem(d)
        assert effect.mean_difference == pytest.approx(d.mean())
        assert (effect.low, effect.high) == pytest.approx((d.mean() - half, d.mean() + half))
        assert effect.p_t == pytest.approx(stats.ttest_rel(d, np.zeros_like(d)).pvalue)
        assert effect.test == PAIRED_T and effect.p_value == effect.p_t  # 8 pairs: the t-test
    assert {(e.factor, e.source, e.target) for e in found.effects} == {
        ("cell", "gru", "lstm"),
        ("units", 128, 256),
    }


def test_a_planted_effect_is_significant_after_fdr_and_nothing_else(tmp_path, labelled_dataset):
    # LSTM rows cannot learn (their scores are noise); units change nothing.
    study = repeated_study(
        tmp_path / "planted", labelled_dataset, grid({"gru": 0.6, "lstm": 0.0}), SEEDS, SEARCHED
    )
    found = effects_of(study)
    for effect in found.effects:
        if effect.factor == "cell":
            assert effect.mean_difference < 0 and effect.high < 0
            assert effect.p_value == effect.p_t < 2 / 2 ** len(SEEDS)  # below the sign-flip floor
            assert effect.p_adjusted < 0.05
        else:
            assert effect.p_adjusted >= 0.05
    ps = [effect.p_value for effect in found.effects]
    assert [e.p_adjusted for e in found.effects] == pytest.approx(
        list(stats.false_discovery_control(ps))
    )


def test_no_difference_gives_no_significant_effect(tmp_path, labelled_dataset):
    study = repeated_study(
        tmp_path / "null", labelled_dataset, grid({"gru": 0.5, "lstm": 0.5}), SEEDS, SEARCHED
    )
    found = effects_of(study)
    assert len(found.effects) == 8
    assert all(effect.p_adjusted >= 0.05 for effect in found.effects)


def test_an_unmatched_pair_is_named(tmp_path, labelled_dataset, caplog):
    # Row 2 (lstm 128) has seed 0 only; row 3 (lstm 256) lacks seeds 6 and 7.
    skip = {(2, s) for s in SEEDS if s != 0} | {(3, 6), (3, 7)}
    study = repeated_study(
        tmp_path / "gaps",
        labelled_dataset,
        grid({"gru": 0.5, "lstm": 0.5}),
        SEEDS,
        SEARCHED,
        skip=skip,
    )
    found = effects_of(study)
    names = {(u.factor, u.from_row, u.to_row) for u in found.unmatched}
    assert names == {
        ("cell", "block GRU 128", "block LSTM 128"),
        ("units", "block LSTM 128", "block LSTM 256"),
    }
    assert all("1 paired draw(s)" in u.why for u in found.unmatched)
    assert "effect not tested: cell: block GRU 128 -> block LSTM 128" in caplog.text
    partial = [e for e in found.effects if e.from_row == "block GRU 256" and e.factor == "cell"]
    assert partial and all(e.pairs == 6 for e in partial)
    assert partial[0].unmatched == (
        "seed 6 only in block GRU 256 (1 trial(s))",
        "seed 7 only in block GRU 256 (1 trial(s))",
    )


def test_effects_json_has_the_named_keys(tmp_path, labelled_dataset):
    study = repeated_study(
        tmp_path / "j", labelled_dataset, grid({"gru": 0.6, "lstm": 0.0}), SEEDS, SEARCHED
    )
    path = write_effects(effects_of(study), study)
    assert path == study / EFFECTS_FILE
    entries = json.loads(path.read_text())
    assert len(entries) == 8
    for entry in entries:
        assert KEYS <= set(entry)
        assert entry["metric"] in ("test_roc_auc", "test_pr_auc") and entry["pairs"] == 8


def test_single_seed_rows_have_no_effects_only_reasons(tmp_path, labelled_dataset):
    study = repeated_study(
        tmp_path / "one", labelled_dataset, grid({"gru": 0.6, "lstm": 0.0}), [0], SEARCHED
    )
    found = effects_of(study)
    assert found.effects == () and len(found.unmatched) == 4


def test_sign_flip_is_exact_and_large_samples_use_the_t_test():
    # Differences 1, 2, 3: of the 8 sign patterns, only all + and all - reach |mean| 2.
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0, -1.0]) == pytest.approx(1.0)
    many = list(np.linspace(0.01, 0.02, 12))
    p, p_t, test = paired_test(many)
    assert test == PAIRED_T and p == p_t == pytest.approx(stats.ttest_1samp(many, 0).pvalue)
    assert paired_test([0.0, 0.0, 0.0])[:2] == (1.0, 1.0)
    # Up to 4 pairs the exact test decides: four agreeing seeds cannot reach 0.05.
    p, p_t, test = paired_test([0.1, 0.11, 0.12, 0.13])
    assert test == SIGN_FLIP and p == pytest.approx(2 / 16) and p_t < 0.001


def _effect(differences: list[float], p_adjusted: float) -> Effect:
    p, p_t, test = paired_test(differences)
    mean = float(np.mean(differences))
    return Effect(
        "cbam", False, True, "no attention GRU 8", "block GRU 8", "test_roc_auc",
        tuple((seed,) for seed in range(len(differences))), tuple(differences), mean,
        mean - 0.1, mean + 0.1, p, p_t, test, p_adjusted,
    )  # fmt: skip


def test_an_effect_says_undecided_where_its_pairs_could_not_show_a_difference():
    three = _effect([0.05, 0.06, 0.07], p_adjusted=0.25)  # large and consistent, 3 seeds
    assert three.p_floor == pytest.approx(0.25) and not three.decidable
    assert not three.detected
    assert three.verdict == "undecided: 3 pairs cannot show a difference (p >= 0.25)"
    five = _effect([0.05, 0.06, 0.07, 0.05, 0.06], p_adjusted=0.0004)  # the t-test decides
    assert five.p_floor is None and five.decidable and five.detected
    assert five.verdict == "higher"
    assert _effect([-0.05, -0.06, -0.07, -0.05, -0.06], p_adjusted=0.001).verdict == "lower"
    noisy = _effect([0.05, -0.06, 0.07, -0.05, 0.01], p_adjusted=0.9)
    assert noisy.decidable and noisy.verdict == "undecided: adjusted p above 0.05"
    assert _effect([0.05, 0.06, 0.07, 0.05, 0.06], p_adjusted=0.05).detected  # at most alpha


def test_a_factor_s_effects_give_one_verdict_and_the_console_groups_them_under_it():
    from dataclasses import replace

    from analysis.conclude import effect_lines

    three = _effect([0.05, 0.06, 0.07], p_adjusted=0.25)
    five = _effect([0.05, 0.06, 0.07, 0.05, 0.06], p_adjusted=0.0004)
    noisy = _effect([0.05, -0.06, 0.07, -0.05, 0.01], p_adjusted=0.9)
    cell = replace(noisy, factor="cell", source="gru", target="lstm")
    on_pr = replace(five, metric="test_pr_auc")  # another metric: not in test ROC-AUC's
    effects = Effects((three, cell, five, on_pr), ())
    factors = effects.by_factor()
    assert [(f.factor, len(f.effects)) for f in factors] == [("cbam", 2), ("cell", 1)]
    assert factors[0].verdict == "made a detectable difference in 1 of its 2 comparison(s)"
    assert factors[1].verdict == "is undecided: no adjusted p at most 0.05 (1 comparison(s))"
    alone = Effects((three,), ()).by_factor()[0]
    assert alone.verdict == "is undecided: too few seeds to show a difference (1 comparison(s))"
    lines = effect_lines(effects)
    assert lines[1] == "  cbam made a detectable difference in 1 of its 2 comparison(s):"
    assert lines[2].startswith("    False -> True (no attention GRU 8 to block GRU 8): undecided")
    assert lines[4] == "  cell is undecided: no adjusted p at most 0.05 (1 comparison(s)):"
    assert len(lines) == 6


def test_the_answer_says_when_the_best_row_is_not_told_apart_from_the_next():
    from analysis.answer import _overlap
    from analysis.rows import summarise

    best, close, far = (
        summarise([0.80, 0.82, 0.81]),
        summarise([0.79, 0.81, 0.80]),
        summarise([0.60, 0.61, 0.60]),
    )
    assert _overlap(best, close) and _overlap(close, best)
    assert not _overlap(best, far)
    assert not _overlap(best, summarise([0.5]))  # one draw: no interval, nothing to say
