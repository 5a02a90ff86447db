"""A PyTorch model logged in a run and registered as a version of a named model, once.

A study's end may be cut short and resumed at any point, so each step is
found again before it is done: a version of the run tagged with the same
key (the trial's id) is the registered model; else a model the run logged
under that key, registered now; else the model is logged, then registered.
Logging goes through `mlflow.pytorch` in the run; the run is left RUNNING
(its owner ends it once its whole end is recorded).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.names import TRIAL_TAG


@dataclass(frozen=True)
class LoggedModel:
    """Where a model went: its registered name and version, and its model URI."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>


@dataclass(frozen=True)
class PyTorchModel:
    """What `log_pytorch_model` logs: the network, an input example and its output, files
    that travel with it (name -> text), pip requirements and metadata."""

    network: Any  # torch.nn.Module
    example: Any  # numpy array
    output: Any  # numpy array
    files: Mapping[str, str]
    requirements: tuple[str, ...]
    metadata: Mapping[str, Any]


def register_once(
    tracking_uri: str,
    run_id: str,
    name: str,
    key: str,
    model: Callable[[], PyTorchModel],
    descriptions: tuple[str, str],
) -> LoggedModel:
    """The version of `name` that run `run_id` registered for `key` (a trial id), made if
    there is none; `model()` builds what to log, called only when nothing was logged for
    `key` yet. `descriptions`: the registered model's and the version's."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        if version.tags.get(TRIAL_TAG) == key:
            return LoggedModel(name, str(version.version), f"models:/{name}/{version.version}")
    logged = _logged_model(client, run_id, key)
    if logged is None:
        logged = _log(tracking_uri, run_id, key, model())
    return _register(client, name, run_id, key, logged, descriptions)


MODEL_NAME = "best_model"  # the logged model's name in the run


def _logged_model(client, run_id: str, key: str):
    """The model an earlier attempt logged for `key` in run `run_id`, if any."""
    experiment_id = client.get_run(run_id).info.experiment_id
    for model in client.search_logged_models([experiment_id]):
        if (
            model.source_run_id == run_id
            and model.name == MODEL_NAME
            and model.tags.get(TRIAL_TAG) == key
            and str(model.status).endswith("READY")
        ):
            return model
    return None


def _log(tracking_uri: str, run_id: str, key: str, model: PyTorchModel):
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        for name, text in model.files.items():
            (Path(folder) / name).write_text(text)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model.network,
                name=MODEL_NAME,
                signature=infer_signature(model.example, model.output),
                input_example=model.example,
                extra_files=[str(Path(folder) / name) for name in model.files],
                pip_requirements=list(model.requirements),
                # pickle keeps the batch size free (an exported program fixes it to the
                # example's); loading needs the model's package importable
                serialization_format="pickle",
                metadata=dict(model.metadata),
                tags={TRIAL_TAG: key},
            )
    # `start_run` ended the run on leaving: its owner ends it once its end is recorded.
    mlflow.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    return info


def _register(
    client, name: str, run_id: str, key: str, logged, descriptions: tuple[str, str]
) -> LoggedModel:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, logged.model_uri, run_id=run_id, model_id=logged.model_id, tags={TRIAL_TAG: key}
    ).version
    client.update_registered_model(name, description=descriptions[0])
    client.update_model_version(name, version, description=descriptions[1])
    return LoggedModel(name, str(version), f"models:/{name}/{version}")
