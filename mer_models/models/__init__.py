"""Model definitions and the one place that maps a model name to a builder.

`build_model` unpacks the typed `TrainConfig` into plain keyword arguments;
the modules themselves never see a config object.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mer_models.config import TrainConfig
from mer_models.models.attention_cnn import AttentionCNN
from mer_models.models.crnn import AttentionCRNN

__all__ = ["MODEL_NAMES", "AttentionCNN", "AttentionCRNN", "build_model"]


def _crnn(config: TrainConfig, n_tags: int, n_bands: int) -> nn.Module:
    return AttentionCRNN(
        n_tags=n_tags,
        n_bands=n_bands,
        width=config.width,
        cbam=config.cbam,
        cell=config.cell,
        units=config.units,
        layers=config.layers,
        dropout=config.dropout,
    )


def _attention_cnn(config: TrainConfig, n_tags: int, n_bands: int) -> nn.Module:
    # cell, units, layers and cbam belong to the CRNN; this model has none of them.
    return AttentionCNN(n_tags=n_tags, n_bands=n_bands, width=config.width, dropout=config.dropout)


_BUILDERS: dict[str, Callable[[TrainConfig, int, int], nn.Module]] = {
    "crnn": _crnn,
    "attention_cnn": _attention_cnn,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(config: TrainConfig, n_tags: int, n_bands: int = 96) -> nn.Module:
    """The model named by `config.model`, returning logits (B, n_tags)."""
    builder = _BUILDERS.get(config.model)
    if builder is None:
        raise ValueError(
            f"unknown model {config.model!r}; valid models are: {', '.join(MODEL_NAMES)}"
        )
    return builder(config, n_tags, n_bands)
