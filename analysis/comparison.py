"""The report's comparison of rows over repeated seeds: its Markdown, forest plot and metrics.

`analysis.rows` summarises each row and `analysis.effects` tests what each
factor changes; this module says it the ways a reader sees it: the
report's "Rows" and "Effects" sections, the forest plot's panels, and the
parent MLflow run's metrics named by row and factor (`tracking.names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.effects import (
    ALPHA,
    EXACT_UP_TO,
    SIGN_FLIP,
    Effect,
    Effects,
    sign_flip_floor,
)
from analysis.markdown import DASH, escape_markdown, markdown_table, percent
from analysis.plots import ForestItem, ForestPanel
from analysis.rows import RowResult, RowTable, Summary, trial_name
from mer_models.config import architecture
from mer_models.models.registry import ARCHITECTURE_COLUMNS
from mer_models.training.metrics import Metric
from tracking.names import effect_metric, format_value, row_metric

METRIC_LABELS = {"test_roc_auc": "ROC-AUC", "test_pr_auc": "PR-AUC"}


def mean_interval(summary: Summary) -> str:
    """``73.91 ± 0.52 [73.39, 74.43]`` in %; the mean alone for n = 1."""
    if summary.interval is None:
        return percent(summary.mean)
    half = (summary.interval[1] - summary.interval[0]) / 2
    low, high = summary.interval
    return f"{percent(summary.mean)} ± {100 * half:.2f} [{percent(low)}, {percent(high)}]"


def rows_section(table: RowTable, published: Mapping[str, float] | None = None) -> list[str]:
    """The "Rows" section: Table 1 as mean ± interval per row, with n (and the published
    single-run figure of the row's architecture, where given)."""
    lines = _rows_intro(table.selection)
    header = (
        "row",
        *ARCHITECTURE_COLUMNS,
        "n",
        f"validation {table.selection.short}",
        "test ROC-AUC",
        "test PR-AUC",
        "ensemble test ROC-AUC / PR-AUC",
        "mean best epoch",
        *(("published test ROC-AUC (single run)",) if published is not None else ()),
        "trials",
    )
    lines += markdown_table(header, [_row_cells(row, published) for row in table.rows])
    if published is not None:
        lines += [
            "",
            "Published: the single training run Gerczuk et al. (MediaEval 2020) report for "
            "that architecture, on the real MTG-Jamendo mood/theme test set; ours: the data "
            "described above.",
        ]
    if table.left_out:
        lines += [
            "",
            "In no row (not finished with predictions and scores): "
            + "; ".join(f"{key} ({escape_markdown(why)})" for key, why in table.left_out)
            + ".",
        ]
    return lines


def _rows_intro(selection: Metric) -> list[str]:
    """The "Rows" heading and the paragraph that says what the table's figures are."""
    return [
        "## Rows",
        "",
        "A row is one configuration trained with several seeds (or on several splits); n "
        "counts its trials that "
        "finished with predictions. Macro ROC-AUC and PR-AUC in %: the mean over the row's "
        "trials ± the half-width of its 95% Student-t interval (n - 1 degrees of freedom; "
        "none for n = 1), the interval in brackets. Ensemble: the row's seed ensemble (the "
        "mean of its trials' test predictions) scored on the test labels (split by split, "
        "then averaged, over several splits). Rows are ranked by "
        f"their mean validation {selection.title}.",
        "",
    ]


def _row_cells(row: RowResult, published: Mapping[str, float] | None) -> tuple[str, ...]:
    """One row of the "Rows" table."""
    phrase = architecture(row.config).phrase
    return (
        row.name,
        *architecture(row.config).cells(missing=DASH),
        str(row.n),
        mean_interval(row.validation),
        mean_interval(row.test_roc_auc),
        mean_interval(row.test_pr_auc),
        f"{percent(row.ensemble_test_roc_auc)} / {percent(row.ensemble_test_pr_auc)}",
        DASH if row.mean_best_epoch is None else f"{row.mean_best_epoch:.1f}",
        *(
            (f"{published[phrase]:g}" if phrase in published else DASH,)
            if published is not None
            else ()
        ),
        "; ".join(trial_name(trial) for trial in row.trials),
    )


def _effect_label(effect: Effect) -> str:
    """``cbam false → true``: the values as run names write them."""
    return f"{effect.factor} {format_value(effect.source)} → {format_value(effect.target)}"


def effects_section(effects: Effects) -> list[str]:
    """The "Effects" section: every factor's paired effects, and the row pairs not compared."""
    lines = ["## Effects", "", _effects_intro(effects), ""]
    if effects.effects:
        lines += markdown_table(
            (
                "factor",
                "rows",
                "metric",
                "pairs",
                "difference [95% CI]",
                "p (test)",
                "paired t p",
                "p adj.",
            ),
            [_effect_cells(effect) for effect in effects.effects],
        )
    else:
        lines.append("No two rows that differ in one factor alone share two or more seeds.")
    return lines + _not_paired(effects)


def _effects_intro(effects: Effects) -> str:
    """The paragraph that says how effects are paired and tested."""
    pairs = sorted({effect.pairs for effect in effects.effects})
    floors = ", ".join(f"{sign_flip_floor(n):.4g} at {n} pairs" for n in pairs if n <= EXACT_UP_TO)
    return (
        "For every searched factor, the rows that differ in it alone, their trials paired by "
        "seed and split (the same seed gives both the same data order, masks and initial "
        "draws; the same split, the same tracks). "
        "Difference: to - from in points of %, the mean over the pairs with its 95% t "
        f"interval. p: two-sided, of the exact sign-flip permutation test for up to "
        f"{EXACT_UP_TO} pairs, else of the paired t-test (the other test's p stands beside "
        "either way); p adj.: "
        "Benjamini-Hochberg over all "
        f"{len(effects.effects)} effects in the table; * marks p adj. <= {ALPHA}."
        + (
            f" The sign-flip test cannot go below 2 / 2^n ({floors}): rows with so few "
            "seeds cannot show an effect; give them 5 or more."
            if floors
            else ""
        )
    )


def _effect_cells(effect: Effect) -> tuple[str, ...]:
    """One row of the "Effects" table."""
    return (
        _effect_label(effect),
        f"{effect.from_row} → {effect.to_row}",
        METRIC_LABELS.get(effect.metric, effect.metric),
        str(effect.pairs),
        f"{100 * effect.mean_difference:+.2f} [{100 * effect.low:+.2f}, {100 * effect.high:+.2f}]",
        f"{effect.p_value:.4f} ({'sign flip' if effect.test == SIGN_FLIP else 't'})",
        f"{effect.p_t:.4f}",
        f"{effect.p_adjusted:.4f}" + (" *" if effect.detected else ""),
    )


def _not_paired(effects: Effects) -> list[str]:
    """The "Not paired" list: effects compared on fewer pairs than their rows have, and row
    pairs not compared at all; empty when there are none."""
    partial = [effect for effect in effects.effects if effect.unmatched]
    if not (partial or effects.unmatched):
        return []
    lines = ["", "Not paired:", ""]
    seen = set()
    for effect in partial:
        if (effect.factor, effect.from_row, effect.to_row) in seen:
            continue
        seen.add((effect.factor, effect.from_row, effect.to_row))
        lines.append(
            f"- {effect.factor}: {effect.from_row} → {effect.to_row}: compared on "
            f"{effect.pairs} pairs; {'; '.join(effect.unmatched)}"
        )
    lines += [
        f"- {entry.factor}: {entry.from_row} → {entry.to_row}: not compared, {entry.why}"
        for entry in effects.unmatched
    ]
    return lines


def forest_panels(table: RowTable, effects: Effects) -> list[ForestPanel]:
    """Rows' test scores and the effects, each with its 95% interval, in %."""

    def row_item(row: RowResult, summary: Summary) -> ForestItem:
        scaled = [None if v is None else 100 * v for v in (summary.low, summary.high)]
        return ForestItem(f"{row.name} (n={row.n})", 100 * summary.mean, *scaled)

    panels = [
        ForestPanel(
            "Rows: test macro ROC-AUC, mean and 95% t interval over seeds",
            "test ROC-AUC (%)",
            tuple(row_item(row, row.test_roc_auc) for row in table.rows),
        ),
        ForestPanel(
            "Rows: test macro PR-AUC, mean and 95% t interval over seeds",
            "test PR-AUC (%)",
            tuple(row_item(row, row.test_pr_auc) for row in table.rows),
        ),
    ]
    if effects.effects:
        items = tuple(
            ForestItem(
                f"{_effect_label(effect)} ({effect.from_row} → {effect.to_row}), "
                f"{METRIC_LABELS.get(effect.metric, effect.metric)}",
                100 * effect.mean_difference,
                100 * effect.low,
                100 * effect.high,
                marked=effect.detected,
            )
            for effect in effects.effects
        )
        panels.append(
            ForestPanel(
                f"Effects: paired difference (to - from), 95% t interval; filled: p adj. <= {ALPHA}",
                "difference (points of %)",
                items,
                reference=0.0,
            )
        )
    return panels


def parent_metrics(table: RowTable, effects: Effects) -> dict[str, float]:
    """The parent run's metrics: each row's aggregates and each effect, by row and factor."""
    metrics: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if value is not None:
            metrics[name] = float(value)

    for row in table.rows:
        put(row_metric(row.name, "n"), row.n)
        for key, summary in (
            ("test_roc_auc", row.test_roc_auc),
            ("test_pr_auc", row.test_pr_auc),
            (table.validation_key, row.validation),
        ):
            for statistic, value in summary.to_dict().items():
                put(row_metric(row.name, f"{key}_{statistic}"), value)
        put(row_metric(row.name, "ensemble_test_roc_auc"), row.ensemble_test_roc_auc)
        put(row_metric(row.name, "ensemble_test_pr_auc"), row.ensemble_test_pr_auc)
        put(row_metric(row.name, "mean_best_epoch"), row.mean_best_epoch)
    for effect in effects.effects:
        for statistic, value in (
            ("difference", effect.mean_difference),
            ("low", effect.low),
            ("high", effect.high),
            ("p_value", effect.p_value),
            ("p_adjusted", effect.p_adjusted),
            ("pairs", effect.pairs),
        ):
            name = effect_metric(
                effect.factor, effect.from_row, effect.to_row, f"{effect.metric}_{statistic}"
            )
            put(name, value)
    return metrics
