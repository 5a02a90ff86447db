"""Input scaling: per-band standardisation with training-split statistics.

The mean and standard deviation of each mel band are computed once over the
centred window of every training track (only real frames, no padding) and
cached, keyed by where the windows come from (melspec folder or packed
store), the training split file and the window.
Validation and test windows are scaled with the same training statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
from filelock import FileLock

from mer_models.data.cache import cache_root
from mer_models.data.sources import WindowSource, window_source
from mer_models.data.splits import DatasetPaths, SplitTable
from mer_models.data.windows import centred_starts
from mer_models.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation, float32 (n_bands,)."""

    mean: np.ndarray
    std: np.ndarray

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> BandStats:
        return cls(np.asarray(values["mean"], np.float32), np.asarray(values["std"], np.float32))


def compute_band_stats(train: SplitTable, source: WindowSource, window: int) -> BandStats:
    """Mean and std per band over the centred windows of the training tracks."""
    total = None
    total_sq = None
    count = 0
    for index in range(len(train)):
        n_frames = source.length(index)
        start = int(centred_starts(n_frames, window)[0])
        real = min(window, n_frames - start)  # padding is not data
        frames = np.asarray(source.read(index, start, real), dtype=np.float64)
        if total is None:
            total = np.zeros(frames.shape[0])
            total_sq = np.zeros(frames.shape[0])
        total += frames.sum(axis=1)
        total_sq += np.square(frames).sum(axis=1)
        count += frames.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return BandStats(mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))


def band_stats(train: SplitTable, paths: DatasetPaths, window: int) -> BandStats:
    """`compute_band_stats`, cached on disk so that a study computes it once.

    Concurrent trials of a new window wait on one file lock while the first
    computes; the file is written whole (`atomic_write_text`). A process
    keeps what it read, so a worker running trial after trial reads it once.
    """
    key = hashlib.sha256(
        json.dumps([str(paths.windows), str(train.file.resolve()), window]).encode()
        + train.file.read_bytes()
        + _store_identity(paths)
    ).hexdigest()[:20]
    path = cache_root() / "band_stats" / f"{key}.json"
    known = _READ.get(str(path))
    if known is not None and path.is_file():  # still on disk: a cleared cache is rebuilt
        return known
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            stats = BandStats.from_dict(json.loads(path.read_text()))
        else:
            log.info("computing per-band input statistics over %d training tracks", len(train))
            stats = compute_band_stats(train, window_source(paths, train), window)
            atomic_write_text(path, json.dumps(stats.to_dict()))
    stats.mean.flags.writeable = False  # shared by the process's later trials
    stats.std.flags.writeable = False
    _READ[str(path)] = stats
    return stats


_READ: dict[str, BandStats] = {}  # band_stats' files this process has read, by path


def _store_identity(paths: DatasetPaths) -> bytes:
    """A packed store's manifest, so that a store rebuilt in place gets new statistics."""
    if paths.store is None:
        return b""
    from mer_models.data.store import MANIFEST

    return (paths.store / MANIFEST).read_bytes()
