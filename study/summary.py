"""The end-of-study summary: the paper's Table 1 layout, one row per trial."""

from __future__ import annotations

from mer_models.study_results import Study, architecture, ranked_trials

COLUMNS = (
    "conv. attention",
    "model",
    "RNN cell",
    "RNN units",
    "val ROC-AUC",
    "test ROC-AUC",
    "test PR-AUC",
    "epochs",
    "ended",
)


def table_rows(study: Study) -> list[tuple[str, ...]]:
    """Ranked trials first (best validation ROC-AUC), then those without results."""
    try:
        ranked = ranked_trials(study)
    except ValueError:  # no trial has results to rank (all failed): list them as they are
        ranked = []
    others = [trial for trial in study.trials if trial not in ranked]
    rows = []
    for trial in ranked + others:
        metrics = trial.metrics
        cbam, cell, units = architecture(trial.config)
        crnn = cbam is not None
        rows.append(
            (
                ("block" if cbam else "none") if crnn else "self-attention",
                "CRNN" if crnn else "attention CNN",
                cell or "-",
                units or "-",
                _percent(metrics.get("validation_roc_auc")),
                _percent(metrics.get("test_roc_auc")),
                _percent(metrics.get("test_pr_auc")),
                str(metrics.get("epochs_run", "-")),
                str(metrics.get("end_state", "running")),
            )
        )
    return rows


def format_table(study: Study) -> str:
    rows = [COLUMNS, *table_rows(study)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _percent(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "-"
