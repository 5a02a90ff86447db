"""Torch datasets and loaders of raw mel-spectrogram windows.

Items hold raw dB windows (float16 from a packed store, float32 from .npy
files) and, for training, the SpecAugment masks drawn for them; the trainer
standardises and masks whole batches on its device
(`mer_models.data.augment.BatchPreprocess`).

Randomness is keyed per sample, not per worker: the sampler hands each
index to the dataset together with a seed drawn from (run seed, epoch), so
the windows and masks of an epoch are the same whatever the number of
workers, and a run restored at epoch k sees exactly the samples an
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mer_models.data.augment import NO_MASKS, SpecAugment
from mer_models.data.sources import WindowSource
from mer_models.data.splits import DataError, SplitTable
from mer_models.data.windows import centred_starts, random_start


class TrainWindows(Dataset):
    """Random raw windows of training tracks, with their SpecAugment masks.

    Items are keyed by `(index, sample_seed)` pairs from `EpochSampler`.
    Returns the (1, bands, window) raw window, the (tags,) float32 labels and
    the int64 (4,) masks (freq_start, freq_width, time_start, time_width;
    zero widths without augmentation).
    """

    def __init__(
        self, table: SplitTable, source: WindowSource, window: int, augment: SpecAugment | None
    ) -> None:
        self.table = table
        self.source = source
        self.window = window
        self.augment = augment
        self.labels = torch.from_numpy(table.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        start = random_start(self.source.length(index), self.window, rng)
        window = _finite(self.source.read(index, start, self.window), self.table, index)
        masks = NO_MASKS if self.augment is None else self.augment.draw(*window.shape, rng)
        return torch.from_numpy(window[None]), self.labels[index], torch.from_numpy(masks)


class EvalWindows(Dataset):
    """`crops` raw windows centred on evenly spaced points of each track (1: the centre).

    Returns a (crops, 1, bands, window) raw tensor and the (tags,) labels.
    """

    def __init__(
        self, table: SplitTable, source: WindowSource, window: int, crops: int = 1
    ) -> None:
        self.table = table
        self.source = source
        self.window = window
        self.crops = crops
        self.labels = torch.from_numpy(table.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = centred_starts(self.source.length(index), self.window, self.crops)
        # Stacked in the source's own layout (a store's windows are transposed
        # views of time-major buffers), so that the copy is contiguous.
        reads = [self.source.read(index, int(s), self.window) for s in starts]
        if reads[0].flags.f_contiguous and not reads[0].flags.c_contiguous:
            windows = np.stack([read.T for read in reads]).transpose(0, 2, 1)
        else:
            windows = np.stack(reads)
        windows = _finite(windows, self.table, index)  # (K, bands, window)
        return torch.from_numpy(windows[:, None]), self.labels[index]


def _finite(window: np.ndarray, table: SplitTable, index: int) -> np.ndarray:
    if not all_finite(window):
        raise DataError(
            f"track {table.track_ids[index]} of {table.file} ({table.melspec_paths[index]}): "
            "the mel-spectrogram holds NaN or infinite values"
        )
    return window


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite; float16 by its exponent bits (numpy's float16 is slow)."""
    if values.dtype == np.float16:
        if values.flags.f_contiguous:  # a store's transposed window: read it as it lies
            values = values.T
        return bool((values.view(np.uint16) & 0x7FFF).max() < 0x7C00)
    return bool(np.isfinite(values).all())


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


def collate(batch: list) -> list:
    """`default_collate`, stacking time-major windows (a packed store's) as they lie.

    A store's windows are (bands, frames) views of (frames, bands) buffers;
    stacked band-major they would be copied element by element (7x slower).
    Stacked time-major and transposed as a view, the batch's transpose
    happens in `BatchPreprocess`'s float32 copy, at no extra cost.
    """
    windows = batch[0][0]
    if windows.dim() < 2 or windows.is_contiguous() or not windows.mT.is_contiguous():
        return default_collate(batch)
    stacked = default_collate([item[0].mT for item in batch]).mT
    return [stacked, *default_collate([item[1:] for item in batch])]


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
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
