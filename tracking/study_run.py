"""Find a study's MLflow parent run after the fact, where the study driver made it.

study.json records the tracking URI the driver used; the parent run is
found the way the driver finds it on resume (`study_run_filter`): in the
experiment named after the study, the run tagged ``mer.role = study`` and
``mer.study_id = <study.json's study_id>`` (``mer.study = <name>`` for a study
older than ids). Analysis results (reports, fusions) are logged
there after the fact, so a store that cannot be reached, or a study run
without tracking, is a warning and not an error: the files on disk are
the results, MLflow is their index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tracking.names import ROLE_TAG, STUDY_ID_TAG, STUDY_TAG
from tracking.store import TrackingStore

log = logging.getLogger(__name__)


class StudyFolder(Protocol):
    """What is read of a study folder (`study_folder.records.Study` is one): tracking imports no study."""

    name: str
    dir: Path
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study_id: str


@dataclass(frozen=True)
class StudyRun:
    """The MLflow client of a study's store, its experiment and its parent run."""

    client: Any  # mlflow.MlflowClient; imported lazily (about a second of start-up)
    experiment_id: str
    parent_run_id: str


def log_to_study_run(
    study: StudyFolder,
    files: Sequence[Path],
    metrics: Mapping[str, float],
    artifact_path: str,
    what: str,
) -> bool:
    """Log `files` (under `artifact_path`) and `metrics` to the study's parent run, once
    (`tracking.runs.log_files_and_metrics`); False, with a warning, when there is no run or
    the store fails: the files on disk are the results, MLflow is their index. `what`
    names the files in the warning ("report", "importance")."""
    from mlflow.exceptions import MlflowException

    from tracking.runs import log_files_and_metrics

    study_run = find_study_run(study)
    if study_run is None:
        return False
    try:
        log_files_and_metrics(
            study_run.client, study_run.parent_run_id, files, metrics, artifact_path
        )
    except (MlflowException, OSError) as error:
        log.warning(
            "%s written but not logged to MLflow run %s: %s", what, study_run.parent_run_id, error
        )
        return False
    return True


def find_study_run(study: StudyFolder) -> StudyRun | None:
    """The study's parent run in the store named by study.json; None (logged why) if not found."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tracking.runs import study_run_filter

    uri = study.tracking_uri
    if not uri:
        log.warning("%s records no MLflow tracking_uri: nothing is logged to MLflow", study.dir)
        return None
    missing = TrackingStore(uri).missing_file()
    if missing is not None:
        log.warning(
            "the study's MLflow store %s (from %s) does not exist: nothing is logged to MLflow",
            missing,
            study.dir / "study.json",
        )
        return None
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(study.name)
        experiment_id = experiment.experiment_id if experiment is not None else study.experiment_id
        found = []
        if experiment_id:
            found = client.search_runs(
                [experiment_id], study_run_filter(study.name, study.study_id)
            )
    except (MlflowException, OSError) as error:
        log.warning("MLflow store %s cannot be read (%s): nothing is logged to MLflow", uri, error)
        return None
    if not found:
        key, value = (STUDY_ID_TAG, study.study_id) if study.study_id else (STUDY_TAG, study.name)
        log.warning(
            "no MLflow run tagged %s=study, %s=%s in store %s: nothing is logged to MLflow",
            ROLE_TAG,
            key,
            value,
            uri,
        )
        return None
    run_id = found[0].info.run_id
    if study.parent_run_id and run_id != study.parent_run_id:
        log.warning(
            "study.json of %s names parent run %s, the store's tags name %s; using the latter",
            study.dir,
            study.parent_run_id,
            run_id,
        )
    return StudyRun(client, experiment_id, run_id)
