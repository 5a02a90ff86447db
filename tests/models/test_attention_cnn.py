"""Self-attention CNN with AReLU: parameter count, AReLU's values, attention pooling."""

import math

import pytest
import torch
from torch import nn

from mer_models.models.attention_cnn import AReLU, AttentionCNN

N_TAGS, N_BANDS = 56, 96


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_params(width: int, n_tags: int = N_TAGS) -> int:
    widths = [width, 2 * width, 2 * width, 2 * width, width]
    fan_ins = [1, *widths[:-1]]
    convs = sum(9 * c_in * c_out for c_in, c_out in zip(fan_ins, widths, strict=True))  # no bias
    norms = sum(2 * c for c in widths)  # BatchNorm weight + bias
    arelus = 2 * len(widths)  # alpha, beta per block
    attention = 3 * width * width  # bias-free query, key, value
    return convs + norms + arelus + attention + width * n_tags + n_tags


def test_paper_size_shape_finiteness_and_parameter_count():
    torch.manual_seed(0)
    model = AttentionCNN(N_TAGS, N_BANDS, width=64)
    assert n_params(model) == expected_params(64) == 459_906
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, N_BANDS, 500))
    assert logits.shape == (2, N_TAGS)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("frames", "steps"), [(128, 4), (500, 15)])
def test_input_lengths_and_attention_rows_sum_to_one(frames, steps):
    torch.manual_seed(0)
    model = AttentionCNN(N_TAGS, width=8).eval()
    x = torch.randn(2, 1, N_BANDS, frames)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled, weights = model.attention.attend(model.sequence(features))
        logits = model(x)
    assert features.shape == (2, 8, 3, steps)
    assert weights.shape == (2, steps, steps)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, steps))
    torch.testing.assert_close(logits, model.fc(pooled))
    assert torch.isfinite(logits).all()


def test_attention_pooling_matches_a_hand_computed_reference():
    torch.manual_seed(0)
    model = AttentionCNN(N_TAGS, width=8).eval()
    seq = torch.randn(3, 7, 8)
    att = model.attention
    q, k, v = seq @ att.query.weight.T, seq @ att.key.weight.T, seq @ att.value.weight.T
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(att(seq), (weights @ v).mean(dim=1))


def test_arelu_initial_values_and_positive_gain():
    act = AReLU()
    assert act.alpha.item() == pytest.approx(0.90)
    assert act.beta.item() == pytest.approx(2.0)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    gain = 1 + 1 / (1 + math.exp(-2.0))
    expected = torch.tensor([-2.0 * 0.9, -0.5 * 0.9, 0.0, 0.5 * gain, 3.0 * gain])
    torch.testing.assert_close(act(x), expected)


@pytest.mark.parametrize(("alpha", "slope"), [(5.0, 0.99), (-3.0, 0.01), (0.3, 0.3)])
def test_arelu_negative_slope_is_clamped(alpha, slope):
    act = AReLU(alpha=alpha, beta=-1.0)
    x = torch.tensor([-4.0, -1.0, 2.0])
    gain = 1 + 1 / (1 + math.exp(1.0))
    torch.testing.assert_close(act(x), torch.tensor([-4.0 * slope, -1.0 * slope, 2.0 * gain]))


def test_arelu_gradient_reaches_alpha_and_beta():
    act = AReLU()
    x = torch.tensor([-2.0, -1.0, 1.0, 3.0])
    act(x).sum().backward()
    # d/dalpha = sum of x over x < 0; d/dbeta = sigmoid'(beta) * sum of x over x > 0.
    sig = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(act.alpha.grad, torch.tensor(-3.0))
    torch.testing.assert_close(act.beta.grad, torch.tensor(sig * (1 - sig) * 4.0))


def test_bad_inputs_raise_naming_the_culprit():
    with pytest.raises(ValueError, match="n_bands"):
        AttentionCNN(N_TAGS, n_bands=16)
    model = AttentionCNN(N_TAGS, width=8)
    with pytest.raises(ValueError, match="T >= 32"):
        model(torch.randn(2, 1, N_BANDS, 16))
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 96, T\)"):
        model(torch.randn(2, 2, N_BANDS, 64))
