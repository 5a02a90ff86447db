"""Recurrent attention head: the CRNN's replacement for global pooling.

Gerczuk et al. (MediaEval 2020) drop the ResNet's global average pooling and
classifier and read the last feature map as a sequence over time instead:
the frequency axis is averaged away, a GRU or LSTM runs over the remaining
time steps, and scaled dot-product attention (Vaswani et al. 2017) pools the
step outputs. The query is the final hidden state of the last recurrent
layer, a summary of the whole window; keys and values are the step outputs,
so the head weights the moments of the clip that agree with that summary
instead of averaging all of them equally.

The head runs in float32 whatever autocast the trunk runs under: PyTorch's
autocast wrapper for cuDNN RNNs casts inputs and weights to float16 even in
a bfloat16 context, with no loss scaling (small gradients underflow, values
over 65504 become inf). Over the ~15 time steps of a window float32 costs
next to nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def autocast_off(tensor: torch.Tensor) -> torch.autocast:
    """A context with autocast off on the tensor's device: its ops run in their inputs' dtype."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


class RecurrentAttentionHead(nn.Module):
    """Feature map (B, C, F', T') -> logits (B, n_tags); see `attend` for the weights.

    The recurrent part is named by the model that holds the head (its sizes
    are that model's defaults, e.g. `AttentionCRNN`'s): `cell` ("gru" or
    "lstm"), `units` per step and stacked `layers`.
    """

    def __init__(
        self,
        in_channels: int,
        n_tags: int,
        *,
        cell: str,
        units: int,
        layers: int,
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
        """Context vector (B, units) and attention weights (B, T') over time, in float32."""
        sequence = self.sequence(features.float())  # (B, T, C)
        with autocast_off(sequence):
            outputs, state = self.rnn(sequence)  # outputs: (B, T, U)
            h_n = state[0] if self.cell == "lstm" else state  # LSTM: (h_n, c_n); use h
            query = h_n[-1]  # last layer's final hidden state: (B, U)
            scores = (outputs @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.units)  # (B, T)
            weights = torch.softmax(scores, dim=1)  # (B, T), sums to 1 over time
            context = (weights.unsqueeze(-1) * outputs).sum(dim=1)  # (B, U)
        return context, weights

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        context, _ = self.attend(features)
        with autocast_off(context):
            return self.fc(self.dropout(context))  # logits (B, n_tags), float32
