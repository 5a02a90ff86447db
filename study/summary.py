"""The end-of-study summary: the paper's Table 1 layout, one row per trial.

Each row names its trial (the id the fusion line and the trial folders use)
and shows every field the search space varied besides the architecture
(``lr``, ``dropout``, ``batch_size``, ``window`` for wide.yaml), and the seed
when the space repeats its rows (``repeats``), so that no two rows look
alike; the last columns say how many epochs each trial ran
and how it ended (a trial taken over from another study, `reuse`, says so).
"""

from __future__ import annotations

from pathlib import Path

from mer_models.config import architecture
from mer_models.models.registry import ARCHITECTURE_COLUMNS
from study_folder.records import DROPPED_STATE, Study, Trial, ranked_trials
from study_folder.reuse import REUSED_FROM_KEY
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
    extra = config_columns(study)
    try:
        ranked = ranked_trials(study)
    except ValueError:  # no trial has results to rank (all failed): list them as they are
        ranked = []
    others = [trial for trial in study.trials if trial not in ranked]
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
                _ended(trial),
            )
        )
    return rows


def _ended(trial: Trial) -> str:
    ended = str(trial.metrics.get("end_state", "unfinished"))
    return f"{ended}, taken over" if REUSED_FROM_KEY in trial.metrics else ended


def reuse_note(study: Study) -> str | None:
    """A line under the table when trials were taken over from other studies (`reuse`)."""
    taken = [t for t in study.trials if REUSED_FROM_KEY in t.metrics]
    if not taken:
        return None
    # metrics.json names the trial folder it came from: <study>/trials/<key>
    sources = dict.fromkeys(Path(t.metrics[REUSED_FROM_KEY]).parent.parent.name for t in taken)
    return (
        f"{len(taken)} of {len(study.trials)} trial(s) taken over from study {', '.join(sources)} "
        "(reuse): trained there on the same configuration, seed and data, not again here"
    )


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
    notes = [note for note in (budget_note(study), reuse_note(study)) if note]
    return "\n".join(lines + notes)


def _percent(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "-"
