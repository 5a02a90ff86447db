"""The report's first section: what the study found, in words, and what it cannot say.

A researcher opens a report to learn which configuration is best and
whether its factors (attention, cell, size ...) matter. The numbers are in
Rows and Effects; here they are said: the best row with its interval, each
factor's comparisons as a detectable difference or undecided (too few
seeds to show one, or an adjusted p above 0.05; never "no difference"),
with its mean paired difference, interval and Benjamini-Hochberg adjusted
p, and the limits of the design that a reader would otherwise miss (one
seed per row, too few seeds to test, intervals that still reach large
effects, ASHA's unequal budgets, a budget that stopped learning before it
levelled off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analysis.effects import Effect, Effects
from analysis.markdown import escape_markdown
from analysis.rows import RowResult, RowTable, Summary
from study_folder.records import DROPPED_STATE, Study, Trial, finite_number

LATE_SHARE = 0.2  # a best epoch in the last 20% of a trial's budget: learning was cut short
STOPPED_BY_SCHEDULER = ("asha_stopped", DROPPED_STATE)


@dataclass(frozen=True)
class Truncation:
    """Trials whose budget ended while they still improved: their best epoch in the last
    LATE_SHARE of the epochs they were allowed, having run them all."""

    late: tuple[Trial, ...]
    judged: tuple[Trial, ...]  # trials that ran to their budget or their patience
    rows: tuple[str, ...]  # rows most of whose judged trials were late

    @property
    def flagged(self) -> bool:
        return bool(self.judged) and 2 * len(self.late) > len(self.judged)


def truncation(study: Study, table: RowTable) -> Truncation:
    """Which trials and rows a budget cut short (see `Truncation`)."""

    def judged(trial: Trial) -> bool:
        return trial.end_state in ("finished", "early_stopped") and _epochs(trial) is not None

    def late(trial: Trial) -> bool:
        best, run, budget = _epochs(trial)
        return run >= budget and best > (1 - LATE_SHARE) * budget

    considered = [trial for trial in study.trials if judged(trial)]
    late_trials = [trial for trial in considered if late(trial)]
    late_ids = {trial.key for trial in late_trials}
    rows = []
    for row in table.rows:
        mine = [trial for trial in row.trials if judged(trial)]
        if mine and 2 * sum(trial.key in late_ids for trial in mine) > len(mine):
            rows.append(row.name)
    return Truncation(tuple(late_trials), tuple(considered), tuple(rows))


def _epochs(trial: Trial) -> tuple[float, float, float] | None:
    """(best epoch, epochs run, max epochs) of a trial, None if it does not say."""
    best = finite_number(trial.metrics.get("best_epoch"))
    run = finite_number(trial.metrics.get("epochs_run"))
    budget = finite_number(trial.config.get("max_epochs"))
    if best is None or run is None or budget is None or budget <= 0:
        return None
    return best, run, budget


def answer_section(
    study: Study, table: RowTable, effects: Effects, rungs: Sequence[dict[str, Any]] | None
) -> list[str]:
    """The "Answer" section's Markdown lines."""
    lines = ["## Answer", ""]
    if not table.rows:
        return [*lines, "No row finished with predictions and scores: there is no answer yet.", ""]
    lines += [_best_line(table), ""]
    lines += _factor_lines(effects, table)
    limits = _limits(study, table, effects, rungs)
    if limits:
        lines += ["What this study cannot say:", "", *(f"- {limit}" for limit in limits), ""]
    return lines


def _points(summary: Summary) -> str:
    bounds = (
        f" [{100 * summary.low:.1f}, {100 * summary.high:.1f}]"
        if summary.low is not None and summary.high is not None
        else ""
    )
    return f"{100 * summary.mean:.1f}{bounds}"


def _best_line(table: RowTable) -> str:
    best: RowResult = table.rows[0]
    name = escape_markdown(best.name)
    if not table.repeated:
        return (
            f"The best configuration is **{name}**: validation {table.selection.title} "
            f"{_points(best.validation)}, test ROC-AUC {_points(best.test_roc_auc)}, test "
            f"PR-AUC {_points(best.test_pr_auc)} (one trial)."
        )
    runner_up = ""
    if len(table.rows) > 1:
        second = table.rows[1]
        runner_up = (
            f" The next row, {escape_markdown(second.name)}, reached "
            f"{_points(second.validation)} on validation."
        )
        if _overlap(best.validation, second.validation):
            runner_up += (
                " Their intervals overlap: at these seeds the best row is not told apart "
                "from the next."
            )
    return (
        f"The best row is **{name}** (n {best.n}; mean and 95% interval over its trials): "
        f"validation {table.selection.title} {_points(best.validation)}, test ROC-AUC "
        f"{_points(best.test_roc_auc)}, test PR-AUC {_points(best.test_pr_auc)}.{runner_up}"
    )


def _overlap(first: Summary, second: Summary) -> bool:
    bounds = (first.low, first.high, second.low, second.high)
    return None not in bounds and first.low <= second.high and second.low <= first.high


def _factor_lines(effects: Effects, table: RowTable) -> list[str]:
    if not table.repeated:
        return []
    factors = effects.by_factor()
    if not factors:
        return [
            "No two rows differ in one factor alone with paired draws, so no factor's effect "
            "could be tested (see Effects).",
            "",
        ]
    lines = [
        "On test ROC-AUC (paired by draw; p adjusted over every effect tested, Benjamini-Hochberg):",
        "",
    ]
    for factor in factors:
        lines.append(f"- **{escape_markdown(factor.factor)}** {factor.verdict}:")
        for effect in factor.effects:
            lines.append(f"  - {_effect_words(effect)}")
    lines.append("")
    return lines


def _effect_words(effect: Effect) -> str:
    p = "-" if effect.p_adjusted is None else f"{effect.p_adjusted:.2g}"
    change = (
        f"{effect.source} -> {effect.target} ({escape_markdown(effect.from_row)} to "
        f"{escape_markdown(effect.to_row)}, {effect.pairs} pairs)"
    )
    numbers = (
        f"{100 * effect.mean_difference:+.2f} points [{100 * effect.low:+.2f}, "
        f"{100 * effect.high:+.2f}], adjusted p {p}"
    )
    return f"{change}: {effect.verdict}; {numbers}"


def _limits(
    study: Study,
    table: RowTable,
    effects: Effects,
    rungs: Sequence[dict[str, Any]] | None,
) -> list[str]:
    limits = []
    if not table.repeated:
        limits.append(
            "Each configuration ran once, with one seed: a difference between rows mixes the "
            "configuration's effect with the seed's luck, and no interval or test exists. "
            "Repeat the rows (`repeats: 3` or more in the space) or race them "
            "(`--scheduler race`)."
        )
    undecided = [e for e in effects.effects if not e.decidable]
    if undecided:
        fewest = min(e.pairs for e in undecided)
        limits.append(
            f"Whether a factor matters: with {fewest} seeds a row pair cannot show a "
            f"difference, however large (the exact test's p cannot go below "
            f"{max(e.p_floor for e in undecided):.3g} at {fewest} pairs), so an undecided factor is not one that "
            "does not matter. Repeat the rows with 5 or more seeds: the study's `confirm.yaml` "
            "does, for its best rows."
        )
    open_ended = [
        e for e in effects.effects if e.metric == "test_roc_auc" and e.decidable and not e.detected
    ]
    if open_ended:
        low = min(e.low for e in open_ended)
        high = max(e.high for e in open_ended)
        limits.append(
            "An undecided factor is not one shown not to matter: the 95% intervals of its "
            f"test ROC-AUC effects reach from {100 * low:+.2f} to {100 * high:+.2f} points. "
            "More seeds narrow them; the study's `confirm.yaml` proposes them."
        )
    if study.scheduler == "asha":
        stopped = sum(trial.end_state == "asha_stopped" for trial in study.trials)
        limits.append(
            f"ASHA stopped {stopped} trial(s) early, on scores at a rung that depend on which "
            "trial reached it first: the rows had unequal budgets, and the same study run "
            "again may stop others. `--scheduler race` or `fifo` gives equal budgets."
        )
    if rungs:
        dropped = {entry["row"] for entry in rungs if entry.get("decision") == "dropped"}
        if dropped:
            limits.append(
                f"The race dropped {len(dropped)} row(s) at its rungs as significantly worse "
                "than the best; their figures are of the epochs they ran (see Rungs)."
            )
    cut = truncation(study, table)
    if cut.flagged:
        rows = ", ".join(escape_markdown(row) for row in cut.rows) or "none alone"
        limits.append(
            f"The budget cut learning short: {len(cut.late)} of {len(cut.judged)} trial(s) had "
            f"their best epoch in the last {100 * LATE_SHARE:.0f}% of their epochs, still "
            f"improving (rows: {rows}). The rows were compared on how fast they learn, not how "
            "well; raise `max_epochs` (or `--budget paper`)."
        )
    return limits
