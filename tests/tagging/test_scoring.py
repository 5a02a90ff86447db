from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_models.audio.frontend import melspec_file
from tagging.scoring import model_probabilities, window_starts
from tagging.tagger import load_trained_model
from tests.tagging.conftest import expected_probabilities


@pytest.mark.parametrize(
    ("frames", "window", "starts"),
    [
        (376, 128, [0, 128, 248]),  # the last window ends at the end, no padding
        (384, 128, [0, 128, 256]),
        (128, 128, [0]),
        (48, 128, [0]),  # shorter than a window: one window, padded
        (1000, 500, [0, 500]),
        (1001, 500, [0, 500, 501]),
    ],
)
def test_every_window_covers_the_track_without_padding(frames, window, starts):
    assert window_starts(frames, window).tolist() == starts


def test_crops_are_spread_windows():
    assert window_starts(1000, 100, crops=4).tolist() == [75, 325, 575, 825]
    assert window_starts(1000, 100, crops=1).tolist() == [450]
    with pytest.raises(ValueError, match="crops"):
        window_starts(1000, 100, crops=0)


@pytest.mark.slow
def test_probabilities_are_the_mean_over_standardised_windows(runs, songs):
    model = load_trained_model(runs["seed0"])
    melspec = melspec_file(songs["song"])
    frames = melspec.shape[1]
    assert 256 < frames < 384  # 8 s: three 128-frame windows, the last ending at the end
    spread = [round((k + 0.5) * frames / 2 - 64) for k in (0, 1)]
    for crops, starts in ((None, [0, 128, frames - 128]), (2, spread)):
        for batch_size in (1, 32):
            got, count = model_probabilities(
                model, melspec, torch.device("cpu"), crops=crops, batch_size=batch_size
            )
            assert count == len(starts)
            np.testing.assert_allclose(
                got, expected_probabilities(runs["seed0"], melspec, starts), rtol=1e-5
            )
    short = melspec_file(songs["short"])  # 48 frames: padded with PAD_DB as in training
    got, count = model_probabilities(model, short, torch.device("cpu"))
    assert count == 1
    np.testing.assert_allclose(got, expected_probabilities(runs["seed0"], short, [0]), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_probabilities(runs, songs):
    melspec = melspec_file(songs["song"])
    model = load_trained_model(runs["seed0"])
    on_cpu, _ = model_probabilities(model, melspec, torch.device("cpu"))
    model.network.to("cuda")
    try:
        on_gpu, _ = model_probabilities(model, melspec, torch.device("cuda"), batch_size=2)
    finally:
        model.network.to("cpu")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)
