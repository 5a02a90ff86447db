from __future__ import annotations

import numpy as np
import pytest

from mer_models.data.augment import SpecAugment


def _masked_widths(window):
    masked = window == 0.0
    bands = int(masked.all(axis=1).sum())
    frames = int(masked.all(axis=0).sum())
    return bands, frames


def test_mask_widths_cover_zero_to_max_and_never_exceed_it():
    augment = SpecAugment(time_mask=10, freq_mask=7)
    rng = np.random.default_rng(0)
    widths = [_masked_widths(augment(np.ones((96, 200), np.float32), rng)) for _ in range(3000)]
    bands, frames = zip(*widths, strict=True)
    assert set(bands) == set(range(8))
    assert set(frames) == set(range(11))


def test_masks_are_contiguous_and_leave_the_rest_untouched():
    rng = np.random.default_rng(3)
    window = np.random.default_rng(4).normal(size=(96, 300)).astype(np.float32) + 5
    original = window.copy()
    SpecAugment(10, 10)(window, rng)
    changed = window != original
    rows = np.flatnonzero(changed.all(axis=1))
    cols = np.flatnonzero(changed.all(axis=0))
    assert rows.size == 0 or (np.diff(rows) == 1).all()
    assert cols.size == 0 or (np.diff(cols) == 1).all()
    outside = ~changed
    outside[rows, :] = True
    outside[:, cols] = True
    assert outside.all()  # every changed cell lies in a masked row or column


def test_zero_widths_disable_masking_and_negative_widths_are_refused():
    window = np.ones((96, 100), np.float32)
    SpecAugment(0, 0)(window, np.random.default_rng(0))
    assert (window == 1).all()
    with pytest.raises(ValueError, match="mask widths"):
        SpecAugment(-1, 10)
