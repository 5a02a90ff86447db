"""Attention CRNN of Gerczuk et al. (MediaEval 2020): ResNet-18 (+ CBAM) + recurrent attention.

"Emotion and Themes Recognition in Music with Convolutional and Recurrent
Attention-Blocks": a ResNet-18 trunk, optionally with CBAM in every residual
block (convolutional attention), whose last feature map is read as a time
sequence by a GRU/LSTM with scaled dot-product attention pooling (recurrent
attention). Table 1 of the paper compares the head sizes (1 x 256, 2 x 128),
the cells and CBAM on/off; all are arguments here.
"""

from __future__ import annotations

import torch
from torch import nn

from mer_models.models.cbam import CBAM
from mer_models.models.recurrent import RecurrentAttentionHead
from mer_models.models.resnet import ResNetTrunk


class AttentionCRNN(nn.Module):
    """Mel-spectrogram (B, 1, n_bands, T) -> logits (B, n_tags); no sigmoid inside."""

    def __init__(
        self,
        n_tags: int,
        n_bands: int = 96,
        width: int = 64,
        cbam: bool = True,
        cell: str = "gru",
        units: int = 256,
        layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_bands < 1:
            raise ValueError(f"AttentionCRNN: n_bands must be >= 1, got {n_bands}")
        self.n_bands = n_bands
        self.trunk = ResNetTrunk(width=width, attention_layer=CBAM if cbam else None)
        self.head = RecurrentAttentionHead(
            self.trunk.out_channels, n_tags, cell=cell, units=units, layers=layers, dropout=dropout
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.n_bands:
            raise ValueError(
                f"AttentionCRNN: input must be (B, 1, {self.n_bands}, T), "
                f"got shape {tuple(x.shape)}"
            )
        return self.trunk(x)  # (B, 8w, n_bands/32, T/32)

    @property
    def output_layer(self) -> nn.Linear:
        """The layer that emits one logit per tag."""
        return self.head.fc

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
