"""Recurrent attention head: the query is the last layer's final hidden state."""

import math

import pytest
import torch
import torch.nn.functional as F

from mer_models.models.recurrent import RecurrentAttentionHead

CELL_LAYERS = [("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)]


def _features(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(3, 16, 2, 11)  # (B, C, F', T')


def _rnn_by_hand(head, features):
    sequence = features.mean(dim=2).permute(0, 2, 1)  # (B, T', C)
    return head.rnn(sequence)


@pytest.mark.parametrize(("cell", "layers"), CELL_LAYERS)
def test_weights_sum_to_one_over_time(cell, layers):
    head = RecurrentAttentionHead(16, 5, cell=cell, units=12, layers=layers).eval()
    context, weights = head.attend(_features())
    assert context.shape == (3, 12)
    assert weights.shape == (3, 11)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize(("cell", "layers"), CELL_LAYERS)
def test_query_is_the_final_hidden_state_of_the_last_layer(cell, layers):
    head = RecurrentAttentionHead(16, 5, cell=cell, units=12, layers=layers).eval()
    features = _features()
    with torch.no_grad():
        outputs, state = _rnn_by_hand(head, features)
        h_n = state[0] if cell == "lstm" else state
        # The last layer's final hidden state is its last step output.
        torch.testing.assert_close(h_n[-1], outputs[:, -1])
        # Independent reference: torch's scaled dot-product attention, one query per clip.
        expected = F.scaled_dot_product_attention(h_n[-1][:, None, :], outputs, outputs)[:, 0]
        expected_weights = torch.softmax(outputs @ h_n[-1][:, :, None] / math.sqrt(12), dim=1)
        context, weights = head.attend(features)
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(weights, expected_weights[:, :, 0])
    if cell == "lstm":
        # With the cell state as query the context differs: the head must use h, not c.
        c_last = state[1][-1]
        wrong = F.scaled_dot_product_attention(c_last[:, None, :], outputs, outputs)[:, 0]
        assert not torch.allclose(context, wrong, atol=1e-4)


def test_logits_are_the_linear_layer_on_the_context():
    head = RecurrentAttentionHead(
        16, 5, cell="gru", units=12, layers=1, dropout=0.5
    ).eval()  # eval: dropout off
    features = _features()
    with torch.no_grad():
        context, _ = head.attend(features)
        torch.testing.assert_close(head(features), head.fc(context))


def test_attention_follows_the_frequency_mean_not_a_single_band():
    head = RecurrentAttentionHead(16, 5, cell="gru", units=12, layers=1).eval()
    features = _features()
    swapped = features.flip(dims=[2])  # the mean over frequency is unchanged
    with torch.no_grad():
        torch.testing.assert_close(head(features), head(swapped))


def test_bad_arguments_raise_naming_the_culprit():
    with pytest.raises(ValueError, match="cell"):
        RecurrentAttentionHead(16, 5, cell="rnn", units=12, layers=1)
    with pytest.raises(ValueError, match="units"):
        RecurrentAttentionHead(16, 5, cell="gru", units=0, layers=1)
    with pytest.raises(ValueError, match="features"):
        RecurrentAttentionHead(16, 5, cell="gru", units=12, layers=1)(torch.randn(2, 16, 11))


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_head_runs_in_float32_under_bf16_autocast(cell, device):
    """cuDNN's autocast RNN wrapper would cast to float16 even in a bf16 context: the head
    turns autocast off and runs (RNN, attention, output layer) in float32."""
    head = RecurrentAttentionHead(16, 5, cell=cell, units=12, layers=2, dropout=0.5).to(device)
    seen = {}
    head.rnn.register_forward_hook(lambda m, inputs, out: seen.update(rnn=out[0].dtype))
    features = _features().to(device, torch.bfloat16)  # a bf16 trunk's feature map
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = head(features)
        context, weights = head.attend(features)
    assert seen["rnn"] == torch.float32
    assert logits.dtype == context.dtype == weights.dtype == torch.float32
    logits.sum().backward()
    grads = {name: p.grad.dtype for name, p in head.named_parameters()}
    assert grads and set(grads.values()) == {torch.float32}, grads
    # Without autocast the head gives what it gives under it: float32 either way.
    with torch.no_grad():
        head.eval()
        with torch.autocast(device, dtype=torch.bfloat16):
            under = head(features)
        torch.testing.assert_close(under, head(features))
