"""The end of a study: fuse its best trials, write its report, and its confirm.yaml.

The study driver calls `conclude_study` once every trial has ended, so a
finished study comes with the paper's fusion of its two best models, the
Table 1 report (which shows that fusion; with repeated seeds also its rows'
intervals and factors' effects, rows.json and effects.json), and
``confirm.yaml``: its best rows as a space that repeats them under FIFO
(`analysis.confirm`). Fusing needs that many
finished trials; with fewer the fusion is skipped and the report says
what there is. A study resumed after it concluded keeps a fusion whose
members are still the best trials, and replaces one whose members are not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from analysis.confirm import CONFIRM_FILE, CONFIRM_TOP, confirm_plan, write_confirm
from analysis.effects import Effects
from analysis.fuse_study import StudyFusion, fuse_study, fusion_name
from analysis.report import REPORT_FILE, Report, write_report
from analysis.rows import RowTable, Summary
from study_folder.records import Study, finished_trials, load_study

log = logging.getLogger(__name__)

FUSE_TOP = 2  # the paper fuses its best models; the default study fuses its top two


@dataclass(frozen=True)
class Conclusion:
    """What `conclude_study` did, and a line or two for each part."""

    report: Report
    fusion: StudyFusion | None  # None when skipped or already up to date
    fusion_dir: Path | None  # the fusion of the top trials, new or up to date; None if skipped
    lines: tuple[str, ...]


def _fusion_members(folder: Path) -> list[str] | None:
    """The members recorded in a fusion folder's metrics.json, None if there is none."""
    try:
        members = json.loads((folder / "metrics.json").read_text()).get("members")
    except (OSError, ValueError, AttributeError):
        return None
    return members if isinstance(members, list) else None


def best_row_line(table: RowTable) -> str:
    """``best row: NAME (n 3): validation ROC-AUC 80.1 [79.5, 80.7], test ROC-AUC ...``."""
    row = table.rows[0]

    def said(title: str, summary: Summary) -> str:
        return f"{title} {_points(summary)}"

    return f"best row: {row.name} (n {row.n}, mean and 95% interval): " + ", ".join(
        (
            said(f"validation {table.selection.short}", row.validation),
            said("test ROC-AUC", row.test_roc_auc),
            said("test PR-AUC", row.test_pr_auc),
        )
    )


def _points(summary: Summary) -> str:
    interval = summary.interval
    bounds = f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else ""
    return f"{100 * summary.mean:.1f}{bounds}"


def row_lines(table: RowTable) -> list[str]:
    """A line per row, best first: its n and its means with their 95% intervals."""
    return ["rows (mean [95% interval] over each row's trials):"] + [
        f"  {row.name} (n {row.n}): validation {table.selection.short} "
        f"{_points(row.validation)}, test ROC-AUC {_points(row.test_roc_auc)}"
        for row in table.rows
    ]


def effect_lines(effects: Effects) -> list[str]:
    """The effects on test ROC-AUC by factor: what the factor's effects say together, then a
    line per effect: the change, its verdict in words, its mean paired difference with its
    interval, and the adjusted p."""
    factors = effects.by_factor()
    if not factors:
        return []
    lines = ["effects on test ROC-AUC (paired by draw; p adjusted over all effects):"]
    for factor in factors:
        lines.append(f"  {factor.factor} {factor.verdict}:")
        lines += [
            f"    {effect.source} -> {effect.target} ({effect.from_row} to {effect.to_row}): "
            f"{effect.verdict}; {100 * effect.mean_difference:+.2f} points "
            f"[{100 * effect.low:+.2f}, {100 * effect.high:+.2f}], p adj. "
            + ("-" if effect.p_adjusted is None else f"{effect.p_adjusted:.3g}")
            for effect in factor.effects
        ]
    return lines


def conclude_study(
    study_dir: str | Path,
    fuse_top: int = FUSE_TOP,
    resamples: int = 1000,
    seed: int = 0,
    confirm_top: int = CONFIRM_TOP,
    track: bool = True,
) -> Conclusion:
    """Fuse the top ``fuse_top`` finished trials (when that many finished), then the report,
    then confirm.yaml of the top ``confirm_top`` rows. With ``track``, the fusion and the
    report are logged to the study's MLflow run here; the study driver logs them itself
    (`study.result`), through its queue."""
    study = load_study(study_dir)
    fusion, fusion_dir, fusion_line = _fuse_top(study, fuse_top, resamples, seed, track)
    report = write_report(study.dir, resamples=resamples, seed=seed, track=track)
    lines = [fusion_line, *_report_lines(report), _update_confirm(study, report, confirm_top)]
    return Conclusion(report, fusion, fusion_dir, tuple(lines))


def _fuse_top(
    study: Study, fuse_top: int, resamples: int, seed: int, track: bool
) -> tuple[StudyFusion | None, Path | None, str]:
    """The fusion of the top ``fuse_top`` finished trials, unless too few finished or the
    folder already holds theirs: the new fusion (None if none), its folder and a line."""
    finished = finished_trials(study)
    if len(finished) < fuse_top:
        return (
            None,
            None,
            f"fusion skipped: {len(finished)} trial(s) finished with predictions; fusing the "
            f"top {fuse_top} needs {fuse_top}",
        )
    members = [trial.key for trial in finished[:fuse_top]]
    out = study.dir / "fusions" / fusion_name("topk", fuse_top)
    if _fusion_members(out) == members:
        return None, out, f"fusion of {' + '.join(members)}: {out} (already there)"
    fusion = fuse_study(
        study.dir, fuse_top, out=out, resamples=resamples, seed=seed, replace=True, track=track
    )
    return fusion, out, _fusion_line(fusion, members)


def _fusion_line(fusion: StudyFusion, members: list[str]) -> str:
    """``fusion of A + B: FOLDER (test ROC-AUC 80.1, PR-AUC 12.3; MLflow run ID)``, or what
    the fusion kept instead when it fused nothing."""
    metrics = fusion.result.metrics
    return (
        (
            f"fusion of {' + '.join(members)}: {fusion.out} (test ROC-AUC "
            if fusion.result.fused
            else f"{fusion.result.note}: {fusion.out} (its test ROC-AUC "
        )
        + f"{100 * metrics['ROC-AUC-macro']:.1f}, PR-AUC {100 * metrics['PR-AUC-macro']:.1f}"
        + (f"; MLflow run {fusion.mlflow_run_id})" if fusion.mlflow_run_id else ")")
    )


def _report_lines(report: Report) -> list[str]:
    """Where the report is; with repeated seeds also its rows, effects and best row."""
    lines = [
        f"report: {report.out / REPORT_FILE}"
        + (" (also in the study's MLflow run, under report/)" if report.mlflow_logged else "")
    ]
    if report.rows is not None and report.rows.repeated:
        lines += row_lines(report.rows)
        if report.effects is not None:
            lines += effect_lines(report.effects)
        lines.append(best_row_line(report.rows))
    return lines


def _update_confirm(study: Study, report: Report, confirm_top: int) -> str:
    """Write confirm.yaml of the top ``confirm_top`` rows where there is something to
    confirm, else remove an earlier one; a line saying which."""
    if report.rows is None or not report.rows.rows:
        return "confirm.yaml skipped: no row finished with predictions and scores"
    plan = confirm_plan(study, report.rows, report.effects, confirm_top)
    if not plan.rows:
        (study.dir / CONFIRM_FILE).unlink(missing_ok=True)  # an earlier end's proposal
        return f"confirm: {plan.why}"
    confirm = write_confirm(study, report.rows, repeats=plan.repeats, rows=plan.rows)
    return f"confirm: {confirm} ({plan.why}): python study/run.py --space {confirm}"
