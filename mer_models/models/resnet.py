"""ResNet-18 trunk over a mel-spectrogram, with optional attention in every block.

He et al. (CVPR 2016), laid out as torchvision's `models/resnet.py`. Gerczuk
et al. (MediaEval 2020) use the ResNet-18 convolutional stack as the feature
extractor of their CRNN, with CBAM (Woo et al. 2018) on the residual branch
of every BasicBlock; the global pooling and classifier are replaced by a
recurrent attention head (`recurrent.py`), so this file stops at the last
stage's feature map.

The attention module is passed in as one callable (`attention_layer=CBAM` or
`None`), the same way torchvision passes `norm_layer`: switching CBAM on or
off changes one argument, not the code path of the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

AttentionLayer = Callable[[int], nn.Module]
NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, a BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution: the projection shortcut when shape changes."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; attention on the residual branch.

    The attention module (CBAM) rescales the residual branch right before the
    addition, as in Woo et al. (Fig. 3): the identity path stays untouched,
    so a block can always fall back to passing its input through.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attention_layer: AttentionLayer | None = None,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.attention = attention_layer(planes) if attention_layer is not None else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention is not None:
            out = self.attention(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = out + identity
        return self.relu(out)


class ResNetTrunk(nn.Module):
    """ResNet convolutional stack without global pooling or classifier.

    Stem: 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool; then four
    stages of BasicBlocks with widths (w, 2w, 4w, 8w) and strides (1, 2, 2, 2).
    `layers=(2, 2, 2, 2)` and `width=64` is ResNet-18, the paper's size; the
    total stride is 32, so (B, 1, 96, T) -> (B, 8w, 3, ~T/32).
    """

    def __init__(
        self,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        attention_layer: AttentionLayer | None = None,
        in_channels: int = 1,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"ResNetTrunk: width must be >= 1, got {width}")
        if in_channels < 1:
            raise ValueError(f"ResNetTrunk: in_channels must be >= 1, got {in_channels}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"ResNetTrunk: layers must be four counts >= 1, got {tuple(layers)}")
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self._attention_layer = attention_layer
        self.inplanes = width

        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.out_channels = 8 * width * BasicBlock.expansion

        # torchvision's initialisation; it also reaches the attention convs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                self._norm_layer(planes * BasicBlock.expansion),
            )
        layers = [
            BasicBlock(
                self.inplanes,
                planes,
                stride,
                downsample,
                attention_layer=self._attention_layer,
                norm_layer=self._norm_layer,
            )
        ]
        self.inplanes = planes * BasicBlock.expansion
        for _ in range(1, blocks):
            layers.append(
                BasicBlock(
                    self.inplanes,
                    planes,
                    attention_layer=self._attention_layer,
                    norm_layer=self._norm_layer,
                )
            )
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, F/4, T/4)
        x = self.layer1(x)  # (B, w, F/4, T/4)
        x = self.layer2(x)  # (B, 2w, F/8, T/8)
        x = self.layer3(x)  # (B, 4w, F/16, T/16)
        x = self.layer4(x)  # (B, 8w, F/32, T/32)
        return x
