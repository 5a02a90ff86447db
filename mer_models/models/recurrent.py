"""Recurrent attention head: the CRNN's replacement for global pooling.

Gerczuk et al. (MediaEval 2020) drop the ResNet's global average pooling and
classifier and read the last feature map as a sequence over time instead:
the frequency axis is averaged away, a GRU or LSTM runs over the remaining
time steps, and scaled dot-product attention (Vaswani et al. 2017) pools the
step outputs. The query is the final hidden state of the last recurrent
layer, a summary of the whole window; keys and values are the step outputs,
so the head weights the moments of the clip that agree with that summary
instead of averaging all of them equally.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentAttentionHead(nn.Module):
    """Feature map (B, C, F', T') -> logits (B, n_tags); see `attend` for the weights."""

    def __init__(
        self,
        in_channels: int,
        n_tags: int,
        cell: str = "gru",
        units: int = 256,
        layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(
                f"RecurrentAttentionHead: cell must be one of {', '.join(CELLS)}, got {cell!r}"
            )
        for name, value in (
            ("in_channels", in_channels),
            ("n_tags", n_tags),
            ("units", units),
            ("layers", layers),
        ):
            if value < 1:
                raise ValueError(f"RecurrentAttentionHead: {name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RecurrentAttentionHead: dropout must be in [0, 1), got {dropout}")
        self.cell = cell
        self.units = units
        self.rnn = CELLS[cell](in_channels, units, num_layers=layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(units, n_tags)

    @staticmethod
    def sequence(features: torch.Tensor) -> torch.Tensor:
        """Average the frequency axis away; time becomes the sequence axis."""
        if features.dim() != 4:
            raise ValueError(
                "RecurrentAttentionHead: features must be (B, C, F, T), "
                f"got shape {tuple(features.shape)}"
            )
        return features.mean(dim=2).transpose(1, 2)  # (B, C, T) -> (B, T, C)

    def attend(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vector (B, units) and attention weights (B, T') over time."""
        outputs, state = self.rnn(self.sequence(features))  # outputs: (B, T, U)
        h_n = state[0] if self.cell == "lstm" else state  # LSTM: (h_n, c_n); use h
        query = h_n[-1]  # last layer's final hidden state: (B, U)
        scores = (outputs @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.units)  # (B, T)
        weights = torch.softmax(scores, dim=1)  # (B, T), sums to 1 over time
        context = (weights.unsqueeze(-1) * outputs).sum(dim=1)  # (B, U)
        return context, weights

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        context, _ = self.attend(features)
        return self.fc(self.dropout(context))  # logits (B, n_tags)
