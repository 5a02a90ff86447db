"""Store-side conventions: the study's experiment, its parent run, nested runs, dataset inputs.

Every function takes an `MlflowClient`, so the driver (which writes one call
at a time from Ray Tune callbacks) and the analysis commands use the same
calls against a file, SQLite or server store.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

from mer_models.training.metrics import DEFAULT_SELECTION
from tracking.names import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STUDY_ID_TAG,
    STUDY_TAG,
    TRIAL_TAG,
)
from tracking.text import escape_markdown
from tracking.ui import comparison_tag

MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_BATCH_METRICS = 1000  # metrics per log_batch call: MLflow's limit


def study_runs_filter(study: str, study_id: str = "") -> str:
    """The MLflow search filter of every run of a study: by its id (a name may be used by
    several studies in one store); by its name for a study older than ids."""
    if study_id:
        return f"tags.`{STUDY_ID_TAG}` = '{study_id}'"
    return f"tags.`{STUDY_TAG}` = '{study}'"


def study_run_filter(study: str, study_id: str = "") -> str:
    """The MLflow search filter that finds a study's parent run."""
    return f"tags.`{ROLE_TAG}` = 'study' and {study_runs_filter(study, study_id)}"


def trial_run_filter(study: str, trial_id: str, study_id: str = "") -> str:
    """The MLflow search filter that finds a trial's run."""
    return f"{study_runs_filter(study, study_id)} and tags.`{TRIAL_TAG}` = '{trial_id}'"


def named_study_filter(study: str) -> str:
    """The parent runs of every study that used the name `study`, whatever its id."""
    return f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'"


def study_experiment(
    client: MlflowClient,
    study: str,
    description: str,
    artifact_location: str | None = None,
    searched: Iterable[str] = (),
    repeats: int = 1,
    metric: str = DEFAULT_SELECTION,
) -> str:
    """The id of the study's experiment, created if new; kind, description and the view of
    its trials set either way.

    The kind tag makes MLflow 3's UI open the experiment on its runs table
    (not on a GenAI dashboard); the description is the space's; the view
    (`tracking.ui`) shows the trials with their scores and `searched` params, grouped by
    row when each row runs with `repeats` > 1 seeds.
    """
    view_key, view = comparison_tag(searched, repeats, metric)
    tags = {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        NOTE_TAG: escape_markdown(description.strip()),
        view_key: view,
    }
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return client.create_experiment(study, artifact_location=artifact_location, tags=tags)
    for key, value in tags.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def create_nested_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    study: str,
    role: str,
    name: str,
    tags: dict[str, str],
    study_id: str = "",
) -> str:
    """A run under the study's parent run, tagged with its role (trial, fusion) and its
    study's name and id; its id."""
    identity = {STUDY_TAG: study, **({STUDY_ID_TAG: study_id} if study_id else {})}
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={PARENT_TAG: parent_run_id, ROLE_TAG: role, **identity, **tags},
    )
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """Metrics in batches of MLflow's limit."""
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH_METRICS])


def log_files_and_metrics(
    client: MlflowClient,
    run_id: str,
    files: Iterable[Path],
    metrics: Mapping[str, float],
    artifact_path: str,
) -> None:
    """Files as artifacts under `artifact_path` (a file logged again replaces its copy) and
    the metrics whose value the run does not hold already: safe to send twice."""
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
    logged = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    log_metrics(
        client,
        run_id,
        [Metric(key, value, now, 0) for key, value in metrics.items() if logged.get(key) != value],
    )


@dataclass(frozen=True)
class NestedRun:
    """What a run nested under a study's parent run records (a fusion's, say)."""

    experiment_id: str
    parent_run_id: str
    study: str
    study_id: str
    role: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def record_nested_run(
    client: MlflowClient, run: NestedRun, folder: Path, same: Iterable[str] = ()
) -> str:
    """`run` as a FINISHED run with `folder`'s files as artifacts, once: a run of the study
    with the role, the tags and the `same` params is found again (and completed if an
    earlier attempt was cut short), else made; its id."""
    filters = [study_runs_filter(run.study, run.study_id), f"tags.`{ROLE_TAG}` = '{run.role}'"]
    filters += [f"tags.`{key}` = '{value}'" for key, value in run.tags.items()]
    found = [
        candidate
        for candidate in client.search_runs([run.experiment_id], " and ".join(filters))
        if all(candidate.data.params.get(key) == run.params.get(key) for key in same)
    ]
    if found and found[0].info.status == "FINISHED":
        return found[0].info.run_id
    values = dict(run.params)
    if found:
        run_id = found[0].info.run_id
        values = {k: v for k, v in values.items() if k not in found[0].data.params}
    else:
        run_id = create_nested_run(
            client,
            run.experiment_id,
            run.parent_run_id,
            run.study,
            run.role,
            run.name,
            run.tags,
            run.study_id,
        )
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in run.metrics.items()],
        params=[Param(k, v) for k, v in values.items()],
    )
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def params(values: Mapping[str, Any]) -> list[Param]:
    """MLflow params, sorted by key, values as text cut to MLflow's limit."""
    return [Param(key, str(value)[:MAX_PARAM]) for key, value in sorted(values.items())]


def dataset_input(
    name: str, source: str, description: Mapping[str, Any], context: str = "training"
) -> DatasetInput:
    """A dataset recorded as a run's input: its name, where it lies and what was read of it.

    The tracks stay on disk; MLflow keeps their location, a digest of the
    description and the description itself (split, subset, track counts)
    as the dataset's profile.
    """
    profile = json.dumps(dict(description), sort_keys=True)
    return DatasetInput(
        Dataset(
            name=name,
            digest=hashlib.sha256(profile.encode()).hexdigest()[:16],
            source_type="local",
            source=json.dumps({"uri": source}),
            profile=profile,
        ),
        tags=[InputTag("mlflow.data.context", context)],
    )
