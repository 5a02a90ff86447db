"""Loader benchmark: random training windows per second from full-length tracks.

Writes synthetic 10-minute tracks (96 x 28,125 float32, 10.8 MB each) and
times, on one core, our window reader (a memory map advised for random
access, reading only the window's pages) against loading each whole `.npy`
and cropping it, as the official baseline's loader does. Both are measured
with the files in the page cache (warm) and evicted before every read
(cold: a 68 GB dataset does not stay in memory). Also times the complete
training item (window, standardisation, SpecAugment, tensor).

    python benchmarks/loader.py [--tracks 48] [--windows 3000] [--dir DIR]

The last line printed is a JSON object of the figures.
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

from mer_models.data.augment import SpecAugment
from mer_models.data.dataset import TrainWindows
from mer_models.data.sources import MelspecFolder
from mer_models.data.splits import SplitTable
from mer_models.data.windows import FRAMES_PER_SECOND, open_melspec, random_start, read_window

WINDOW = 500
FRAMES = int(600 * FRAMES_PER_SECOND)  # a 10-minute track


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def ours(path: Path, rng: np.random.Generator) -> np.ndarray:
    array = open_melspec(path)
    return read_window(array, random_start(array.shape[1], WINDOW, rng), WINDOW)


def whole_file(path: Path, rng: np.random.Generator) -> np.ndarray:
    array = np.load(path)
    start = random_start(array.shape[1], WINDOW, rng)
    return array[:, start : start + WINDOW].copy()


def windows_per_second(reader, files: list[Path], count: int, cold: bool) -> float:
    rng = np.random.default_rng(0)
    order = rng.integers(0, len(files), size=count)
    elapsed = 0.0
    for index in order:
        if cold:
            evict(files[index])
        started = time.perf_counter()
        reader(files[index], rng)
        elapsed += time.perf_counter() - started
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--windows", type=int, default=3000)
    parser.add_argument("--dir", help="where to write the tracks (default: a temporary folder)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    root = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        files = []
        for track in range(args.tracks):
            path = root / f"{track:02d}" / f"{track}.npy"
            path.parent.mkdir()
            np.save(path, rng.normal(-40, 12, (96, FRAMES)).astype(np.float32))
            files.append(path)
        for path in files:  # warm the page cache
            np.load(path)
        slow_count = max(args.windows // 20, 50)
        figures = {
            "track_frames": FRAMES,
            "window": WINDOW,
            "ours_warm": windows_per_second(ours, files, args.windows, cold=False),
            "whole_file_warm": windows_per_second(whole_file, files, slow_count, cold=False),
            "ours_cold": windows_per_second(ours, files, slow_count * 4, cold=True),
            "whole_file_cold": windows_per_second(whole_file, files, slow_count, cold=True),
        }
        table = SplitTable(
            file=root / "bench.tsv",
            track_ids=tuple(f"track_{i}" for i in range(len(files))),
            melspec_paths=tuple(str(p.relative_to(root)) for p in files),
            durations=np.full(len(files), FRAMES / FRAMES_PER_SECOND),
            labels=np.zeros((len(files), 56), bool),
            tags=tuple(f"tag{i}" for i in range(56)),
        )
        dataset = TrainWindows(table, MelspecFolder(table, root), WINDOW, SpecAugment())
        keys = [
            (int(i), int(s))
            for i, s in zip(
                rng.integers(0, len(files), args.windows),
                rng.integers(0, 1 << 62, args.windows),
                strict=True,
            )
        ]
        started = time.perf_counter()
        for key in keys:
            dataset[key]
        figures["training_items_per_second"] = len(keys) / (time.perf_counter() - started)
        figures["speedup"] = figures["ours_warm"] / figures["whole_file_warm"]
        figures["speedup_cold"] = figures["ours_cold"] / figures["whole_file_cold"]
        figures = {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}
        print(f"random {WINDOW}-frame windows per second from 10-minute tracks, one core:")
        print(
            f"  page cache warm: ours {figures['ours_warm']:.0f}/s, whole file "
            f"{figures['whole_file_warm']:.0f}/s, speedup {figures['speedup']:.1f}x"
        )
        print(
            f"  page cache cold: ours {figures['ours_cold']:.0f}/s, whole file "
            f"{figures['whole_file_cold']:.0f}/s, speedup {figures['speedup_cold']:.1f}x"
        )
        print(
            f"  complete training items (window + scaling + SpecAugment): "
            f"{figures['training_items_per_second']:.0f}/s"
        )
        print(json.dumps(figures))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
