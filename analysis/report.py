"""A study's results as a Markdown report in the layout of the paper's Table 1.

Gerczuk et al. (MediaEval 2020) report one row per model (conv. attention,
RNN cell, RNN units, validation and test macro ROC-AUC) and their fusions
under it; ours adds a model column, the cells as the model registry writes
them. `write_report` renders every trial of a study that way, with
test bootstrap intervals, a paired bootstrap p-value against the best
single model (chosen by validation ROC-AUC), the fusions found under
``STUDY_DIR/fusions/``, and the paper's published figures beside ours. The
published figures are on the real MTG-Jamendo data; the report states
which data the study used, so a run on the synthetic stand-in is not read
as a reproduction. Plots and the report are also logged to the study's
MLflow parent run.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from analysis.answer import STOPPED_BY_SCHEDULER, answer_section
from analysis.bootstrap import (
    Resampled,
    intervals_of,
    paired_of,
    resample_scores,
    undefined_share,
)
from analysis.comparison import effects_section, forest_panels, parent_metrics, rows_section
from analysis.effects import Effects, factor_effects, write_effects
from analysis.evaluate import check_groundtruth, check_scores, load_matrix
from analysis.importance import (
    ImportanceResult,
    compute_importance,
    importance_section,
    is_importance_plot,
    plot_importance,
    write_importance,
)
from analysis.importance import mlflow_metrics as importance_metrics
from analysis.markdown import DASH, code_span, escape_markdown, markdown_table, percent
from analysis.plots import (
    band_from_curves,
    curve_from_history,
    plot_forest,
    plot_per_tag_roc_auc,
    plot_row_curves,
    plot_validation_curves,
)
from analysis.rows import RowTable, row_results, trial_name, write_rows
from analysis.rungs import read_rungs, rungs_section
from analysis.staging import check_output_dir, staged_folder
from mer_models.config import architecture
from mer_models.data.synthetic import MARKER as SYNTHETIC_MARKER
from mer_models.models.registry import ARCHITECTURE_COLUMNS
from mer_models.training.metrics import Metric
from study_folder.records import (
    DROPPED_STATE,
    FINISHED_STATES,
    Study,
    Trial,
    check_finished,
    finished_trials,
    finite_number,
    load_study,
    ranked_trials,
    read_labels,
)
from tracking.study_run import log_to_study_run

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
CURVES_FILE = "validation_curves.png"
PER_TAG_FILE = "per_tag_test_roc_auc.png"
ROW_CURVES_FILE = "validation_curves_rows.png"  # with repeated seeds: a row's mean and band
FOREST_FILE = "forest.png"  # with repeated seeds: rows' and effects' intervals
REPORT_FILES = (REPORT_FILE, CURVES_FILE, PER_TAG_FILE, ROW_CURVES_FILE, FOREST_FILE)
MLFLOW_ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class Published:
    """A published figure on the real MTG-Jamendo mood/theme test set (split 0), in %."""

    system: str
    test_roc_auc: float | None
    test_pr_auc: float | None
    ours: str | None  # which of our rows stands beside it: "best_single", "fusion" or none


# Macro averages in %. The first two: Gerczuk et al., "Emotion and Themes Recognition in Music
# with Convolutional and Recurrent Attention-Blocks", MediaEval 2020. The baseline: the
# challenge's official results file of the VGG-ish baseline (ROC-AUC-macro 0.725821,
# PR-AUC-macro 0.107734), which `python -m analysis evaluate` reproduces.
PUBLISHED_SUBSET = "moodtheme"  # the MTG-Jamendo subset the published figures are of
PUBLISHED = (
    Published("best single model (Gerczuk et al.)", 73.9, None, "best_single"),
    Published("fusion (Gerczuk et al.)", 75.3, 13.1, "fusion"),
    Published("challenge baseline, VGG-ish (official results)", 72.58, 10.77, None),
)
# The single runs of Table 1 this repository has a source for, by architecture phrase: the
# paper's abstract gives its best single model, block attention with one GRU layer, 73.9.
PUBLISHED_ROWS = {"block GRU 256": 73.9}


@dataclass(frozen=True)
class Row:
    """One line of the results table; scores are fractions, None where unknown."""

    system: str
    architecture: tuple[str, ...]  # the cells under ARCHITECTURE_COLUMNS
    validation_score: float | None  # of the study's selection metric
    test_roc_auc: float | None
    test_roc_auc_ci: tuple[float, float] | None
    test_pr_auc: float | None
    test_pr_auc_ci: tuple[float, float] | None
    epochs: str
    end_state: str
    p_roc_auc: float | None  # paired bootstrap against the best single model
    p_pr_auc: float | None


@dataclass(frozen=True)
class Fusion:
    """A fusion folder's metrics.json and its test predictions."""

    name: str
    dir: Path
    metrics: dict[str, Any]
    predictions: np.ndarray


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote, and whether it reached MLflow."""

    out: Path
    files: tuple[Path, ...]
    mlflow_logged: bool
    rows: RowTable | None = None  # the study's rows (analysis.rows), also in STUDY/rows.json
    effects: Effects | None = None  # its factor effects, also in STUDY/effects.json
    # The records written in the study folder (rows.json, effects.json, importance.json) and
    # the parent run's metrics, named by row, factor and parameter.
    tables: tuple[Path, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportContents:
    """What the report shows, every input read and checked before anything is written."""

    study: Study
    tags: tuple[str, ...]  # the test labels' columns
    order: list[Trial]  # ranked trials best first, then the rest
    best_trial: Trial  # the best single model
    best_row: Row
    trial_rows: list[Row]  # in `order`
    fusion_rows: list[Row]
    per_tag: dict[str, np.ndarray]  # per-tag test ROC-AUC of the best single model and fusion
    rows: RowTable
    effects: Effects
    undefined: float | None  # the share of resamples with a tag of one class only
    importance: ImportanceResult | None
    resamples: int
    seed: int


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if interval is None or value is None:
        return percent(value)
    return f"{percent(value)} [{percent(interval[0])}, {percent(interval[1])}]"


def _p_value(p_roc: float | None, p_pr: float | None) -> str:
    if p_roc is None and p_pr is None:
        return DASH
    return " / ".join(DASH if p is None else f"{p:.3f}" for p in (p_roc, p_pr))


def data_description(study: Study) -> str:
    """Which data the study ran on, from study.json, and whether it is the synthetic stand-in."""
    data = study.data
    windows = (
        f"packed window store {code_span(data.store)}"
        if data.store is not None
        else f"mel-spectrograms {code_span(data.melspecs)}"
    )
    where = (
        f"metadata {code_span(data.metadata)}, {windows}, split {data.split}, "
        f"subset {escape_markdown(str(data.subset))}"
    )
    marker = data.metadata.parent / SYNTHETIC_MARKER
    if marker.is_file():
        return (
            f"**Synthetic data** (the generated stand-in of `mer_models.synthetic`, marker "
            f"{code_span(marker)}): {where}. Our numbers measure the pipeline on a toy task and are not "
            f"comparable with the published figures."
        )
    return (
        f"{where}. This folder is not marked as the synthetic stand-in; the published figures "
        f"are comparable only if it is the real MTG-Jamendo download."
    )


def _check_predictions(path: Path, role: str, shape: tuple[int, ...]) -> np.ndarray:
    return check_scores(load_matrix(path, role), f"{role} {path}", shape)


def _trial_row(
    trial: Trial,
    selection: Metric,
    labels: np.ndarray,
    best: Resampled | None,
    is_best: bool,
    resamples: int,
    seed: int,
) -> Row:
    """A trial's row: the scores its metrics.json logged, intervals from its test predictions
    (on `labels`, its split's); the paired test against the best's scored predictions when on
    its split (`best` None: another split, other tracks)."""
    metrics = trial.metrics
    intervals = paired = None
    if trial.test_predictions is not None:
        scores = _check_predictions(
            trial.test_predictions, f"test predictions of trial {trial.key}", labels.shape
        )
        scored = (
            best
            if is_best and best is not None
            else resample_scores(labels, scores, resamples=resamples, seed=seed)
        )
        intervals = intervals_of(scored)
        logged = finite_number(metrics.get("test_roc_auc"))
        if logged is not None and not math.isclose(
            logged, intervals["ROC-AUC-macro"].point, abs_tol=1e-6
        ):
            log.warning(
                "trial %s: metrics.json logs test ROC-AUC %.6f, its test predictions score "
                "%.6f; the interval is that of the predictions file",
                trial.key,
                logged,
                intervals["ROC-AUC-macro"].point,
            )
        if not is_best and best is not None:
            paired = paired_of(scored, best)
    epochs = metrics.get("epochs_run")
    best_epoch = metrics.get("best_epoch")
    epochs_text = DASH if epochs is None else str(epochs)
    if epochs is not None and best_epoch is not None:
        epochs_text += f" (best {best_epoch})"
    return Row(
        system=f"{trial_name(trial)} (best single)" if is_best else trial_name(trial),
        architecture=architecture(trial.config).cells(missing=DASH),
        validation_score=finite_number(metrics.get(selection.validation)),
        test_roc_auc=finite_number(metrics.get("test_roc_auc")),
        test_roc_auc_ci=None if intervals is None else _bounds(intervals["ROC-AUC-macro"]),
        test_pr_auc=finite_number(metrics.get("test_pr_auc")),
        test_pr_auc_ci=None if intervals is None else _bounds(intervals["PR-AUC-macro"]),
        epochs=epochs_text,
        end_state=str(trial.end_state),
        p_roc_auc=None if paired is None else paired["ROC-AUC-macro"].p_value,
        p_pr_auc=None if paired is None else paired["PR-AUC-macro"].p_value,
    )


def _bounds(interval) -> tuple[float, float] | None:
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return None
    return interval.low, interval.high


def read_fusions(study: Study, shape: tuple[int, ...]) -> list[Fusion]:
    """The fusions under ``STUDY_DIR/fusions/<name>/``, by name; a bad one is a ValueError.

    Hidden folders (a fusion being written) are not fusions yet.
    """
    fusions = []
    for folder in sorted((study.dir / "fusions").glob("*/")):
        if folder.name.startswith("."):
            continue
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            raise ValueError(f"fusion folder {folder} has no metrics.json; remove or redo it")
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{metrics_file}: not valid JSON ({error})") from None
        if not isinstance(metrics, dict) or finite_number(metrics.get("ROC-AUC-macro")) is None:
            raise ValueError(f"{metrics_file}: no finite ROC-AUC-macro in it")
        predictions = _check_predictions(
            folder / "predictions.npy", f"predictions of fusion {folder.name}", shape
        )
        fusions.append(Fusion(folder.name, folder, metrics, predictions))
    return fusions


def _fusion_row(
    fusion: Fusion,
    selection: Metric,
    labels: np.ndarray,
    best: Resampled,
    resamples: int,
    seed: int,
) -> Row:
    scored = resample_scores(labels, fusion.predictions, resamples=resamples, seed=seed)
    metrics = fusion.metrics
    intervals = intervals_of(scored)
    paired = paired_of(scored, best)
    members = metrics.get("members") or []
    return Row(
        system=f"fusion {fusion.name} ({' + '.join(map(str, members))})",
        architecture=(DASH,) * len(ARCHITECTURE_COLUMNS),
        validation_score=finite_number(metrics.get(selection.fused_validation)),
        test_roc_auc=finite_number(metrics.get("ROC-AUC-macro")),
        test_roc_auc_ci=_bounds(intervals["ROC-AUC-macro"]),
        test_pr_auc=finite_number(metrics.get("PR-AUC-macro")),
        test_pr_auc_ci=_bounds(intervals["PR-AUC-macro"]),
        epochs=DASH,
        end_state=f"select {metrics.get('select', DASH)}",
        p_roc_auc=paired["ROC-AUC-macro"].p_value,
        p_pr_auc=paired["PR-AUC-macro"].p_value,
    )


def table_header(selection: Metric) -> tuple[str, ...]:
    """The results table's columns; the validation column is the study's selection metric."""
    return (
        "system",
        *ARCHITECTURE_COLUMNS,
        f"validation {selection.short}",
        "test ROC-AUC [95% CI]",
        "test PR-AUC [95% CI]",
        "epochs run",
        "end state",
        "p vs best (ROC / PR)",
    )


def _row_cells(row: Row) -> tuple[str, ...]:
    return (
        row.system,
        *row.architecture,
        percent(row.validation_score),
        _with_interval(row.test_roc_auc, row.test_roc_auc_ci),
        _with_interval(row.test_pr_auc, row.test_pr_auc_ci),
        row.epochs,
        row.end_state,
        _p_value(row.p_roc_auc, row.p_pr_auc),
    )


def _published_cell(value: float | None) -> str:
    return DASH if value is None else f"{value:g}"  # as published: 73.9, 72.58


def render_markdown(contents: ReportContents, importance: Sequence[str] = ()) -> str:
    """The report's Markdown text: the answer first, then the rows and effects (with
    repeated seeds), the rungs of a race; the per-trial table and curves after them; the
    published figures last, as their own reference table. ``importance`` is the rendered
    section of the searched parameters' importance (its plots are drawn first)."""
    study, rows, effects = contents.study, contents.rows, contents.effects
    rungs = read_rungs(study.dir)
    links = _plot_links(study, rows.repeated)
    sections = (
        _heading(study),
        answer_section(study, rows, effects, rungs),
        importance,
        _scheduler_note(study, rows.repeated),
        _splits_note(study),
        [*rungs_section(rungs, study.selection.title), ""] if rungs else [],
        _repeated_section(rows, effects, links) if rows.repeated else [],
        _data_section(study),
        _trials_section(contents),
        [links[name] + "\n" for name in (CURVES_FILE, PER_TAG_FILE)],
        # The published figures are of the mood/theme subset: another subset has none to stand by.
        _published_section() if study.data.subset == PUBLISHED_SUBSET else [],
    )
    return "\n".join(line for section in sections for line in section).rstrip("\n") + "\n"


def _plot_links(study: Study, repeated: bool) -> dict[str, str]:
    """The report's plots as Markdown images, by file; the row plots only with repeated seeds."""
    title = study.selection.title
    stopped = any(t.end_state in STOPPED_BY_SCHEDULER for t in study.trials)
    plots = [
        (
            f"validation {title} per epoch of every trial"
            + (" (x: stopped by its scheduler)" if stopped else ""),
            CURVES_FILE,
        ),
        ("per-tag test ROC-AUC of the best single model and the best fusion", PER_TAG_FILE),
    ]
    if repeated:
        plots += [
            (
                f"validation {title} per epoch of every row: the mean over its "
                "seeds, in a band from their minimum to their maximum",
                ROW_CURVES_FILE,
            ),
            ("rows' test scores and the factors' effects with their 95% intervals", FOREST_FILE),
        ]
    return {file: f"![{alt}]({file})" for alt, file in plots}


def _heading(study: Study) -> list[str]:
    """The title, and the study's folder, space, trials by end state and kind of data."""
    states = Counter(str(trial.end_state) for trial in study.trials)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return [
        f"# Study {escape_markdown(study.name)}: results in the layout of Table 1 of Gerczuk "
        "et al. (MediaEval 2020)",
        "",
        f"Study folder {code_span(study.dir.resolve())}, search space {code_span(study.space)}; "
        f"{len(study.trials)} trial(s): {counts}." + _data_kind(study),
        "",
    ]


def _repeated_section(rows: RowTable, effects: Effects, links: dict[str, str]) -> list[str]:
    """With repeated seeds: the rows over their seeds, the factors' effects and their plots."""
    return [
        *rows_section(rows),
        "",
        *effects_section(effects),
        "",
        *(links[name] + "\n" for name in (FOREST_FILE, ROW_CURVES_FILE)),
    ]


def _data_section(study: Study) -> list[str]:
    return ["## Data", "", data_description(study), ""]


def _trials_section(contents: ReportContents) -> list[str]:
    """Every trial and fusion, best first, after how their figures were computed."""
    rows = contents.trial_rows + contents.fusion_rows
    lines = [
        "## Trials",
        "",
        _trials_legend(contents),
        "",
        *markdown_table(table_header(contents.study.selection), [_row_cells(row) for row in rows]),
    ]
    if any(_outside(row) for row in rows):
        lines += [
            "",
            "Some intervals do not contain their point estimate: with few positive test tracks "
            "per tag, nearly all resamples score on one side of it, a bias larger than BCa "
            "corrects; read such intervals as rough.",
        ]
    return [*lines, ""]


def _trials_legend(contents: ReportContents) -> str:
    """Where the trials table's values, intervals and p-values come from."""
    selection = contents.study.selection.title
    best = contents.best_row.system.removesuffix(" (best single)")
    return (
        "Every trial, best first. Macro ROC-AUC and PR-AUC in %. Trial values are those of each "
        f"trial's metrics.json (test scores at the epoch of best validation {selection}); "
        "intervals are 95% BCa (bias-corrected and accelerated) "
        f"bootstrap intervals over the test tracks ({contents.resamples} resamples, seed "
        f"{contents.seed}). "
        + _undefined_note(contents.undefined)
        + "p: two-sided paired bootstrap test of the row against the best single model, the "
        f"trial that trained to a best epoch (end state {', '.join(FINISHED_STATES)}) with "
        f"the best validation {selection} "
        f"({escape_markdown(best)}). Fusion rows come "
        f"from `fusions/*/metrics.json`; their validation {selection} is that of the fused "
        "validation scores."
    )


def _data_kind(study: Study) -> str:
    """Whether the figures below are of the synthetic stand-in or of real data."""
    if (study.data.metadata.parent / SYNTHETIC_MARKER).is_file():
        return (
            " Its data is the synthetic stand-in: its figures test the pipeline, they do not "
            "reproduce the paper's."
        )
    return ""


def _published_section() -> list[str]:
    """The paper's and the baseline's figures as a table of their own: real data, never in
    a column beside this study's."""
    return [
        "## The paper, real data (for reference)",
        "",
        "Published figures on the real MTG-Jamendo mood/theme test set (split 0, 56 tags), "
        "macro averages in %: Gerczuk et al., MediaEval 2020, and the challenge's official "
        "baseline results. They are not this study's: compare a study with them only when it "
        "ran on the real data at the paper's budget.",
        "",
        *markdown_table(
            ("system", "test ROC-AUC", "test PR-AUC"),
            [
                (
                    entry.system,
                    _published_cell(entry.test_roc_auc),
                    _published_cell(entry.test_pr_auc),
                )
                for entry in PUBLISHED
            ]
            + [
                (f"single run: {phrase} (Table 1)", _published_cell(value), DASH)
                for phrase, value in PUBLISHED_ROWS.items()
            ],
        ),
        "",
    ]


def _scheduler_note(study: Study, repeated: bool = False) -> list[str]:
    """Which scheduler ran the study, and whether the rows had equal budgets."""
    if not study.scheduler:
        return []
    if study.scheduler == "fifo":
        return ["Scheduler: FIFO; every trial trained until its own stop (equal budgets).", ""]
    if study.scheduler == "race":
        dropped = sum(trial.end_state == DROPPED_STATE for trial in study.trials)
        return [
            f"Scheduler: race; at synchronous rungs it dropped {dropped} trial(s) of rows "
            "significantly worse than the best row (end state race_dropped; see Rungs). The "
            "decisions depend on the trials' results only, not on timing: the same study "
            "decides alike with any number of trials at once. Every other trial trained until "
            "its own stop, so the rows in Rows and Effects had equal budgets.",
            "",
        ]
    stopped = sum(trial.end_state == "asha_stopped" for trial in study.trials)
    repeats = (
        " With repeated seeds the budgets were unequal within rows too: ASHA stops a seed "
        "of a row on its own scores, so a row's mean and interval mix trials trained for "
        "different numbers of epochs, and an effect pairs trials of unequal budgets. The "
        "study's `confirm.yaml` reruns its best rows under FIFO."
        if repeated
        else ""
    )
    return [
        f"Scheduler: ASHA; it stopped {stopped} trial(s) early (end state asha_stopped), so the "
        "rows' budgets differ (column epochs run), and which trials it stopped depends on "
        "which reached a rung first: the same study run again may stop others. For equal "
        "budgets and decisions that do not depend on timing, run the study with "
        f"`--scheduler race` (rows over seeds) or `--scheduler fifo`.{repeats}",
        "",
    ]


def _splits_note(study: Study) -> list[str]:
    """Which trials the single-model view compares, in a study over several splits."""
    if len(study.runs_on_splits) < 2:
        return []
    return [
        f"Splits: every row ran on the splits {', '.join(map(str, study.runs_on_splits))}. "
        "Each trial's intervals are on its own split's test tracks; the best single model, "
        f"the fusions and the paired p-values are of split-{study.data.split} (the study's "
        "first), whose trials share their test tracks. The Rows table and the effects count "
        "every split, pairing trials by seed and split.",
        "",
    ]


def _undefined_note(share: float | None) -> str:
    """How often a resample left a tag without a positive (or negative) test track."""
    if share is None:
        return ""
    return (
        f"In {100.0 * share:.1f}% of the resamples at least one tag had no positive (or no "
        "negative) test track; such a tag is left out of that resample's change from the full "
        "test set, not out of its macro average. "
    )


def _outside(row: Row) -> bool:
    """Whether a row's point estimate lies outside its own bootstrap interval."""
    pairs = ((row.test_roc_auc, row.test_roc_auc_ci), (row.test_pr_auc, row.test_pr_auc_ci))
    return any(
        value is not None and ci is not None and not ci[0] <= value <= ci[1] for value, ci in pairs
    )


def _best_fusion(fusions: list[Fusion], rows: list[Row]) -> tuple[Fusion, Row] | None:
    """The fusion with the best validation score (the only fair pick), else the first one;
    a greedy selection that kept one member alone is no fusion (metrics.json `fused`)."""
    pairs = [
        (fusion, row)
        for fusion, row in zip(fusions, rows, strict=True)
        if fusion.metrics.get("fused", len(fusion.metrics.get("members") or ()) != 1)
    ]
    if not pairs:
        return None
    scored = [pair for pair in pairs if pair[1].validation_score is not None]
    return max(scored, key=lambda pair: pair[1].validation_score) if scored else pairs[0]


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only files an earlier report wrote (so it may be replaced)."""
    return all(
        path.name in REPORT_FILES or is_importance_plot(path.name) for path in folder.iterdir()
    )


def write_report(
    study_dir: str | Path,
    out: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    track: bool = True,
) -> Report:
    """Write report.md and its PNG plots into ``out`` (default ``STUDY_DIR/report``).

    Every input is read and checked, and every file rendered in a staging
    folder, before ``out`` appears; an earlier report there is replaced as a
    whole, a folder holding anything else is refused. With ``track`` the
    files are logged as artifacts (under ``report/``) of the study's MLflow
    parent run.
    """
    study = load_study(study_dir)
    check_finished(study)
    out = check_output_dir(Path(out) if out is not None else study.dir / "report", is_report_folder)
    contents = _gather_contents(study, resamples, seed)
    with staged_folder(out, is_report_folder) as staging:
        _render_into(staging, contents)
    files = tuple(
        path
        for path in sorted(out.iterdir())
        if path.name in REPORT_FILES or is_importance_plot(path.name)
    )
    tables = _write_records(contents)
    metrics = parent_metrics(contents.rows, contents.effects)
    metrics |= importance_metrics(contents.importance)
    logged = (
        log_to_study_run(study, files + tables, metrics, MLFLOW_ARTIFACT_PATH, "report")
        if track
        else False
    )
    return Report(out, files, logged, contents.rows, contents.effects, tables, metrics)


def _gather_contents(study: Study, resamples: int, seed: int) -> ReportContents:
    """Read and check every input the report needs, and compute what it shows."""
    test_labels, tags = read_labels(study.dir, "test")  # the labels the trials were scored on
    labels = check_groundtruth(test_labels, f"test labels of {study.dir}")
    ranked = ranked_trials(study)
    best_trial = _best_single_trial(study)
    order = ranked + [t for t in study.trials if t not in ranked]
    best_scores = _check_predictions(
        best_trial.test_predictions, f"test predictions of trial {best_trial.key}", labels.shape
    )
    best_scored = resample_scores(labels, best_scores, resamples=resamples, seed=seed)
    trial_rows = _trial_rows(study, order, best_trial, best_scored, resamples, seed)
    fusions = read_fusions(study, labels.shape)
    fusion_rows = [
        _fusion_row(f, study.selection, labels, best_scored, resamples, seed) for f in fusions
    ]
    chosen_fusion = _best_fusion(fusions, fusion_rows)
    rows = row_results(study)
    effects = factor_effects(rows) if rows.repeated else Effects((), ())
    per_tag = _per_tag_roc_auc(labels, best_trial, best_scores, chosen_fusion)
    return ReportContents(
        study=study,
        tags=tags,
        order=order,
        best_trial=best_trial,
        best_row=trial_rows[order.index(best_trial)],
        trial_rows=trial_rows,
        fusion_rows=fusion_rows,
        per_tag=per_tag,
        rows=rows,
        effects=effects,
        undefined=undefined_share(labels, resamples, seed),
        importance=compute_importance(study.dir, seed=seed),
        resamples=resamples,
        seed=seed,
    )


def _best_single_trial(study: Study) -> Trial:
    """The finished trial with the best validation score; none is a ValueError."""
    finished = finished_trials(study)
    if not finished:
        raise ValueError(
            f"study {study.dir} has no finished trial to report: none ended in "
            f"{', '.join(FINISHED_STATES)} with predictions and a validation "
            f"{study.selection.title}"
        )
    return finished[0]


def _trial_rows(
    study: Study,
    order: list[Trial],
    best_trial: Trial,
    best_scored: Resampled,
    resamples: int,
    seed: int,
) -> list[Row]:
    """A row per trial in ``order``, each on its own split's test labels; only trials on the
    study's split are paired with the best single model."""
    split_labels = {split: study.labels("test", split)[0] for split in study.runs_on_splits}
    return [
        _trial_row(
            t,
            study.selection,
            split_labels[t.config["split"]],
            best_scored if t.config["split"] == study.data.split else None,
            t is best_trial,
            resamples,
            seed,
        )
        for t in order
    ]


def _per_tag_roc_auc(
    labels: np.ndarray,
    best_trial: Trial,
    best_scores: np.ndarray,
    chosen_fusion: tuple[Fusion, Row] | None,
) -> dict[str, np.ndarray]:
    """Per-tag test ROC-AUC of the best single model and of the best fusion, if any."""
    series = {f"best single: {trial_name(best_trial)}": best_scores}
    if chosen_fusion is not None:
        series[f"fusion {chosen_fusion[0].name}"] = chosen_fusion[0].predictions
    return {name: roc_auc_score(labels, scores, average=None) for name, scores in series.items()}


def _render_into(staging: Path, contents: ReportContents) -> None:
    """Draw the plots and write report.md into the staging folder."""
    section = []
    if contents.importance is not None:
        drawn = plot_importance(contents.importance, staging)
        section = importance_section(contents.importance, drawn, relative_to=staging)
    text = render_markdown(contents, importance=section)
    _draw_trial_plots(staging, contents)
    if contents.rows.repeated:
        _draw_row_plots(staging, contents)
    (staging / REPORT_FILE).write_text(text)


def _draw_trial_plots(staging: Path, contents: ReportContents) -> None:
    """Every trial's validation curve, and the per-tag test ROC-AUC of the best systems."""
    study, selection = contents.study, contents.study.selection
    curves = [
        curve_from_history(
            f"{trial_name(t)}: {t.end_state}", t.history, t.end_state, selection.epoch
        )
        for t in contents.order
    ]
    plot_validation_curves(
        curves,
        staging / CURVES_FILE,
        f"Study {study.name}: validation {selection.title} per epoch",
        selection.title,
    )
    plot_per_tag_roc_auc(
        contents.tags, contents.per_tag, staging / PER_TAG_FILE, "Per-tag test ROC-AUC"
    )


def _draw_row_plots(staging: Path, contents: ReportContents) -> None:
    """With repeated seeds: each row's mean curve in its band, and the forest plot."""
    study, selection, rows = contents.study, contents.study.selection, contents.rows
    bands = [
        band_from_curves(
            f"{row.name} (n={row.n})",
            [curve_from_history(t.key, t.history, None, selection.epoch) for t in row.trials],
        )
        for row in rows.rows
    ]
    plot_row_curves(
        bands,
        staging / ROW_CURVES_FILE,
        f"Study {study.name}: validation {selection.title} per epoch, mean over seeds "
        "(band: min to max)",
        selection.title,
    )
    plot_forest(forest_panels(rows, contents.effects), staging / FOREST_FILE, f"Study {study.name}")


def _write_records(contents: ReportContents) -> tuple[Path, ...]:
    """rows.json, effects.json and importance.json: in the study folder, whatever folder the
    report went to."""
    study_dir = contents.study.dir
    tables = (write_rows(contents.rows, study_dir), write_effects(contents.effects, study_dir))
    if contents.importance is not None:
        tables += (write_importance(contents.importance, study_dir),)
    return tables
