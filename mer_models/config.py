"""The one typed configuration of a training run.

Its field names are the project's vocabulary: the YAML search spaces, the
trainer, the MLflow params and the report all use them. Built from plain
mappings (YAML, Ray Tune's config dicts) at the edge, validated on
construction, and passed inward as keyword arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mer_models.models.registry import (
    ARCHITECTURE_FIELDS,
    MODEL_FIELDS,
    MODEL_NAMES,
    Architecture,
    describe,
    model_entry,
)

CELLS = ("gru", "lstm")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one trial. Defaults are the paper's protocol."""

    model: str = "crnn"  # a name in mer_models.models.registry: crnn | attention_cnn
    cell: str = "gru"  # recurrent cell of the CRNN head: gru | lstm
    units: int = 256  # hidden units per recurrent layer
    layers: int = 1  # recurrent layers (the paper: 1 x 256 or 2 x 128)
    cbam: bool = True  # CBAM attention in every residual block
    width: int = 64  # channels of the first ResNet stage (64 = ResNet-18)
    dropout: float = 0.0  # on the attended vector, before the output layer
    prior_bias: bool = True  # output biases start at the training tags' log-odds
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 32
    # Tracks per evaluation batch (each gives eval_crops windows). Inference
    # keeps no activations for backward, so 4x the training batch fits where
    # training does and cuts the validation pass's kernel launches 4-fold.
    eval_batch_size: int = 128
    window: int = 500  # frames per input window (46.9 frames/s: 10.7 s)
    max_epochs: int = 100
    patience: int = 20  # epochs without a better validation selection metric
    seed: int = 0
    split: int = 0  # the dataset's official split it trains and is scored on (split-N)
    eval_crops: int = 1  # 1: the centred window; K > 1: mean of K spread windows
    time_mask: int = 10  # SpecAugment: max width of the time mask, frames
    freq_mask: int = 10  # SpecAugment: max width of the frequency mask, bands
    workers: int = 2  # DataLoader worker processes (0: load in the main process)
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    bf16: bool = True  # bf16 autocast, on CUDA only
    channels_last: bool = True  # channels_last memory format (faster convs on CPU and CUDA)
    cuda_graphs: bool = True  # each training step replayed as one CUDA graph, on CUDA only

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _FIELD_TYPES[f.name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                continue
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"config field '{f.name}' must be {expected.__name__}, "
                    f"got {value!r} ({type(value).__name__})"
                )
        _check_choice("model", self.model, MODEL_NAMES)
        _check_choice("cell", self.cell, CELLS)
        for name in (
            "units",
            "layers",
            "width",
            "batch_size",
            "eval_batch_size",
            "window",
            "max_epochs",
            "eval_crops",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"config field '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "time_mask", "freq_mask", "workers", "threads", "seed", "split"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field '{name}' must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"config field 'dropout' must be in [0, 1), got {self.dropout}")
        if not self.lr > 0.0:
            raise ValueError(f"config field 'lr' must be > 0, got {self.lr}")
        if self.weight_decay < 0.0:
            raise ValueError(f"config field 'weight_decay' must be >= 0, got {self.weight_decay}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a flat mapping; unknown keys are an error naming the valid ones."""
        if not isinstance(values, dict):
            raise ValueError(
                f"{source}: expected a mapping of config fields, got {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(
                f"{source}: unknown config field(s) {', '.join(unknown)}; "
                f"valid fields are: {', '.join(FIELD_NAMES)}"
            )
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
_FIELD_TYPES = {f.name: type(f.default) for f in fields(TrainConfig)}


# Switches the trainer applies on CUDA only (trainer.py, training/step.py).
CUDA_ONLY_FIELDS = ("bf16", "cuda_graphs")
# How a run executes rather than what it trains: a trial planned again matches its record
# whatever these say (a CPU study records the CUDA-only ones false, and studies before
# channels_last ran on CPUs recorded it false there too).
EXECUTION_FIELDS = (*CUDA_ONLY_FIELDS, "channels_last")


def applicable_fields(config: TrainConfig, device: str) -> dict[str, Any]:
    """The fields the config's model reads, as they act on `device` ("cpu" or "cuda"), and
    the device: what a run records as its hyperparameters. Off CUDA the CUDA-only
    switches are recorded false, since nothing of theirs runs."""
    values = config.to_dict()
    reads = model_entry(config.model).fields
    for name in MODEL_FIELDS:
        if name not in reads:
            del values[name]
    if device != "cuda":
        values.update(dict.fromkeys(CUDA_ONLY_FIELDS, False))
    return {**values, "device": device}


def architecture(values: Mapping[str, Any]) -> Architecture:
    """The registry's description of the model a config mapping names (a trial's config.json,
    a run's parameters): its run-name phrase and table cells. Only the architecture fields
    are read; those missing take the defaults."""
    known = {key: values[key] for key in ARCHITECTURE_FIELDS if key in values}
    return describe(TrainConfig.from_dict(known, source="architecture"))


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(
            f"config field '{name}' must be one of {', '.join(allowed)}, got {value!r}"
        )


def load_config(path: str | Path) -> TrainConfig:
    """Read a flat YAML mapping of config fields; missing fields keep their defaults."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    with path.open() as handle:
        values = yaml.safe_load(handle) or {}
    return TrainConfig.from_dict(values, source=str(path))
