"""Attention CRNN at the paper's size: every Table 1 configuration, counted by formula."""

import pytest
import torch
from torch import nn

from mer_models.models.cbam import CBAM
from mer_models.models.crnn import AttentionCRNN

N_TAGS, N_BANDS, T, WIDTH = 56, 96, 500, 64

# Table 1 of Gerczuk et al. (MediaEval 2020): (cbam, cell, units, layers).
TABLE1 = [
    pytest.param(False, "gru", 256, 1, id="gru-256x1"),
    pytest.param(False, "lstm", 256, 1, id="lstm-256x1"),
    pytest.param(True, "gru", 128, 2, id="cbam-gru-128x2"),
    pytest.param(True, "gru", 256, 1, id="cbam-gru-256x1"),
    pytest.param(True, "lstm", 256, 1, id="cbam-lstm-256x1"),
]

# torchvision resnet18 (11,689,512) minus its 512 x 1000 fc, with a 1-channel stem.
RESNET18_TRUNK_1CH = 11_689_512 - (512 * 1000 + 1000) - 2 * 64 * 7 * 7


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cbam_params(channels: int) -> int:
    hidden = max(channels // 16, 4)
    return 2 * channels * hidden + hidden + channels + 2 * 7 * 7


def rnn_params(cell: str, inputs: int, units: int, layers: int) -> int:
    gates = {"gru": 3, "lstm": 4}[cell]
    total = 0
    for layer in range(layers):
        fan_in = inputs if layer == 0 else units
        total += gates * (fan_in * units + units * units + 2 * units)
    return total


def expected_params(cbam: bool, cell: str, units: int, layers: int) -> int:
    stage_widths = [WIDTH, 2 * WIDTH, 4 * WIDTH, 8 * WIDTH]
    attention = 2 * sum(cbam_params(c) for c in stage_widths) if cbam else 0
    head = rnn_params(cell, 8 * WIDTH, units, layers) + units * N_TAGS + N_TAGS
    return RESNET18_TRUNK_1CH + attention + head


@pytest.mark.parametrize(("cbam", "cell", "units", "layers"), TABLE1)
def test_table1_config_shape_finiteness_and_parameter_count(cbam, cell, units, layers):
    torch.manual_seed(0)
    model = AttentionCRNN(N_TAGS, N_BANDS, WIDTH, cbam=cbam, cell=cell, units=units, layers=layers)
    assert n_params(model) == expected_params(cbam, cell, units, layers)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, N_BANDS, T))
    assert logits.shape == (2, N_TAGS)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("width", [8, 64])
def test_cbam_off_removes_exactly_the_cbam_parameters(width):
    with_cbam = AttentionCRNN(N_TAGS, width=width, cbam=True)
    without = AttentionCRNN(N_TAGS, width=width, cbam=False)
    cbam_modules = [m for m in with_cbam.modules() if isinstance(m, CBAM)]
    assert len(cbam_modules) == 8  # one per BasicBlock of ResNet-18
    in_cbam = sum(n_params(m) for m in cbam_modules)
    assert in_cbam > 0
    assert n_params(with_cbam) - n_params(without) == in_cbam
    assert not any(isinstance(m, CBAM) for m in without.modules())


@pytest.mark.parametrize(("frames", "steps"), [(128, 4), (500, 16)])
def test_input_lengths_set_the_number_of_attended_steps(frames, steps):
    torch.manual_seed(0)
    model = AttentionCRNN(N_TAGS, width=8, units=16).eval()
    x = torch.randn(2, 1, N_BANDS, frames)
    with torch.no_grad():
        features = model.forward_features(x)
        _, weights = model.head.attend(features)
        logits = model(x)
    assert features.shape == (2, 64, 3, steps)
    assert weights.shape == (2, steps)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert logits.shape == (2, N_TAGS)
    assert torch.isfinite(logits).all()


def test_forward_is_head_of_features():
    torch.manual_seed(0)
    model = AttentionCRNN(N_TAGS, width=8, units=16).eval()
    x = torch.randn(2, 1, N_BANDS, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("shape", [(2, 1, 80, 64), (2, 3, 96, 64), (1, 96, 64)])
def test_bad_input_shape_raises_naming_the_expected_shape(shape):
    model = AttentionCRNN(N_TAGS, width=8, units=16)
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 96, T\)"):
        model(torch.randn(*shape))
