"""Loader benchmark: random training windows and finished training items per second, one core.

Writes synthetic 10-minute tracks (96 x 28,125 float32, 10.8 MB each) in
the MTG-Jamendo layout, packs them into a window store, and times four
readers of a random 500-frame window: loading each whole `.npy` and
cropping it (the official baseline's loader), a plain `np.load(mmap_mode="r")`
crop (the control for the next), our `.npy` reader (a cached header, a
memory map advised for random access, reading only the window's pages, all
requested at once when they are not in memory) and the packed store
(time-major float16: one contiguous 96 KB read). Each is measured with its
data in the page cache (warm) and evicted before every read (cold: a 68 GB
dataset does not stay in memory). `--fortran` writes the tracks time-major,
as the dataset's extractor does; the default is band-major.

Finished training items are what the trainer builds: a loader worker reads
the raw window and draws its SpecAugment masks (`TrainWindows`), batches
are collated, and `BatchPreprocess` standardises and masks them (timed
here on the CPU, where a CPU run does it; a GPU run does it on the GPU).

    python benchmarks/loader.py [--tracks 48] [--windows 3000] [--dir DIR] [--fortran]

`--dir` should be on a real disk (not tmpfs) for the cold figures. The
last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mer_models.data.augment import BatchPreprocess, SpecAugment
from mer_models.data.dataset import TrainWindows, collate
from mer_models.data.scaling import BandStats
from mer_models.data.sources import MelspecFolder, window_source
from mer_models.data.splits import DatasetPaths, load_split
from mer_models.data.store import DATA, pack
from mer_models.data.windows import FRAMES_PER_SECOND, open_melspec, random_start, read_window

WINDOW = 500
FRAMES = int(600 * FRAMES_PER_SECOND)  # a 10-minute track
BATCH = 32
TAGS = tuple(f"mood/theme---tag{i:02d}" for i in range(56))
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def write_dataset(root: Path, tracks: int, fortran: bool = False) -> DatasetPaths:
    """`tracks` 10-minute training tracks (and one short track per evaluation part); with
    `fortran`, time-major on disk as the dataset's extractor writes them."""
    rng = np.random.default_rng(0)
    metadata, melspecs = root / "metadata", root / "melspecs"
    (metadata / "data" / "tags").mkdir(parents=True)
    (metadata / "data" / "tags" / "moodtheme_split.txt").write_text("\n".join(TAGS) + "\n")
    splits = metadata / "data" / "splits" / "split-0"
    splits.mkdir(parents=True)
    sizes = {"train": [FRAMES] * tracks, "validation": [WINDOW], "test": [WINDOW]}
    track = 0
    for part, lengths in sizes.items():
        rows = [HEADER]
        for frames in lengths:
            relative = f"{track % 100:02d}/{track}"
            (melspecs / relative).parent.mkdir(parents=True, exist_ok=True)
            values = rng.normal(-40, 12, (96, frames)).astype(np.float32)
            np.save(melspecs / f"{relative}.npy", np.asfortranarray(values) if fortran else values)
            seconds = frames / FRAMES_PER_SECOND
            rows.append(f"track_{track}\tartist\talbum\t{relative}.mp3\t{seconds:.1f}\t{TAGS[0]}")
            track += 1
        (splits / f"autotagging_moodtheme-{part}.tsv").write_text("\n".join(rows) + "\n")
    return DatasetPaths(metadata, melspecs)


def evict(path: Path, offset: int = 0, length: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Readers:
    """The four ways of reading a random window of training track `index`."""

    def __init__(self, paths: DatasetPaths, store: Path) -> None:
        self.table = load_split(paths, "train")
        self.files = [paths.melspecs / relative for relative in self.table.melspec_paths]
        stored = DatasetPaths(paths.metadata, store=store)
        self.packed = window_source(stored, self.table)
        self.data = store / DATA

    def whole_file(self, index: int, rng: np.random.Generator) -> np.ndarray:
        array = np.load(self.files[index])
        start = random_start(array.shape[1], WINDOW, rng)
        return array[:, start : start + WINDOW].copy()

    def plain_mmap(self, index: int, rng: np.random.Generator) -> np.ndarray:
        array = np.load(self.files[index], mmap_mode="r")
        start = random_start(array.shape[1], WINDOW, rng)
        return np.array(array[:, start : start + WINDOW], dtype=np.float32)

    def melspec(self, index: int, rng: np.random.Generator) -> np.ndarray:
        array = open_melspec(self.files[index])
        return read_window(array, random_start(array.shape[1], WINDOW, rng), WINDOW)

    def store(self, index: int, rng: np.random.Generator) -> np.ndarray:
        start = random_start(self.packed.length(index), WINDOW, rng)
        return self.packed.read(index, start, WINDOW)

    def evict(self, reader: str, index: int) -> None:
        if reader == "store":
            row_bytes = 96 * 2
            start = int(self.packed.starts[index]) * row_bytes
            evict(self.data, start, int(self.packed.frames[index]) * row_bytes)
        else:
            evict(self.files[index])


def windows_per_second(readers: Readers, reader: str, count: int, cold: bool) -> float:
    read = getattr(readers, reader)
    rng = np.random.default_rng(0)
    order = rng.integers(0, len(readers.files), size=count)
    elapsed = 0.0
    for index in order:
        if cold:
            readers.evict(reader, int(index))
        started = time.perf_counter()
        read(int(index), rng)
        elapsed += time.perf_counter() - started
    return count / elapsed


def item_seconds(dataset: TrainWindows, count: int) -> tuple[float, float, float]:
    """Seconds per item of a worker (read + masks), of collation and of the batched preprocess.

    Batch by batch, as a loader worker and the trainer go, so that memory is
    reused as it is there.
    """
    rng = np.random.default_rng(1)
    keys = [
        (int(i), int(s))
        for i, s in zip(
            rng.integers(0, len(dataset), count), rng.integers(0, 1 << 62, count), strict=True
        )
    ]
    stats = BandStats(np.full(96, -40, np.float32), np.full(96, 12, np.float32))
    preprocess = BatchPreprocess(stats)
    seconds = np.zeros(3)
    batches = [keys[i : i + BATCH] for i in range(0, count - BATCH + 1, BATCH)]
    for number, batch in enumerate(batches):
        started = time.perf_counter()
        items = [dataset[key] for key in batch]
        read = time.perf_counter()
        windows, _, masks = collate(items)
        collated = time.perf_counter()
        preprocess(windows, masks)
        if number > 0:  # the first batch warms up
            seconds += [read - started, collated - read, time.perf_counter() - collated]
    worker, collated, batched = seconds / ((len(batches) - 1) * BATCH)
    return worker, collated, batched


def before_item_seconds(readers: Readers, count: int) -> float:
    """Seconds per item of the former pipeline, the control: everything per item in NumPy.

    Read the float32 window, standardise it and apply SpecAugment in the
    worker, then collate float32 batches (as the loader did before batches
    were preprocessed on the device).
    """
    mean, std = np.full((96, 1), -40, np.float32), np.full((96, 1), 12, np.float32)
    labels = torch.zeros(len(readers.table), 56)
    rng = np.random.default_rng(2)
    keys = [
        (int(i), int(s))
        for i, s in zip(
            rng.integers(0, len(labels), count), rng.integers(0, 1 << 62, count), strict=True
        )
    ]
    started = time.perf_counter()
    for first in range(0, count - BATCH + 1, BATCH):
        items = []
        for index, seed in keys[first : first + BATCH]:
            item_rng = np.random.default_rng(seed)
            window = readers.melspec(index, item_rng)
            if not np.isfinite(window).all():
                raise ValueError("non-finite window")
            window -= mean
            window /= std
            width = int(item_rng.integers(0, 11))
            start = int(item_rng.integers(0, 96 - width + 1))
            window[start : start + width, :] = 0.0
            width = int(item_rng.integers(0, 11))
            start = int(item_rng.integers(0, WINDOW - width + 1))
            window[:, start : start + width] = 0.0
            items.append((torch.from_numpy(window)[None], labels[index]))
        collate(items)
    return (time.perf_counter() - started) / (count // BATCH * BATCH)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--windows", type=int, default=3000)
    parser.add_argument("--dir", help="where to write the tracks (default: a temporary folder)")
    parser.add_argument("--fortran", action="store_true", help="time-major tracks on disk")
    return parser.parse_args()


def warm_page_cache(readers: Readers) -> None:
    """Every track file and the packed store read once, so that warm reads find them in memory."""
    for path in readers.files:
        np.load(path)
    readers.data.read_bytes()


def window_figures(readers: Readers, windows: int) -> dict:
    """Random windows per second of each reader, page cache warm then cold (the slow readers
    read fewer windows)."""
    slow_count = max(windows // 20, 50)
    figures = {}
    warm = (("melspec", windows), ("plain_mmap", windows), ("whole_file", slow_count))
    for reader, count in warm:
        figures[f"{reader}_warm"] = windows_per_second(readers, reader, count, cold=False)
    figures["store_warm"] = windows_per_second(readers, "store", windows * 3, cold=False)
    cold = (
        ("melspec", slow_count * 4),
        ("plain_mmap", slow_count * 4),
        ("whole_file", slow_count),
    )
    for reader, count in cold:
        figures[f"{reader}_cold"] = windows_per_second(readers, reader, count, cold=True)
    figures["store_cold"] = windows_per_second(readers, "store", slow_count * 4, cold=True)
    return figures


def item_figures(readers: Readers, paths: DatasetPaths, store: Path, windows: int) -> dict:
    """Finished training items per second from the packed store and from the `.npy` files,
    and from the former per-item pipeline (the control)."""
    augment = SpecAugment()
    sources = {
        "store": window_source(DatasetPaths(paths.metadata, store=store), readers.table),
        "melspec": MelspecFolder(readers.table, paths.melspecs),
    }
    figures = {}
    for name, source in sources.items():
        dataset = TrainWindows(readers.table, source, WINDOW, augment)
        worker, collated, batched = item_seconds(dataset, windows)
        figures[f"{name}_worker_items_per_second"] = 1 / worker
        figures[f"{name}_items_per_second"] = 1 / (worker + collated + batched)
        figures[f"{name}_worker_collated_items_per_second"] = 1 / (worker + collated)
        if name == "store":
            figures["collate_us_per_item"] = collated * 1e6
            figures["preprocess_us_per_item"] = batched * 1e6
    figures["items_per_second"] = figures["store_items_per_second"]
    figures["before_items_per_second"] = 1 / before_item_seconds(readers, windows)
    figures["items_vs_before"] = figures["items_per_second"] / figures["before_items_per_second"]
    return figures


def speedups(figures: dict) -> dict:
    """The readers' windows per second over the whole file's and over the plain memory map's."""
    return {
        "speedup": figures["melspec_warm"] / figures["whole_file_warm"],
        "speedup_cold": figures["melspec_cold"] / figures["whole_file_cold"],
        # What the cached header, the random-access advice and the prefetch buy.
        "vs_plain_mmap": figures["melspec_warm"] / figures["plain_mmap_warm"],
        "vs_plain_mmap_cold": figures["melspec_cold"] / figures["plain_mmap_cold"],
        "packed_speedup": figures["store_warm"] / figures["whole_file_warm"],
        "packed_speedup_cold": figures["store_cold"] / figures["whole_file_cold"],
    }


def print_figures(figures: dict) -> None:
    """The figures in sentences, then as the JSON object on the last line."""
    print(f"random {WINDOW}-frame windows per second from 10-minute tracks, one core:")
    for cache in ("warm", "cold"):
        print(
            f"  page cache {cache}: whole file {figures[f'whole_file_{cache}']:.0f}/s, plain "
            f"np.load memory map {figures[f'plain_mmap_{cache}']:.0f}/s, .npy "
            f"reader {figures[f'melspec_{cache}']:.0f}/s, packed store "
            f"{figures[f'store_{cache}']:.0f}/s"
        )
    print(
        f"  speedup over the whole file, warm: .npy reader {figures['speedup']:.1f}x, packed "
        f"store {figures['packed_speedup']:.1f}x (cold: {figures['speedup_cold']:.1f}x, "
        f"{figures['packed_speedup_cold']:.1f}x)"
    )
    print(
        f"  .npy reader over a plain np.load memory map: {figures['vs_plain_mmap']:.1f}x warm, "
        f"{figures['vs_plain_mmap_cold']:.1f}x cold"
    )
    print(
        f"finished training items per second, one core (worker read + masks, collation, "
        f"batched standardise + mask on the CPU: {figures['preprocess_us_per_item']:.0f} us "
        f"an item): packed store {figures['store_items_per_second']:.0f}/s, .npy files "
        f"{figures['melspec_items_per_second']:.0f}/s"
    )
    print(
        f"  the former per-item NumPy pipeline (.npy files, control, same run): "
        f"{figures['before_items_per_second']:.0f}/s; packed store "
        f"{figures['items_vs_before']:.1f}x that; without the CPU preprocess (a GPU run "
        f"does it on the GPU) {figures['store_worker_collated_items_per_second']:.0f}/s"
    )
    print(f"packing: {figures['pack_mb_per_second']:.0f} MB/s of float32 input")
    print(json.dumps(figures))


def main() -> None:
    args = parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.dir))
    os.environ.setdefault("MER_MODELS_CACHE", str(root / "cache"))
    try:
        paths = write_dataset(root, args.tracks, args.fortran)
        started = time.perf_counter()
        store = pack(paths, root / "store", progress=False).store
        pack_seconds = time.perf_counter() - started
        readers = Readers(paths, store.path)
        warm_page_cache(readers)
        figures: dict = {"track_frames": FRAMES, "window": WINDOW, "tracks": args.tracks}
        figures["layout"] = "time-major" if args.fortran else "band-major"
        figures["pack_mb_per_second"] = store.manifest["frames_total"] * 96 * 4 / 1e6 / pack_seconds
        figures.update(window_figures(readers, args.windows))
        warm_page_cache(readers)  # the cold runs evicted it
        figures.update(item_figures(readers, paths, store.path, args.windows))
        figures.update(speedups(figures))
        print_figures({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
