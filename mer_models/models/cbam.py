"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018).

Gerczuk et al. (MediaEval 2020) put CBAM into every residual block of their
ResNet-18 trunk: the block learns *which* channels (what: timbre, rhythm
patterns) and *where* in the time-frequency plane (which bands and frames)
matter for a mood or theme, and rescales the residual branch accordingly.

CBAM refines a feature map F (B, C, H, W) in two sequential steps, both by
element-wise multiplication:

    F'  = Mc(F) * F      Mc(F)  = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))
    F'' = Ms(F') * F'    Ms(F') = sigmoid(conv7x7([AvgPool_c(F'); MaxPool_c(F')]))

Choices (Woo et al. leave them open or fix them only in their code):

- The channel MLP is ONE module shared by both descriptors, C -> h -> C with
  a ReLU in between and h = max(C // reduction, 4). The floor changes
  nothing at the paper's widths (C >= 64, so h = C // 16 >= 4), but keeps
  narrow models (`width` < 64) from a one- or two-unit ReLU layer, which
  often starts dead after BatchNorm and then freezes the channel gate
  (observed: 8 of 48 CBAMs at width 8 with h = max(C // 16, 1); 0 of 48 at
  width 64). Its linear layers keep their biases, as in the authors'
  reference code.
- The spatial 7x7 conv has no bias: the paper's equation has none, and the
  reference code follows the conv with BatchNorm instead, which we leave out
  so that the gate is exactly sigmoid(f7x7(...)).
"""

from __future__ import annotations

import torch
from torch import nn

MIN_HIDDEN = 4  # floor on the channel MLP's hidden width; see the module docstring


class ChannelAttention(nn.Module):
    """Mc: one gate per channel from average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"ChannelAttention: channels must be >= 1, got {channels}")
        if reduction < 1:
            raise ValueError(f"ChannelAttention: reduction must be >= 1, got {reduction}")
        hidden = max(channels // reduction, MIN_HIDDEN)
        # One MLP, applied to both descriptors: sharing is what lets the two
        # pooled views be compared in the same space before they are summed.
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3))  # (B, C)
        peak = x.amax(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.mlp(avg) + self.mlp(peak))  # (B, C)
        return x * gate[:, :, None, None]


class SpatialAttention(nn.Module):
    """Ms: one gate per time-frequency position from channel-pooled maps."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"SpatialAttention: kernel_size must be odd and >= 1, got {kernel_size}"
            )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat(
            [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1
        )  # (B, 2, H, W)
        gate = torch.sigmoid(self.conv(pooled))  # (B, 1, H, W)
        return x * gate


class CBAM(nn.Module):
    """Channel attention, then spatial attention (the order Woo et al. found best).

    `CBAM` itself is the `attention_layer` callable of `resnet.BasicBlock`:
    `CBAM(channels)` builds the module for a block's output width.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
