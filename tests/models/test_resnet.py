"""ResNet-18 trunk: the known parameter count, output shape, attention placement."""

import torch
from torch import nn

from mer_models.models.cbam import CBAM
from mer_models.models.resnet import BasicBlock, ResNetTrunk

# torchvision resnet18: 11,689,512 parameters with a 3-channel stem and a 512 x 1000 fc.
# Our trunk drops the fc (weights + biases) and has a 1-channel 7x7 stem (2 channels fewer).
TORCHVISION_RESNET18 = 11_689_512
RESNET18_TRUNK_1CH = TORCHVISION_RESNET18 - (512 * 1000 + 1000) - 2 * 64 * 7 * 7


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_trunk_at_width_64_is_resnet18_without_fc_and_with_one_input_channel():
    assert RESNET18_TRUNK_1CH == 11_170_240
    assert n_params(ResNetTrunk(width=64)) == RESNET18_TRUNK_1CH


def test_output_shape_is_8w_channels_at_stride_32():
    trunk = ResNetTrunk(width=8)
    out = trunk(torch.randn(2, 1, 96, 500))
    assert trunk.out_channels == 64
    assert out.shape == (2, 64, 3, 16)


class _Zero(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_attention_acts_on_the_residual_branch_before_the_add():
    block = BasicBlock(4, 4, attention_layer=_Zero).eval()
    x = torch.randn(2, 4, 5, 6)
    # Branch zeroed before the add: only the identity survives, through the final ReLU.
    # (Applied after the add, the output would be all zeros.)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_attention_layer_is_built_per_block_with_its_width():
    trunk = ResNetTrunk(width=8, attention_layer=CBAM)
    blocks = [m for m in trunk.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert all(isinstance(b.attention, CBAM) for b in blocks)
    assert [b.attention.channel.mlp[0].in_features for b in blocks] == [
        8,
        8,
        16,
        16,
        32,
        32,
        64,
        64,
    ]
    assert not any(isinstance(m, CBAM) for m in ResNetTrunk(width=8).modules())
