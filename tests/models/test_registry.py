"""build_model: the one name -> model map, and gradients through every model config."""

import dataclasses

import pytest
import torch

from mer_models import config as config_module
from mer_models.config import TrainConfig
from mer_models.models import MODEL_NAMES, AttentionCNN, AttentionCRNN, build_model

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


def test_registry_names_match_the_config_choices():
    assert set(MODEL_NAMES) == set(config_module.MODELS)


def test_unknown_model_raises_listing_the_valid_names():
    config = TrainConfig()
    object.__setattr__(config, "model", "vgg")  # bypass TrainConfig's own check
    with pytest.raises(ValueError, match="'vgg'.*crnn, attention_cnn"):
        build_model(config, n_tags=56)


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
    logits = model(torch.randn(2, 1, 96, 64))
    assert logits.shape == (2, 56)
    assert torch.isfinite(logits).all()
    target = torch.randint(0, 2, (2, 56)).float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
