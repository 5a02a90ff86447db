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

import numpy as np
import torch

from mer_models.config import TrainConfig
from mer_models.models import build_model
from mer_models.training.checkpoint import BEST_MODEL_FILE, load_best_model
from study_folder.records import Trial
from tracking.registry import LoggedModel, PyTorchModel, register_once

log = logging.getLogger(__name__)


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
    `name`, once (`tracking.registry.register_once`): a resumed end never registers a
    second one."""
    return register_once(
        tracking_uri,
        run_id,
        name,
        trial.key,
        lambda: pytorch_model(trial),
        (
            f"The best trial of study {study} by validation macro ROC-AUC. Input: "
            "standardised mel-spectrogram windows, float32 (batch, 1, bands, frames), each "
            "band standardised with extra_files/band_stats.json; output: one logit per tag of "
            "extra_files/tags.txt (apply a sigmoid for scores).",
            f"trial {trial.key}: {trial.metrics.get('trial_name', '')}",
        ),
    )


def pytorch_model(trial: Trial) -> PyTorchModel:
    """What is logged of a trial: its network, an input example and its output, and the
    files its input and output need (tags, band statistics, config)."""
    model, saved = load_trial_model(trial)
    config = saved["config"]
    example = np.zeros((1, 1, len(saved["band_stats"]["mean"]), config["window"]), np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    return PyTorchModel(
        model,
        example,
        output,
        {
            "tags.txt": "\n".join(saved["tags"]) + "\n",
            "band_stats.json": json.dumps(saved["band_stats"]),
            "config.json": json.dumps(config, indent=2),
        },
        (f"torch=={torch.__version__.split('+')[0]}", "numpy"),
        {"trial_id": trial.key, "tags": len(saved["tags"])},
    )
