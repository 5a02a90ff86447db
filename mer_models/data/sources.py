"""Where the windows of a split's tracks come from: a melspec folder or a packed store.

A source is bound to one `SplitTable` and addressed by its row index, so
datasets and band statistics read windows the same way from either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mer_models.data.splits import DatasetPaths, SplitTable
from mer_models.data.store import cached_store
from mer_models.data.windows import open_melspec, read_window


class WindowSource(Protocol):
    """Raw dB windows of a table's tracks, by row index."""

    def length(self, index: int) -> int:
        """Frames of the track."""
        ...

    def read(self, index: int, start: int, frames: int) -> np.ndarray:
        """(bands, frames) dB values from `start`, padded at the end with PAD_DB.

        float32 from .npy files, float16 from a packed store; possibly a
        view, which the caller must not write to.
        """
        ...


class MelspecFolder:
    """Windows read through memory maps of the `NN/ID.npy` files of a melspec folder.

    The last opened track stays mapped, so that its length and its windows
    (several for multi-crop evaluation) cost one open.
    """

    def __init__(self, table: SplitTable, melspecs: str | Path) -> None:
        self.table = table
        self.melspecs = Path(melspecs)
        self._open: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": None}  # a worker maps its own files

    def _array(self, index: int) -> np.ndarray:
        if self._open is None or self._open[0] != index:
            self._open = (index, open_melspec(self.melspecs / self.table.melspec_paths[index]))
        return self._open[1]

    def length(self, index: int) -> int:
        return self._array(index).shape[1]

    def read(self, index: int, start: int, frames: int) -> np.ndarray:
        return read_window(self._array(index), start, frames)


def window_source(paths: DatasetPaths, table: SplitTable) -> WindowSource:
    """The source of `table`'s windows: the dataset's packed store if it has one.

    A store built from another split, subset or tag order is refused.
    """
    if paths.store is not None:
        store = cached_store(paths.store)
        store.require_matches(paths, table.tags)
        return store.source(table)
    return MelspecFolder(table, paths.melspecs)
