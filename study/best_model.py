"""The study's best trial as an MLflow model, registered as ``<study>-best``.

The model is logged with `mlflow.pytorch` into the study's parent run, so
that ``mlflow.pytorch.load_model("models:/<study>-best/<version>")`` gives
the trained network back (the `mer_models` package must be importable: the
model is pickled with its classes). It maps standardised mel-spectrogram
windows, float32 (batch, 1, bands, frames), to one logit per tag; the tag
list, the per-band statistics that standardise its input, and the training
config travel with it as extra files.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mer_models.config import TrainConfig
from mer_models.models import build_model
from mer_models.training.checkpoint import BEST_MODEL_FILE, load_best_model
from study_folder.records import Trial
from tracking.names import TRIAL_TAG

log = logging.getLogger(__name__)

MODEL_NAME = "best_model"  # the logged model's name in the parent run
EXTRA_FILES = ("tags.txt", "band_stats.json", "config.json")


@dataclass(frozen=True)
class LoggedModel:
    """Where the best model went: its registered name and version, and its model URI."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>


def load_trial_model(trial: Trial) -> tuple[torch.nn.Module, dict]:
    """The best epoch's network of a trial (eval mode) and the rest of its best_model.pt."""
    path = trial.dir / BEST_MODEL_FILE
    saved = load_best_model(path)  # tensors and plain values only: a planted pickle is refused
    config = TrainConfig.from_dict(saved["config"], source=str(path))
    n_bands = len(saved["band_stats"]["mean"])
    model = build_model(config, n_tags=len(saved["tags"]), n_bands=n_bands)
    model.load_state_dict(saved["model"])
    return model.eval(), saved


def log_best_model(
    tracking_uri: str, run_id: str, study: str, name: str, trial: Trial
) -> LoggedModel:
    """``trial``'s model logged in the study's run ``run_id`` and registered as a version of
    `name`, once: a version of that run and trial (or a model logged for it whose version was
    never made) is found again, so a resumed end never registers a second one."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        if version.tags.get(TRIAL_TAG) == trial.id:
            return LoggedModel(name, str(version.version), f"models:/{name}/{version.version}")
    logged = _logged_model(client, run_id, trial)
    if logged is None:
        logged = _log_model(tracking_uri, run_id, trial)
    return _register(client, name, study, run_id, trial, logged)


def _logged_model(client, run_id: str, trial: Trial):
    """The model an earlier attempt logged for `trial` in run `run_id`, if any."""
    experiment_id = client.get_run(run_id).info.experiment_id
    for model in client.search_logged_models([experiment_id]):
        if (
            model.source_run_id == run_id
            and model.name == MODEL_NAME
            and model.tags.get(TRIAL_TAG) == trial.id
            and str(model.status).endswith("READY")
        ):
            return model
    return None


def _log_model(tracking_uri: str, run_id: str, trial: Trial):
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model, saved = load_trial_model(trial)
    config = saved["config"]
    example = np.zeros((1, 1, len(saved["band_stats"]["mean"]), config["window"]), np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        extra = Path(folder)
        (extra / "tags.txt").write_text("\n".join(saved["tags"]) + "\n")
        (extra / "band_stats.json").write_text(json.dumps(saved["band_stats"]))
        (extra / "config.json").write_text(json.dumps(config, indent=2))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name=MODEL_NAME,
                signature=infer_signature(example, output),
                input_example=example,
                extra_files=[str(extra / file) for file in EXTRA_FILES],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                # pickle keeps the batch size free (an exported program fixes it to the
                # example's); loading needs `mer_models` importable
                serialization_format="pickle",
                metadata={"trial_id": trial.id, "tags": len(saved["tags"])},
                tags={TRIAL_TAG: trial.id},
            )
    # `start_run` ended the study's run on leaving: it ends once its whole end is recorded.
    mlflow.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    return info


def _register(client, name: str, study: str, run_id: str, trial: Trial, logged) -> LoggedModel:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, logged.model_uri, run_id=run_id, model_id=logged.model_id, tags={TRIAL_TAG: trial.id}
    ).version
    client.update_registered_model(
        name,
        description=f"The best trial of study {study} by validation macro ROC-AUC. Input: "
        "standardised mel-spectrogram windows, float32 (batch, 1, bands, frames), each band "
        "standardised with extra_files/band_stats.json; output: one logit per tag of "
        "extra_files/tags.txt (apply a sigmoid for scores).",
    )
    client.update_model_version(
        name, version, description=f"trial {trial.id}: {trial.metrics.get('trial_name', '')}"
    )
    return LoggedModel(name, str(version), f"models:/{name}/{version}")
