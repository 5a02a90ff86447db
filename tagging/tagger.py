"""What `--model` names, loaded: the networks, their inputs' statistics, tags and thresholds.

A model source is one of

- a training run folder (``python -m mer_models.train --out DIR``): its
  ``best_model.pt`` and the ``thresholds.txt`` tuned on validation at the end
  of training;
- a study trial folder (``STUDY/trials/<id>``): its ``best_model.pt``, with
  thresholds tuned on its validation predictions against the study's
  validation labels;
- a study (its folder, or its name under the results root): its best finished
  trial by its selection metric on validation, or with ``fusion`` a fusion it wrote
  (``STUDY/fusions/<name>``): the weighted mean of its member trials'
  probabilities, with the fusion's own thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from mer_models.config import TrainConfig
from mer_models.data.scaling import BandStats
from mer_models.data.splits import DataError, DatasetPaths, load_split
from mer_models.models import build_model
from mer_models.npy import load_npy
from mer_models.training.checkpoint import (
    BEST_MODEL_FILE,
    VALIDATION_PREDICTIONS,
    CheckpointDamaged,
    load_best_model,
)
from mer_models.training.thresholds import THRESHOLDS_FILE, read_thresholds, tune_thresholds
from study_folder.records import (
    GROUNDTRUTH_FILES,
    finished_trials,
    load_study,
    read_labels,
    resolve_study,
)

MODEL_FILE = BEST_MODEL_FILE


class ModelSourceError(ValueError):
    """A model folder that cannot be used for tagging (the message names the file)."""


@dataclass(frozen=True)
class TrainedModel:
    """One trained network with what its input needs: window length and band statistics."""

    name: str
    network: nn.Module  # eval mode, on CPU until moved
    config: TrainConfig
    tags: tuple[str, ...]
    stats: BandStats


@dataclass(frozen=True)
class Tagger:
    """The members whose probabilities are averaged (with weights), tags and thresholds."""

    description: str
    members: tuple[TrainedModel, ...]
    weights: tuple[float, ...]
    tags: tuple[str, ...]
    thresholds: np.ndarray  # float64, tag order: a tag passes when probability > threshold


def load_trained_model(folder: str | Path) -> TrainedModel:
    """The network of a run or trial folder's ``best_model.pt``, in eval mode on CPU."""
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise ModelSourceError(
            f"{folder}: no {MODEL_FILE} (expected a training run folder written by "
            f"python -m mer_models.train --out, or a study trial folder)"
        )
    try:
        saved = load_best_model(path)  # tensors and plain values only
    except CheckpointDamaged as error:
        why = str(error).removeprefix(f"{path}: ")
        raise ModelSourceError(f"{path}: unreadable model file ({why})") from None
    try:
        config = TrainConfig.from_dict(saved["config"], source=str(path))
        tags = tuple(saved["tags"])
        network = build_model(config, n_tags=len(tags))
        network.load_state_dict(saved["model"])
    except (ValueError, RuntimeError) as error:
        raise ModelSourceError(f"{path}: the saved model does not load ({error})") from None
    network.eval()
    return TrainedModel(
        folder.name, network, config, tags, BandStats.from_dict(saved["band_stats"])
    )


def load_tagger(
    what: str | Path,
    *,
    results_root: str | Path = "ray_results",
    fusion: str | None = None,
    metadata: DatasetPaths | None = None,
) -> Tagger:
    """Resolve ``--model WHAT`` (see the module docstring) into a Tagger.

    ``metadata`` supplies validation labels where a run folder has no
    thresholds.txt (runs trained before thresholds were stored), or replaces
    the dataset a study recorded.
    """
    folder = Path(what)
    if folder.name == MODEL_FILE and folder.is_file():  # the path a study or a run prints
        folder = folder.parent
    if folder.is_dir() and (folder / MODEL_FILE).is_file():
        study_dir = folder.parent.parent
        trial = folder.parent.name == "trials" and (study_dir / "study.json").is_file()
        if fusion is not None:
            raise ModelSourceError(
                f"--fusion {fusion} names a fusion of a study, but --model {what} is a "
                f"{'trial' if trial else 'training run'} folder; give the study "
                f"({study_dir if trial else 'its folder or name'}) with --fusion, or leave "
                "--fusion out to tag with this model"
            )
        if trial:
            return _trial_tagger(folder, study_dir, metadata)
        return _run_tagger(folder, metadata)
    try:
        study_dir = resolve_study(folder, results_root)
    except ValueError:
        places = dict.fromkeys(str(p) for p in (folder, Path(results_root) / str(what)))
        raise ModelSourceError(
            f"--model {what}: neither a run or trial folder (no {folder / MODEL_FILE}) nor a "
            f"study (no study.json in {' or '.join(places)})"
        ) from None
    if fusion is not None:
        return _fusion_tagger(study_dir, fusion)
    study = load_study(study_dir)
    usable = [trial for trial in finished_trials(study) if (trial.dir / MODEL_FILE).is_file()]
    if not usable:
        raise ModelSourceError(
            f"study {study_dir}: no finished trial with a {MODEL_FILE} to tag with"
        )
    return _trial_tagger(usable[0].dir, study_dir, metadata, best_of_study=True)


def _run_tagger(folder: Path, metadata: DatasetPaths | None) -> Tagger:
    model = load_trained_model(folder)
    path = folder / THRESHOLDS_FILE
    if path.is_file():
        thresholds = _read_thresholds(path, model.tags)
    elif metadata is not None:
        thresholds = _tune_on_dataset(folder, model.tags, metadata)
    else:
        raise ModelSourceError(
            f"{folder}: no {THRESHOLDS_FILE} (a run trained before thresholds were stored); "
            f"give --metadata DIR (the dataset's metadata, with --split and --subset as in "
            f"training) to tune them on its {VALIDATION_PREDICTIONS}"
        )
    return Tagger(f"run {folder}", (model,), (1.0,), model.tags, thresholds)


def _trial_tagger(
    folder: Path, study_dir: Path, metadata: DatasetPaths | None, best_of_study: bool = False
) -> Tagger:
    model = load_trained_model(folder)
    stored = study_dir / GROUNDTRUTH_FILES["validation"]
    if metadata is None and stored.is_file():
        # The labels the study scored its trials on, saved beside study.json.
        labels, tags = read_labels(study_dir, "validation")
        thresholds = _tune(folder, model.tags, labels, tags, str(stored))
    else:  # given a dataset, or a study folder that lost its labels: the split files
        data = metadata if metadata is not None else load_study(study_dir).data
        thresholds = _tune_on_dataset(folder, model.tags, data)
    what = f"best trial {folder.name}" if best_of_study else f"trial {folder.name}"
    return Tagger(f"{what} of study {study_dir}", (model,), (1.0,), model.tags, thresholds)


def _tune_on_dataset(folder: Path, tags: tuple[str, ...], data: DatasetPaths) -> np.ndarray:
    """`_tune` with the validation labels of a dataset's split files."""
    try:
        validation = load_split(data, "validation")
    except DataError as error:
        raise ModelSourceError(
            f"{folder}: cannot read the validation labels to tune thresholds ({error}); "
            f"give --metadata DIR"
        ) from None
    return _tune(folder, tags, validation.labels, validation.tags, str(validation.file))


def _tune(
    folder: Path,
    tags: tuple[str, ...],
    labels: np.ndarray,
    label_tags: tuple[str, ...],
    label_source: str,
) -> np.ndarray:
    """Per-tag thresholds from a folder's validation predictions and validation labels."""
    path = folder / VALIDATION_PREDICTIONS
    if not path.is_file():
        raise ModelSourceError(f"{folder}: no {VALIDATION_PREDICTIONS} to tune thresholds on")
    if label_tags != tags:
        raise ModelSourceError(
            f"{folder}: the model's {len(tags)} tags differ from the {len(label_tags)} "
            f"tags of {label_source}; give the --metadata, --split and --subset it trained on"
        )
    try:
        scores = load_npy(path, "validation predictions")
    except ValueError as error:
        raise ModelSourceError(str(error)) from None
    if scores.shape != labels.shape:
        raise ModelSourceError(
            f"{path}: shape {scores.shape}, but {label_source} has (tracks, tags) = "
            f"{labels.shape}; give the --metadata, --split and --subset it trained on"
        )
    return tune_thresholds(labels, scores)


def _fusion_tagger(study_dir: Path, name: str) -> Tagger:
    folder = study_dir / "fusions" / name
    summary_file = folder / "metrics.json"
    if not summary_file.is_file():
        available = sorted(p.name for p in (study_dir / "fusions").glob("*") if p.is_dir())
        raise ModelSourceError(
            f"study {study_dir}: no fusion {name!r} ({summary_file} not found); "
            f"fusions there: {', '.join(available) or 'none'} (python -m analysis fuse writes them)"
        )
    summary = json.loads(summary_file.read_text())
    members, weights = summary.get("members"), summary.get("weights")
    if not members or not isinstance(weights, list) or len(weights) != len(members):
        raise ModelSourceError(f"{summary_file}: no members and weights of the same length")
    trials = study_dir / "trials"
    missing = [member for member in members if not (trials / member / MODEL_FILE).is_file()]
    if missing:
        raise ModelSourceError(
            f"fusion {folder}: member(s) {', '.join(missing)} have no {MODEL_FILE} in {trials} "
            f"(an external system's scores, or a trial saved without weights); it cannot tag "
            f"new audio"
        )
    models = tuple(load_trained_model(trials / member) for member in members)
    tags = models[0].tags
    for model in models[1:]:
        if model.tags != tags:
            raise ModelSourceError(f"fusion {folder}: members {members} differ in their tags")
    thresholds = _read_thresholds(folder / THRESHOLDS_FILE, tags)
    return Tagger(
        f"fusion {name} of study {study_dir} ({', '.join(members)})",
        models,
        tuple(float(w) for w in weights),
        tags,
        thresholds,
    )


def _read_thresholds(path: Path, tags: tuple[str, ...]) -> np.ndarray:
    try:
        return read_thresholds(path, tags)[1]
    except ValueError as error:
        raise ModelSourceError(str(error)) from None
