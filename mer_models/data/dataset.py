"""Torch datasets and loaders of mel-spectrogram windows.

Randomness is keyed per sample, not per worker: the sampler hands each
index to the dataset together with a seed drawn from (run seed, epoch), so
the windows and masks of an epoch are the same whatever the number of
workers, and a run restored at epoch k sees exactly the samples an
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mer_models.data.augment import SpecAugment
from mer_models.data.scaling import BandStats
from mer_models.data.splits import DataError, SplitTable
from mer_models.data.windows import centred_starts, open_melspec, random_start, read_window


class TrainWindows(Dataset):
    """Random windows of training tracks, standardised, with SpecAugment.

    Items are keyed by `(index, sample_seed)` pairs from `EpochSampler`.
    Returns a (1, bands, window) float32 tensor and the (tags,) float32 labels.
    """

    def __init__(
        self,
        table: SplitTable,
        melspecs: Path,
        window: int,
        stats: BandStats,
        augment: SpecAugment | None,
    ) -> None:
        self.table = table
        self.melspecs = Path(melspecs)
        self.window = window
        self.stats = stats
        self.augment = augment
        self.labels = torch.from_numpy(table.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        array = open_melspec(self.melspecs / self.table.melspec_paths[index])
        window = read_window(array, random_start(array.shape[1], self.window, rng), self.window)
        window = _finite(self.stats.apply(window), self.table, index)
        if self.augment is not None:
            window = self.augment(window, rng)
        return torch.from_numpy(window)[None], self.labels[index]


class EvalWindows(Dataset):
    """`crops` windows centred on evenly spaced points of each track (1: the centre).

    Returns a (crops, 1, bands, window) float32 tensor and the (tags,) labels.
    """

    def __init__(
        self, table: SplitTable, melspecs: Path, window: int, stats: BandStats, crops: int = 1
    ) -> None:
        self.table = table
        self.melspecs = Path(melspecs)
        self.window = window
        self.stats = stats
        self.crops = crops
        self.labels = torch.from_numpy(table.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = open_melspec(self.melspecs / self.table.melspec_paths[index])
        starts = centred_starts(array.shape[1], self.window, self.crops)
        windows = np.stack([read_window(array, int(s), self.window) for s in starts])
        windows = _finite(self.stats.apply(windows), self.table, index)  # (K, bands, window)
        return torch.from_numpy(windows[:, None]), self.labels[index]


def _finite(window: np.ndarray, table: SplitTable, index: int) -> np.ndarray:
    if not np.isfinite(window).all():
        raise DataError(
            f"track {table.track_ids[index]} of {table.file} ({table.melspec_paths[index]}): "
            "the mel-spectrogram holds NaN or infinite values"
        )
    return window


class EpochSampler(Sampler):
    """Yields `(index, sample_seed)`: a seeded shuffle per epoch, a seed per sample.

    Call `set_epoch` before each epoch; everything follows from (seed, epoch).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**63 - 1, size=self.size)
        return iter(zip(order.tolist(), seeds[order].tolist(), strict=True))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    sampler: Sampler | None = None,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with persistent workers, and pinned memory when CUDA is present.

    Workers' own torch seeds derive from `seed`; sample randomness comes from
    the sampler's per-sample seeds.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
