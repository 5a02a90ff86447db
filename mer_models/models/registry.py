"""The one entry per model: its name, its builder, the config fields it reads, its description.

Everything that names, builds or describes a model asks this table: the
config's `model` choices and its recorded params (`mer_models.config`),
`build_model`, the MLflow run names (`tracking.names`), the console progress
table (`study.recorder`), the end-of-study summary (`study.summary`) and the
report (`analysis.report`). Adding a model is its module plus one entry here;
tests/models/test_registry.py builds, trains one step of and describes every
entry, so a missing piece fails there.

Torch-free: builders are named as ``"module:Class"`` and imported on first
use, so the config and the study's readers load without PyTorch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn

# Fields every model reads; an entry's `fields` are those only it reads. Each is a keyword
# argument of the model's class, spelled as the TrainConfig field.
SHARED_FIELDS = ("width", "dropout")
# Headers of the architecture columns, in every table that shows them.
ARCHITECTURE_COLUMNS = ("conv. attention", "model", "RNN cell", "RNN units")


class ModelConfig(Protocol):
    """What the entries read of a config: `mer_models.config.TrainConfig`'s model fields.
    A protocol, not the class: the config imports this table for its choices."""

    model: str
    width: int
    dropout: float
    cbam: bool
    cell: str
    units: int
    layers: int


@dataclass(frozen=True)
class Architecture:
    """How a trial's model reads in run names and tables; None where the model has no such part.

    ``phrase`` is the MLflow run name's ("block GRU 2x128", "attention CNN");
    the other four are the table cells under `ARCHITECTURE_COLUMNS`: the
    convolutional attention ("block": CBAM in every residual block, "none"),
    the model, the recurrent cell and its units ("256", "2 x 128" for a
    stack, as in the paper's Table 1).
    """

    phrase: str
    model: str
    conv_attention: str | None = None
    cell: str | None = None
    units: str | None = None

    def cells(self, missing: str) -> tuple[str, str, str, str]:
        """The cells under `ARCHITECTURE_COLUMNS`, `missing` where the model has no such part."""
        values = (self.conv_attention, self.model, self.cell, self.units)
        return tuple(missing if value is None else value for value in values)


@dataclass(frozen=True)
class ModelEntry:
    """A model: its `TrainConfig.model` name, its class, what it reads and how it reads."""

    name: str
    builder: str  # "module:Class", imported on first build
    describe: Callable[[ModelConfig], Architecture]
    fields: tuple[str, ...] = ()  # config fields only this model reads

    def build(self, config: ModelConfig, n_tags: int, n_bands: int) -> nn.Module:
        """The model class called with the config fields it reads as keyword arguments."""
        module, _, name = self.builder.partition(":")
        model_class = getattr(importlib.import_module(module), name)
        values: dict[str, Any] = {
            field: getattr(config, field) for field in (*SHARED_FIELDS, *self.fields)
        }
        return model_class(n_tags=n_tags, n_bands=n_bands, **values)


def _describe_crnn(config: ModelConfig) -> Architecture:
    cell = config.cell.upper()
    attention = "block" if config.cbam else "no attention"
    return Architecture(
        phrase=f"{attention} {cell} {_size(config.units, config.layers, 'x')}",
        model="CRNN",
        conv_attention="block" if config.cbam else "none",
        cell=cell,
        units=_size(config.units, config.layers, " x "),
    )


def _size(units: int, layers: int, times: str) -> str:
    """``256`` for one layer; a stack ``2x128`` in run names, ``2 x 128`` in tables."""
    return str(units) if layers == 1 else f"{layers}{times}{units}"


def _describe_attention_cnn(config: ModelConfig) -> Architecture:
    return Architecture(phrase="attention CNN", model="attention CNN")


ENTRIES = (
    ModelEntry(
        name="crnn",
        builder="mer_models.models.crnn:AttentionCRNN",
        describe=_describe_crnn,
        fields=("cbam", "cell", "units", "layers"),
    ),
    # No CBAM blocks and no recurrent head: none of the CRNN's own fields.
    ModelEntry(
        name="attention_cnn",
        builder="mer_models.models.attention_cnn:AttentionCNN",
        describe=_describe_attention_cnn,
    ),
)
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in ENTRIES}
MODEL_NAMES = tuple(MODELS)
# Fields some model reads and another does not, in the entries' order.
MODEL_FIELDS = tuple(dict.fromkeys(field for entry in ENTRIES for field in entry.fields))
# What a description reads: the model and those fields.
ARCHITECTURE_FIELDS = ("model", *MODEL_FIELDS)


def model_entry(name: str) -> ModelEntry:
    """The entry of model `name`; an unknown name raises listing the valid ones."""
    entry = MODELS.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; valid models are: {', '.join(MODEL_NAMES)}")
    return entry


def describe(config: ModelConfig) -> Architecture:
    """The run-name phrase and table cells of the config's model."""
    return model_entry(config.model).describe(config)
