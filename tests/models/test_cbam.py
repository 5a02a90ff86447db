"""CBAM (Woo et al. 2018): parameter count, shared MLP, and the gates' values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mer_models.models.cbam import CBAM


def expected_cbam_params(channels: int, reduction: int = 16) -> int:
    """One shared MLP C -> h -> C with biases, plus a bias-free 7x7 conv 2 -> 1."""
    hidden = max(channels // reduction, 4)
    mlp = (channels * hidden + hidden) + (hidden * channels + channels)
    return mlp + 2 * 7 * 7


@pytest.mark.parametrize("channels", [1, 8, 64, 512])
def test_parameter_count_matches_the_formula(channels):
    module = CBAM(channels)
    assert sum(p.numel() for p in module.parameters()) == expected_cbam_params(channels)


def test_channel_mlp_is_shared_between_avg_and_max_descriptors():
    module = CBAM(64)
    # A second MLP would double these; one MLP means exactly two Linear layers.
    assert sum(isinstance(m, nn.Linear) for m in module.modules()) == 2


def test_zero_weights_give_half_gates_on_both_steps():
    torch.manual_seed(0)
    module = CBAM(32)
    for p in module.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 32, 5, 7)
    # sigmoid(0) = 0.5 for the channel gate and again for the spatial gate.
    torch.testing.assert_close(module(x), x * 0.25)


def test_matches_a_hand_computed_reference():
    torch.manual_seed(0)
    module = CBAM(32).eval()
    x = torch.randn(3, 32, 6, 9)
    lin1, lin2 = module.channel.mlp[0], module.channel.mlp[2]

    def mlp(v):
        return F.linear(F.relu(F.linear(v, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)

    avg, peak = x.mean(dim=(2, 3)), x.flatten(2).max(dim=2).values
    channel_gate = torch.sigmoid(mlp(avg) + mlp(peak))
    refined = x * channel_gate.view(3, 32, 1, 1)
    maps = torch.stack([refined.mean(dim=1), refined.max(dim=1).values], dim=1)
    spatial_gate = torch.sigmoid(F.conv2d(maps, module.spatial.conv.weight, padding=3))
    expected = refined * spatial_gate

    out = module(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)


def test_bad_channels_raise_naming_the_argument():
    with pytest.raises(ValueError, match="channels"):
        CBAM(0)


@pytest.mark.parametrize("channels", [64, 128, 256, 512])
def test_hidden_width_is_woo_et_al_reduction_16_at_the_paper_widths(channels):
    assert CBAM(channels).channel.mlp[0].out_features == channels // 16
