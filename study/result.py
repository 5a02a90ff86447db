"""The end of a study: its result on the parent MLflow run, and where its best model is.

After the report and the fusion, the parent run gets the best trial's
metrics, name and config, the fusion's test metrics, the search space and
the summary table; the best trial's network is logged with `mlflow.pytorch`
and registered as ``<study>-best``. The console then shows the best trial's
whole configuration and where its model lies, on disk and in the registry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from analysis.evaluate import metric_names
from analysis.rows import RowTable, row_results
from mer_models.config import TrainConfig, applicable_fields
from study.best_model import log_best_model
from study.mlflow_writer import StudyTracker
from study.records import Study, Trial, finished_trials, finite_number
from tracking.names import BEST_MODEL_TAG, BEST_TRIAL_TAG, format_value, fusion_metric

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
    members = {trial.id for trial in rows.rows[0].trials}
    return next((trial for trial in finished if trial.id in members), finished[0])


def record_result(
    study: Study,
    tracker: StudyTracker,
    space_file: Path,
    table: str,
    fusion_dir: Path | None,
    device: str,
    rows: RowTable | None = None,
) -> list[str]:
    """Log the result and the best model to MLflow; the console lines that say where they are.

    `device`: where the trials trained (the config printed is what acted there)."""
    best = registered_trial(study, rows)
    name = str(best.metrics.get("trial_name") or best.id)
    config = applicable_fields(TrainConfig.from_dict(best.config, source=str(best.dir)), device)
    before = tracker.client.get_run(tracker.parent_run_id).data.tags
    tracker.log_result(
        best.id,
        name,
        config,
        best.metrics,
        fusion_metrics(fusion_dir),
        {space_file.name: space_file.read_text(), SUMMARY_TABLE: table + "\n"},
    )
    if before.get(BEST_TRIAL_TAG) == best.id and before.get(BEST_MODEL_TAG):
        uri = before[BEST_MODEL_TAG]  # a resumed study whose best trial is logged already
    else:
        uri = log_best_model(tracker.tracking_uri, tracker.parent_run_id, study.name, best).uri
        tracker.client.set_tag(tracker.parent_run_id, BEST_MODEL_TAG, uri)
    return [
        f"best trial: {best.id} ({name}), validation {study.selection.title} "
        f"{100 * best.metrics[study.selection.validation]:.1f}, test ROC-AUC "
        f"{100 * best.metrics['test_roc_auc']:.1f}",
        "  config: " + " ".join(f"{key}={format_value(value)}" for key, value in config.items()),
        f"  model:  {best.dir / 'best_model.pt'}",
        f"  MLflow: {uri} (mlflow.pytorch.load_model('{uri}'))",
    ]
