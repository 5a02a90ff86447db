"""The end-of-study summary: the paper's Table 1 layout, one row per trial.

Each row names its trial (the id the fusion line and the trial folders use)
and shows every field the search space varied besides the architecture
(``lr``, ``dropout``, ``batch_size``, ``window`` for wide.yaml), and the seed
when the space repeats its rows (``repeats``), so that no two rows look
alike; the last columns say how many epochs each trial ran
and how it ended.
"""

from __future__ import annotations

from mer_models.config import architecture
from mer_models.models.registry import ARCHITECTURE_COLUMNS
from study_folder.records import DROPPED_STATE, Study, ranked_trials
from tracking.names import ARCHITECTURE_FIELDS, format_value

COLUMNS = (
    "trial",
    *ARCHITECTURE_COLUMNS,
    "val ROC-AUC",
    "test ROC-AUC",
    "test PR-AUC",
    "epochs",
    "ended",
)
_BEFORE_SCORES = COLUMNS.index("val ROC-AUC")


def searched_columns(study: Study) -> tuple[str, ...]:
    """The searched fields outside the architecture columns, in the space's order."""
    return tuple(key for key in study.searched if key not in ARCHITECTURE_FIELDS)


def config_columns(study: Study) -> tuple[str, ...]:
    """The config fields the table shows besides the architecture: the searched ones, then
    the seed and split when the rows ran with several (repeats, splits)."""
    return searched_columns(study) + study.draws


def columns(study: Study) -> tuple[str, ...]:
    """The table's header: the validation column is the study's selection metric."""
    extra = config_columns(study)
    scores = (f"val {study.selection.short}", *COLUMNS[_BEFORE_SCORES + 1 :])
    return COLUMNS[:_BEFORE_SCORES] + extra + scores


def table_rows(study: Study) -> list[tuple[str, ...]]:
    """Ranked trials first (best validation ROC-AUC), then those without results."""
    try:
        ranked = ranked_trials(study)
    except ValueError:  # no trial has results to rank (all failed): list them as they are
        ranked = []
    others = [trial for trial in study.trials if trial not in ranked]
    extra = config_columns(study)
    rows = []
    for trial in ranked + others:
        metrics = trial.metrics
        rows.append(
            (
                trial.key,
                *architecture(trial.config).cells(missing="-"),
                *(format_value(trial.config[key]) if key in trial.config else "-" for key in extra),
                _percent(metrics.get(study.selection.validation)),
                _percent(metrics.get("test_roc_auc")),
                _percent(metrics.get("test_pr_auc")),
                str(metrics.get("epochs_run", "-")),
                str(metrics.get("end_state", "unfinished")),
            )
        )
    return rows


def budget_note(study: Study) -> str | None:
    """A line under the table when the scheduler stopped trials early."""
    dropped = [t for t in study.trials if t.end_state == DROPPED_STATE]
    if dropped:
        return (
            f"the race dropped {len(dropped)} of {len(study.trials)} trial(s) at its rungs "
            "(rows significantly worse than the best, rungs.json); every other trial ran to "
            "its own stop"
        )
    stopped = [t for t in study.trials if t.end_state == "asha_stopped"]
    if not stopped:
        return None
    return (
        f"ASHA stopped {len(stopped)} of {len(study.trials)} trial(s) early, so rows ran "
        "different numbers of epochs; for equal budgets (to compare rows, as in the paper) "
        "run the study with --scheduler fifo"
    )


def format_table(study: Study) -> str:
    header = columns(study)
    rows = [header, *table_rows(study)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    note = budget_note(study)
    return "\n".join(lines + ([note] if note else []))


def _percent(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "-"
