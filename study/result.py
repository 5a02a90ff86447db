"""The end of a study in MLflow: its fusion run, report, result and best model, each once.

After the fusion and the report are on disk, the parent run gets the
fusion's nested run, the report's files and the comparison's metrics, the
best trial's metrics, name and config, the fusion's test metrics, the
recorded search space and the summary table; the best trial's network is
logged with `mlflow.pytorch` and registered. Every write goes through the
tracker's queue (one writer, retried while the store is unreachable, and
bounded by the study's end timeout), and each is decided by what the store
holds, so an end cut short by a kill, a signal or an outage is completed by
`--resume` without a run or a model version twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from analysis.conclude import Conclusion
from analysis.evaluate import metric_names
from analysis.fuse_study import record_fusion_run
from analysis.report import MLFLOW_ARTIFACT_PATH
from analysis.rows import RowTable, row_results
from mer_models.config import TrainConfig, applicable_fields
from study.best_model import log_best_model
from study_folder.records import Study, Trial, finished_trials, finite_number
from tracking.names import BEST_MODEL_TAG, format_value, fusion_metric
from tracking.runs import log_files_and_metrics
from tracking.study_tracker import StudyTracker

log = logging.getLogger(__name__)

SUMMARY_TABLE = "summary.txt"


def fusion_metrics(fusion_dir: Path | None) -> dict[str, float]:
    """A fusion folder's official test metrics under their MLflow names; {} without one."""
    if fusion_dir is None or not (fusion_dir / "metrics.json").is_file():
        return {}
    values = json.loads((fusion_dir / "metrics.json").read_text())
    metrics = {fusion_metric(name): finite_number(values.get(name)) for name in metric_names()}
    return {name: value for name, value in metrics.items() if value is not None}


def registered_trial(study: Study, rows: RowTable | None = None) -> Trial:
    """The trial whose model is registered: the best trial (by validation) of the best row
    when the rows have several draws (the row is the answer, a lucky seed of another row
    is not), else the best trial. `rows`: the study's, when the report has them."""
    finished = finished_trials(study)
    rows = rows if rows is not None else row_results(study)
    if not rows.repeated:
        return finished[0]
    members = {trial.key for trial in rows.rows[0].trials}
    return next((trial for trial in finished if trial.key in members), finished[0])


@dataclass
class EndRecord:
    """What the study's end records in MLflow; `uri` is the best model's once registered."""

    best: Trial
    name: str  # the best trial's run name
    config: dict
    of_best_row: bool = False  # chosen as the best trial of the best row (repeated rows)
    uri: str | None = None
    fusion_run: str | None = None
    notes: list[str] = field(default_factory=list)


def queue_end(
    study: Study,
    tracker: StudyTracker,
    conclusion: Conclusion,
    space: tuple[str, str],
    table: str,
    device: str,
) -> EndRecord:
    """Queue the end's writes on the tracker, in order; `tracker.finish_study` then sends
    them and ends the parent run. `space`: the recorded space's file name and text (what
    the trials ran, whatever the file holds now); `device`: where the trials trained (the
    config shown is what acted there)."""
    rows = conclusion.report.rows
    best = registered_trial(study, rows)
    config = applicable_fields(TrainConfig.from_dict(best.config, source=str(best.dir)), device)
    record = EndRecord(
        best,
        str(best.metrics.get("trial_name") or best.key),
        config,
        of_best_row=rows is not None and rows.repeated,
    )
    if conclusion.fusion_dir is not None:
        tracker.queue(
            f"the run of fusion {conclusion.fusion_dir.name}",
            _fusion_run,
            tracker,
            study,
            conclusion.fusion_dir,
            record,
        )
    report = conclusion.report
    tracker.queue("the report", _report, tracker, report.files + report.tables, report.metrics)
    tracker.log_result(
        best.key,
        record.name,
        config,
        best.metrics,
        fusion_metrics(conclusion.fusion_dir),
        {space[0]: space[1], SUMMARY_TABLE: table + "\n"},
    )
    tracker.queue("the best model", _best_model, tracker, study, record)
    return record


def result_lines(study: Study, record: EndRecord, tracking_uri: str) -> list[str]:
    """Where the registered trial's model is (with the line that loads it from any folder),
    and its whole configuration. It is named the best trial of the best row where it was
    chosen so: the table above ranks every trial and may show another first (a lucky seed
    of another row)."""
    best = record.best
    chosen = "best trial of the best row" if record.of_best_row else "best trial"
    return [
        f"{chosen}: {best.key} ({record.name}), validation {study.selection.title} "
        f"{100 * best.metrics[study.selection.validation]:.1f}, test ROC-AUC "
        f"{100 * best.metrics['test_roc_auc']:.1f}",
        "  config: "
        + " ".join(f"{key}={format_value(value)}" for key, value in record.config.items()),
        f"  model:  {best.dir / 'best_model.pt'}",
        f"  MLflow: {record.uri} (mlflow.set_tracking_uri('{tracking_uri}'); "
        f"mlflow.pytorch.load_model('{record.uri}'))",
    ]


def _fusion_run(
    tracker: StudyTracker, study: Study, folder: Path, record: EndRecord, again: bool
) -> None:
    record.fusion_run = record_fusion_run(
        tracker.client, tracker.experiment_id, tracker.parent_run_id, study, folder
    )


def _report(
    tracker: StudyTracker, files: tuple[Path, ...], metrics: dict[str, float], again: bool
) -> None:
    """The report's files under ``report/`` and the comparison's metrics, once."""
    log_files_and_metrics(
        tracker.client, tracker.parent_run_id, files, metrics, MLFLOW_ARTIFACT_PATH
    )


def _best_model(tracker: StudyTracker, study: Study, record: EndRecord, again: bool) -> None:
    model = log_best_model(
        tracker.tracking_uri, tracker.parent_run_id, study.name, tracker.model_name, record.best
    )
    tracker.tag_study_run(BEST_MODEL_TAG, model.uri)
    record.uri = model.uri
