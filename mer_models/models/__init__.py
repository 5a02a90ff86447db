"""Model definitions, and `build_model`: a config's model, built from its registry entry.

The entry (`mer_models.models.registry`) names the model's class and the
`TrainConfig` fields it reads; `build_model` passes those as plain keyword
arguments, so the modules themselves never see a config object. Importing
this package loads no PyTorch: a model's module is imported when it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mer_models.models.registry import MODEL_NAMES, model_entry

if TYPE_CHECKING:
    from torch import nn

    from mer_models.config import TrainConfig

__all__ = ["MODEL_NAMES", "build_model"]


def build_model(config: TrainConfig, n_tags: int, n_bands: int = 96) -> nn.Module:
    """The model named by `config.model`, returning logits (B, n_tags)."""
    return model_entry(config.model).build(config, n_tags, n_bands)
