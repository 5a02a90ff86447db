"""SpecAugment without time warping (Park et al. 2019), for training windows only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpecAugment:
    """One time mask and one frequency mask, each of a random width in [0, max].

    Masked cells are set to `fill`; windows are standardised before masking,
    so the default 0 is the band's training mean.
    """

    time_mask: int = 10  # max width in frames
    freq_mask: int = 10  # max width in bands
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.time_mask < 0 or self.freq_mask < 0:
            raise ValueError(
                f"mask widths must be >= 0, got time_mask={self.time_mask}, freq_mask={self.freq_mask}"
            )

    def __call__(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mask a (bands, frames) window in place and return it."""
        n_bands, n_frames = window.shape
        width = int(rng.integers(0, min(self.freq_mask, n_bands) + 1))
        start = int(rng.integers(0, n_bands - width + 1))
        window[start : start + width, :] = self.fill
        width = int(rng.integers(0, min(self.time_mask, n_frames) + 1))
        start = int(rng.integers(0, n_frames - width + 1))
        window[:, start : start + width] = self.fill
        return window
