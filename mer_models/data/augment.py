"""SpecAugment without time warping (Park et al. 2019), drawn per item, applied per batch.

Loader workers only draw each training window's masks (four integers, from
the item's own seeded generator, so a restored run masks exactly as an
uninterrupted one); `BatchPreprocess` then standardises and masks a whole
batch with broadcast comparisons, on whatever device the batch is: the GPU
in a GPU run, the CPU otherwise, one implementation for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mer_models.data.scaling import BandStats

# A mask row: freq_start, freq_width, time_start, time_width (int64).
NO_MASKS = np.zeros(4, dtype=np.int64)


@dataclass(frozen=True)
class SpecAugment:
    """One frequency mask and one time mask, each of a random width in [0, max]."""

    time_mask: int = 10  # max width in frames
    freq_mask: int = 10  # max width in bands

    def __post_init__(self) -> None:
        if self.time_mask < 0 or self.freq_mask < 0:
            raise ValueError(
                f"mask widths must be >= 0, got time_mask={self.time_mask}, freq_mask={self.freq_mask}"
            )

    def draw(self, n_bands: int, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """int64 (4,): freq_start, freq_width, time_start, time_width.

        Widths are uniform in [0, max] and starts uniform where the mask fits,
        independently per window.
        """
        freq_width = int(rng.integers(0, min(self.freq_mask, n_bands) + 1))
        freq_start = int(rng.integers(0, n_bands - freq_width + 1))
        time_width = int(rng.integers(0, min(self.time_mask, n_frames) + 1))
        time_start = int(rng.integers(0, n_frames - time_width + 1))
        return np.array([freq_start, freq_width, time_start, time_width], dtype=np.int64)


class BatchPreprocess(nn.Module):
    """Standardise raw dB windows per band, then apply each window's masks.

    Masked cells become 0 after standardisation: the band's training mean.
    Input (B, 1, bands, frames) in any float dtype (float16 from a packed
    store, float32 from .npy files), in any strides (a store's batches are
    transposed views), and finite (the loader checks); output contiguous
    float32 of the same shape, on the input's device.
    """

    def __init__(self, stats: BandStats) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(stats.mean.astype(np.float32))[:, None])
        self.register_buffer("std", torch.from_numpy(stats.std.astype(np.float32))[:, None])

    def forward(self, windows: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        # A store's batch is transposed in its own 16 bits first (on a CPU a
        # third cheaper than transposing while converting), then everything
        # runs in place on one float32 copy: out-of-place broadcasts and
        # masked_fill cost several times more there.
        windows = windows.contiguous().to(torch.float32, copy=True)
        windows.sub_(self.mean).div_(self.std)  # (B, 1, F, T)
        if masks is None:
            return windows
        n_bands, n_frames = windows.shape[-2:]
        bands = torch.arange(n_bands, device=windows.device)  # (F,)
        frames = torch.arange(n_frames, device=windows.device)  # (T,)
        starts, widths = masks[:, 0:1], masks[:, 1:2]  # (B, 1)
        keep_band = (bands < starts) | (bands >= starts + widths)  # (B, F)
        starts, widths = masks[:, 2:3], masks[:, 3:4]
        keep_frame = (frames < starts) | (frames >= starts + widths)  # (B, T)
        windows.mul_(keep_band[:, None, :, None]).mul_(keep_frame[:, None, None, :])
        return windows
