"""Input scaling: per-band standardisation with training-split statistics.

The mean and standard deviation of each mel band are computed once over the
centred window of every training track (only real frames, no padding) and
cached, keyed by the melspec folder, the training split file and the window.
Validation and test windows are scaled with the same training statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from mer_models.cache import cache_root
from mer_models.data.splits import SplitTable
from mer_models.data.windows import centred_starts, open_melspec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation, float32 (n_bands,)."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, window: np.ndarray) -> np.ndarray:
        """Standardise a (bands, frames) window in place and return it."""
        window -= self.mean[:, None]
        window /= self.std[:, None]
        return window

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> BandStats:
        return cls(np.asarray(values["mean"], np.float32), np.asarray(values["std"], np.float32))


def compute_band_stats(train: SplitTable, melspecs: Path, window: int) -> BandStats:
    """Mean and std per band over the centred windows of the training tracks."""
    total = None
    total_sq = None
    count = 0
    for relative in train.melspec_paths:
        array = open_melspec(melspecs / relative)
        start = int(centred_starts(array.shape[1], window)[0])
        frames = np.asarray(array[:, start : start + window], dtype=np.float64)
        if total is None:
            total = np.zeros(frames.shape[0])
            total_sq = np.zeros(frames.shape[0])
        total += frames.sum(axis=1)
        total_sq += np.square(frames).sum(axis=1)
        count += frames.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return BandStats(mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))


def band_stats(train: SplitTable, melspecs: Path, window: int) -> BandStats:
    """`compute_band_stats`, cached on disk so that a study computes it once."""
    key = hashlib.sha256(
        json.dumps([str(Path(melspecs).resolve()), str(train.file.resolve()), window]).encode()
        + train.file.read_bytes()
    ).hexdigest()[:20]
    folder = cache_root() / "band_stats"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return BandStats.from_dict(json.loads(path.read_text()))
        log.info("computing per-band input statistics over %d training tracks", len(train))
        stats = compute_band_stats(train, Path(melspecs), window)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(stats.to_dict(), out)
        os.replace(temporary, path)
        return stats
