from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_models.data.augment import BatchPreprocess, SpecAugment
from mer_models.data.scaling import BandStats

BANDS, FRAMES = 96, 200


def reference_item(window, stats, rng, time_mask=10, freq_mask=10):
    """The per-item NumPy standardisation and SpecAugment that batches replace."""
    window = window.astype(np.float32)
    window -= stats.mean[:, None]
    window /= stats.std[:, None]
    n_bands, n_frames = window.shape
    width = int(rng.integers(0, min(freq_mask, n_bands) + 1))
    start = int(rng.integers(0, n_bands - width + 1))
    window[start : start + width, :] = 0.0
    width = int(rng.integers(0, min(time_mask, n_frames) + 1))
    start = int(rng.integers(0, n_frames - width + 1))
    window[:, start : start + width] = 0.0
    return window


@pytest.fixture
def stats():
    rng = np.random.default_rng(1)
    return BandStats(
        rng.normal(-40, 5, BANDS).astype(np.float32), rng.uniform(5, 15, BANDS).astype(np.float32)
    )


def _masked_widths(window):
    masked = window == 0.0
    return int(masked.all(axis=1).sum()), int(masked.all(axis=0).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_batch_equals_the_per_item_numpy_reference(stats, dtype):
    raw = np.random.default_rng(2).normal(-40, 12, (64, BANDS, FRAMES)).astype(dtype)
    augment = SpecAugment()
    expected = np.stack(
        [reference_item(raw[i], stats, np.random.default_rng(i)) for i in range(len(raw))]
    )
    masks = np.stack([augment.draw(BANDS, FRAMES, np.random.default_rng(i)) for i in range(64)])
    batch = BatchPreprocess(stats)(torch.from_numpy(raw)[:, None], torch.from_numpy(masks))
    assert batch.dtype == torch.float32 and batch.shape == (64, 1, BANDS, FRAMES)
    torch.testing.assert_close(batch[:, 0], torch.from_numpy(expected), rtol=0, atol=0)


def test_mask_widths_keep_the_per_item_distribution(stats):
    """Widths realised in batches, drawn from many seeds, against the old per-item masks."""
    seeds = range(4000)
    augment = SpecAugment(time_mask=10, freq_mask=7)
    masks = np.stack([augment.draw(BANDS, FRAMES, np.random.default_rng(s)) for s in seeds])
    # Windows far from the mean, so that no unmasked cell standardises to 0.
    raw = torch.full((len(masks), 1, BANDS, FRAMES), 1000.0)
    batch = BatchPreprocess(stats)(raw, torch.from_numpy(masks))[:, 0].numpy()
    new = np.array([_masked_widths(window) for window in batch])
    old = np.array(
        [
            _masked_widths(
                reference_item(
                    np.full((BANDS, FRAMES), 1000.0), stats, np.random.default_rng(s), 10, 7
                )
            )
            for s in seeds
        ]
    )
    np.testing.assert_array_equal(new, old)  # the same widths, seed by seed
    np.testing.assert_array_equal(new, masks[:, [1, 3]])
    for column, most in ((0, 7), (1, 10)):
        counts = np.bincount(new[:, column], minlength=most + 1)
        assert len(counts) == most + 1  # never wider than the maximum
        expected = len(seeds) / (most + 1)
        chi_square = ((counts - expected) ** 2 / expected).sum()
        assert chi_square < 30.0  # uniform over 0..most (p > 0.001 at <= 10 dof)
    # independent per example: frequency and time widths uncorrelated
    assert abs(np.corrcoef(new[:, 0], new[:, 1])[0, 1]) < 0.05


def test_masks_are_contiguous_and_leave_the_rest_standardised(stats):
    raw = np.random.default_rng(4).normal(-40, 12, (8, BANDS, FRAMES)).astype(np.float32)
    masks = torch.tensor([[3, 4, 10, 6], [0, 0, 0, 0], [92, 4, 194, 6], [0, 10, 0, 10]] * 2)
    batch = BatchPreprocess(stats)(torch.from_numpy(raw)[:, None], masks)[:, 0].numpy()
    plain = (raw - stats.mean[:, None]) / stats.std[:, None]
    for window, standard, (f0, fw, t0, tw) in zip(batch, plain, masks.tolist(), strict=True):
        hit = np.zeros((BANDS, FRAMES), bool)
        hit[f0 : f0 + fw] = True
        hit[:, t0 : t0 + tw] = True
        assert (window[hit] == 0).all()
        np.testing.assert_array_equal(window[~hit], standard[~hit])


def test_zero_widths_disable_masking_and_negative_widths_are_refused():
    rng = np.random.default_rng(0)
    assert all(
        SpecAugment(0, 0).draw(BANDS, 100, rng)[[1, 3]].tolist() == [0, 0] for _ in range(50)
    )
    with pytest.raises(ValueError, match="mask widths"):
        SpecAugment(-1, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_device_gives_the_cpu_result(stats):
    raw = torch.from_numpy(np.random.default_rng(5).normal(-40, 12, (16, 1, BANDS, FRAMES)))
    masks = torch.from_numpy(
        np.stack([SpecAugment().draw(BANDS, FRAMES, np.random.default_rng(i)) for i in range(16)])
    )
    preprocess = BatchPreprocess(stats)
    on_cpu = preprocess(raw.half(), masks)
    on_gpu = preprocess.to("cuda")(raw.half().cuda(), masks.cuda())
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-6, atol=1e-6)
    # a store's batch: time-major, pinned, copied without blocking, transposed on the GPU
    time_major = raw.half().mT.contiguous().mT.pin_memory()
    moved = time_major.to("cuda", non_blocking=True)
    assert moved.stride() == time_major.stride()
    torch.testing.assert_close(preprocess(moved, masks.cuda()).cpu(), on_cpu, rtol=1e-6, atol=1e-6)
