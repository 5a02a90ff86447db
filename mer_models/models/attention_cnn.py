"""Self-attention CNN with AReLU activations: the fusion partner of the attention CRNN.

Gerczuk et al. (MediaEval 2020) fuse their attention CRNN with a plain
convolutional model. This one follows the MediaEval emotion-and-theme
challenge baseline (a VGG-ish stack of conv3x3 + BatchNorm + activation +
max-pool blocks, widths 64-128-128-128-64), with two changes:

- AReLU (Chen et al. 2020, "AReLU: Attention-based Rectified Linear Unit")
  instead of ReLU: two learnable scalars per layer amplify the positive part
  and keep a clamped slope for the negative part, which the AReLU paper
  reports to speed up convergence of small networks.
- Self-attention pooling over time instead of the baseline's pooling of the
  whole map to a single value: the frequency axis is averaged away, scaled
  dot-product self-attention (Vaswani et al. 2017) relates every time step to
  every other, and the attended steps are averaged to one vector.

Layout (our choice, documented because the paper does not fix it): five
blocks with widths (w, 2w, 2w, 2w, w) as in the baseline, each followed by a
2x2 max-pool. The total stride of 32 on both axes matches the ResNet trunk of
the CRNN, so both models attend over ~T/32 steps (15 for T = 500); the
baseline's larger time pools would shrink a 500-frame window to nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mer_models.models.resnet import conv3x3

WIDTH_MULTIPLIERS = (1, 2, 2, 2, 1)
POOL = 2  # per block, on both axes
MIN_SIZE = POOL ** len(WIDTH_MULTIPLIERS)  # smallest n_bands and T the stack accepts


class AReLU(nn.Module):
    """AReLU (Chen et al. 2020): (1 + sigmoid(beta)) * relu(x) - clamp(alpha) * relu(-x).

    alpha (negative slope) is clamped to [0.01, 0.99] so the unit stays a
    rectifier; beta passes through a sigmoid so the positive gain stays in
    (1, 2). Initial values alpha = 0.90, beta = 2.0 are the AReLU paper's.
    """

    def __init__(self, alpha: float = 0.90, beta: float = 2.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.clamp(self.alpha, min=0.01, max=0.99)
        gain = 1 + torch.sigmoid(self.beta)
        return torch.relu(x) * gain - torch.relu(-x) * alpha


class ConvBlock(nn.Module):
    """conv3x3 + BatchNorm + AReLU + 2x2 max-pool (the conv has no bias: BN follows)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = AReLU()
        self.pool = nn.MaxPool2d(POOL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class SelfAttentionPooling(nn.Module):
    """Scaled dot-product self-attention over time steps, then the mean over time.

    The projections have no bias: a key bias adds the same score to every key
    of a query, which the softmax cancels, so it would never learn.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Linear(channels, channels, bias=False)
        self.key = nn.Linear(channels, channels, bias=False)
        self.value = nn.Linear(channels, channels, bias=False)
        self.scale = 1.0 / math.sqrt(channels)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled vector (B, C) and attention weights (B, T, T) (rows sum to 1)."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, C) each
        weights = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, T, T)
        attended = weights @ v  # (B, T, C)
        return attended.mean(dim=1), weights  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.attend(x)
        return pooled


class AttentionCNN(nn.Module):
    """Mel-spectrogram (B, 1, n_bands, T) -> logits (B, n_tags); no sigmoid inside."""

    def __init__(
        self, n_tags: int, n_bands: int = 96, width: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if n_tags < 1:
            raise ValueError(f"AttentionCNN: n_tags must be >= 1, got {n_tags}")
        if n_bands < MIN_SIZE:
            raise ValueError(f"AttentionCNN: n_bands must be >= {MIN_SIZE}, got {n_bands}")
        if width < 1:
            raise ValueError(f"AttentionCNN: width must be >= 1, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"AttentionCNN: dropout must be in [0, 1), got {dropout}")
        self.n_bands = n_bands
        widths = [width * m for m in WIDTH_MULTIPLIERS]
        self.blocks = nn.Sequential(
            *(ConvBlock(c_in, c_out) for c_in, c_out in zip([1, *widths[:-1]], widths, strict=True))
        )
        self.out_channels = widths[-1]
        self.attention = SelfAttentionPooling(self.out_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.out_channels, n_tags)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.n_bands:
            raise ValueError(
                f"AttentionCNN: input must be (B, 1, {self.n_bands}, T), got shape {tuple(x.shape)}"
            )
        if x.shape[3] < MIN_SIZE:
            raise ValueError(f"AttentionCNN: input needs T >= {MIN_SIZE} frames, got {x.shape[3]}")
        return self.blocks(x)  # (B, w, n_bands/32, T/32)

    @property
    def output_layer(self) -> nn.Linear:
        """The layer that emits one logit per tag."""
        return self.fc

    @staticmethod
    def sequence(features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=2).transpose(1, 2)  # (B, C, T) -> (B, T, C)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.attention(self.sequence(features))  # (B, C)
        return self.fc(self.dropout(pooled))  # logits (B, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
