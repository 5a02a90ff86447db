"""Reading fixed-length windows of mel-spectrograms from `.npy` files.

Real MTG-Jamendo tracks run to 44 minutes and the mood/theme set is 68 GB,
so a window is read through a memory map: only the pages under the window
are touched, never the whole track. Windows are counted in frames (the
dataset's 12 kHz audio with hop 256 gives 46.875 frames/s, so 500 frames
are 10.7 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mer_models.data.splits import DataError

FRAMES_PER_SECOND = 12000 / 256
N_BANDS = 96
# Tracks shorter than the window are padded at the end with this value: the
# floor of a power-to-dB conversion clipped at 1e-10 (10 * log10(1e-10)),
# i.e. silence, rather than 0 dB, which would be a loud event.
PAD_DB = -100.0


def open_melspec(path: str | Path, n_bands: int = N_BANDS) -> np.ndarray:
    """Memory-map a (n_bands, n_frames) float32 mel-spectrogram, checking its header."""
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: mel-spectrogram file not found") from None
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable or truncated .npy file ({error})") from None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != n_bands:
        raise DataError(
            f"{path}: array is {array.dtype} {tuple(array.shape)}; expected float32 "
            f"({n_bands}, n_frames)"
        )
    if array.shape[1] == 0:
        raise DataError(f"{path}: the mel-spectrogram has no frames")
    return array


def centred_starts(n_frames: int, window: int, count: int = 1) -> np.ndarray:
    """Starts of `count` windows centred on evenly spaced points of the track.

    count = 1 gives the centred window (the paper's evaluation); larger counts
    spread windows over the whole track.
    """
    centres = (np.arange(count) + 0.5) * n_frames / count
    starts = np.round(centres - window / 2).astype(np.int64)
    return np.clip(starts, 0, max(n_frames - window, 0))


def random_start(n_frames: int, window: int, rng: np.random.Generator) -> int:
    """A uniformly random start such that the window lies inside the track."""
    return int(rng.integers(0, max(n_frames - window, 0) + 1))


def read_window(array: np.ndarray, start: int, window: int) -> np.ndarray:
    """Copy frames [start, start + window) of a (bands, frames) map into float32.

    Tracks shorter than the window are padded at the end with `PAD_DB`.
    """
    n_bands, n_frames = array.shape
    stop = min(start + window, n_frames)
    out = np.empty((n_bands, window), dtype=np.float32)
    out[:, : stop - start] = array[:, start:stop]
    out[:, stop - start :] = PAD_DB
    return out
