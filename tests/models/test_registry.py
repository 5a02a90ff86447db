"""The model registry: every entry builds, trains and is described; build_model obeys it."""

import dataclasses
import importlib
import inspect
import subprocess
import sys

import pytest
import torch

from mer_models.config import FIELD_NAMES, TrainConfig, applicable_fields
from mer_models.models import build_model
from mer_models.models.attention_cnn import AttentionCNN
from mer_models.models.crnn import AttentionCRNN
from mer_models.models.registry import (
    ARCHITECTURE_COLUMNS,
    ENTRIES,
    MODEL_FIELDS,
    MODEL_NAMES,
    SHARED_FIELDS,
    describe,
)

# Every model configuration of Table 1 (Gerczuk et al. 2020) plus the fusion partner,
# at width 8 so the backward passes stay fast on CPU.
CONFIGS = [
    pytest.param(dict(model="crnn", cbam=False, cell="gru", units=256, layers=1), id="gru-256x1"),
    pytest.param(dict(model="crnn", cbam=False, cell="lstm", units=256, layers=1), id="lstm-256x1"),
    pytest.param(
        dict(model="crnn", cbam=True, cell="gru", units=128, layers=2), id="cbam-gru-128x2"
    ),
    pytest.param(
        dict(model="crnn", cbam=True, cell="gru", units=256, layers=1), id="cbam-gru-256x1"
    ),
    pytest.param(
        dict(model="crnn", cbam=True, cell="lstm", units=256, layers=1), id="cbam-lstm-256x1"
    ),
    pytest.param(dict(model="attention_cnn"), id="attention_cnn"),
]
EVERY_ENTRY = pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)


def model_class(entry) -> type:
    module, _, name = entry.builder.partition(":")
    return getattr(importlib.import_module(module), name)


def backward_reaches_every_parameter(model: torch.nn.Module, frames: int = 64) -> None:
    """Logits (2, 56), finite, and a loss whose gradient reaches every parameter."""
    logits = model(torch.randn(2, 1, 96, frames))
    assert logits.shape == (2, 56)
    assert torch.isfinite(logits).all()
    target = torch.randint(0, 2, (2, 56)).float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_the_config_accepts_exactly_the_registered_names():
    for name in MODEL_NAMES:
        assert TrainConfig(model=name).model == name
    with pytest.raises(ValueError, match="'model' must be one of crnn, attention_cnn, got 'vgg'"):
        TrainConfig(model="vgg")


def test_unknown_model_raises_listing_the_valid_names():
    config = TrainConfig()
    object.__setattr__(config, "model", "vgg")  # bypass TrainConfig's own check
    with pytest.raises(ValueError, match="'vgg'.*crnn, attention_cnn"):
        build_model(config, n_tags=56)


@EVERY_ENTRY
def test_an_entry_declares_config_fields_its_class_takes(entry):
    assert len(set(entry.fields)) == len(entry.fields)
    assert set(entry.fields) <= set(FIELD_NAMES) - set(SHARED_FIELDS) - {"model"}
    arguments = inspect.signature(model_class(entry)).parameters
    assert {"n_tags", "n_bands", *SHARED_FIELDS, *entry.fields} <= set(arguments)
    # A run records the fields its model reads, and none that only other models read.
    recorded = set(applicable_fields(TrainConfig(model=entry.name), "cpu"))
    assert set(entry.fields) <= recorded
    assert not (set(MODEL_FIELDS) - set(entry.fields)) & recorded


@EVERY_ENTRY
@pytest.mark.parametrize("frames", [64, 128])
def test_every_model_trains_on_windows_of_any_length(entry, frames):
    torch.manual_seed(0)
    model = build_model(TrainConfig(model=entry.name, width=8), n_tags=56).train()
    assert isinstance(model, model_class(entry))
    backward_reaches_every_parameter(model, frames)


@EVERY_ENTRY
def test_every_model_is_described_in_each_column(entry):
    described = describe(TrainConfig(model=entry.name))
    assert described.phrase and described.model
    cells = described.cells(missing="-")
    assert len(cells) == len(ARCHITECTURE_COLUMNS) and all(cells)
    others = [describe(TrainConfig(model=other.name)) for other in ENTRIES if other != entry]
    assert described.phrase not in [other.phrase for other in others]


@pytest.mark.parametrize(
    ("fields", "phrase", "cells"),
    [
        (
            dict(cbam=True, cell="gru", units=128, layers=2),
            "block GRU 2x128",
            "block CRNN GRU 2 x 128",
        ),
        (dict(cbam=False, cell="lstm"), "no attention LSTM 256", "none CRNN LSTM 256"),
        (dict(model="attention_cnn", cbam=True), "attention CNN", "- attention CNN - -"),
    ],
)
def test_run_names_and_table_cells_share_one_vocabulary(fields, phrase, cells):
    described = describe(TrainConfig(**fields))
    assert described.phrase == phrase
    assert " ".join(described.cells(missing="-")) == cells


def test_the_registry_and_the_config_load_without_pytorch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import mer_models.config, mer_models.models\n"
        "from mer_models.models.registry import describe\n"
        "print(describe(mer_models.config.TrainConfig()).phrase)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "block GRU 256"


def test_config_fields_reach_the_modules():
    config = TrainConfig(model="crnn", cell="lstm", units=32, layers=2, width=8, dropout=0.25)
    model = build_model(config, n_tags=10, n_bands=64)
    assert isinstance(model, AttentionCRNN)
    assert isinstance(model.head.rnn, torch.nn.LSTM)
    assert (model.head.rnn.hidden_size, model.head.rnn.num_layers) == (32, 2)
    assert model.head.dropout.p == 0.25
    assert model.head.fc.out_features == 10
    assert model.trunk.out_channels == 64
    assert model.n_bands == 64
    cnn = build_model(dataclasses.replace(config, model="attention_cnn"), n_tags=10)
    assert isinstance(cnn, AttentionCNN)
    assert cnn.fc.out_features == 10


@pytest.mark.parametrize("fields", CONFIGS)
def test_gradients_reach_every_parameter(fields):
    torch.manual_seed(0)
    model = build_model(TrainConfig(width=8, **fields), n_tags=56).train()
    backward_reaches_every_parameter(model)
