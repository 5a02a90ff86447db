"""Checkpoints that let a run continue exactly where it stopped.

A checkpoint is a folder: `checkpoint.pt` (model, optimizer, early-stopping
state, the best epoch's weights, the input statistics and the config), the
best epoch's `validation_predictions.npy` and, where the run may end (its last
epoch, early stopping, a scheduler's rung), its `test_predictions.npy`, so a
trial stopped from outside still has its best scores, and `summary.json`
(history, best metrics, early-stopping state) for readers that should not
need torch, such as the study driver.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mer_models.files import atomic_write_bytes
from mer_models.npy import load_npy

STATE_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"  # the state and best metrics, readable without torch
VALIDATION_PREDICTIONS = "validation_predictions.npy"
TEST_PREDICTIONS = "test_predictions.npy"
# A run's or trial's best epoch: its weights and what rebuilds and feeds the network.
BEST_MODEL_FILE = "best_model.pt"
BEST_MODEL_KEYS = ("model", "config", "tags", "band_stats")


@dataclass
class EarlyStopping:
    """Best validation score so far and the epochs since it improved."""

    patience: int
    best_score: float = -math.inf
    best_epoch: int = 0
    stale_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record an epoch's score; True when it is a new best."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale_epochs = score, epoch, 0
            return True
        self.stale_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale_epochs >= self.patience


@dataclass
class TrainingState:
    """Everything besides tensors that a restored run needs."""

    early_stopping: EarlyStopping
    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingState:
        return cls(
            early_stopping=EarlyStopping(**values["early_stopping"]),
            epoch=values["epoch"],
            history=list(values["history"]),
        )


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    best_model: dict[str, torch.Tensor],
    extra: dict[str, Any],
    best_predictions: dict[str, np.ndarray],
    summary: dict[str, Any],
) -> Path:
    """Write a checkpoint folder, replacing any previous one only once complete."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state.to_dict(),
            "best_model": best_model,
            **extra,
        },
        staging / STATE_FILE,
    )
    for name, scores in best_predictions.items():
        np.save(staging / name, scores)
    (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    previous = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


class CheckpointDamaged(ValueError):
    """A checkpoint file that does not load as one; the message names the file and why."""


def load_state(path: Path) -> dict[str, Any]:
    """A `checkpoint.pt` (or `best_model.pt`): tensors and plain values only.

    Loaded with `weights_only=True`, so a file planted in a shared folder
    cannot run code: anything but tensors, numbers, strings, lists and dicts
    is refused as damaged.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (zip), EOFError, OSError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointDamaged(f"{path}: does not load as a checkpoint ({reason})") from None
    if not isinstance(saved, dict):
        raise CheckpointDamaged(f"{path}: not a checkpoint (a {type(saved).__name__})")
    return saved


def save_best_model(
    path: Path,
    weights: dict[str, torch.Tensor],
    config: dict[str, Any],
    tags: list[str],
    band_stats: dict[str, Any],
) -> None:
    """Write a `best_model.pt`, whole or not at all (the one writer of the format)."""
    buffer = io.BytesIO()
    torch.save(
        {"model": weights, "config": config, "tags": list(tags), "band_stats": band_stats}, buffer
    )
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_best_model(path: Path) -> dict[str, Any]:
    """A `best_model.pt`'s contents, loaded as tensors and plain values only."""
    saved = load_state(path)
    missing = [key for key in BEST_MODEL_KEYS if key not in saved]
    if missing:
        raise CheckpointDamaged(f"{path}: missing {', '.join(missing)} (not a {BEST_MODEL_FILE})")
    return saved


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The saved tensors and state, and the best epoch's predictions."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint folder (no {STATE_FILE})")
    saved = load_state(path)
    for key in ("model", "optimizer", "state", "best_model", "best_metrics", "band_stats"):
        if key not in saved:
            raise CheckpointDamaged(f"{path}: not a training checkpoint (no '{key}')")
    predictions = {}
    for name in (VALIDATION_PREDICTIONS, TEST_PREDICTIONS):
        if (directory / name).is_file():
            try:
                predictions[name] = load_npy(directory / name, "checkpoint predictions")
            except ValueError as error:
                raise CheckpointDamaged(str(error)) from None
    return saved, predictions
