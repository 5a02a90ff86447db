"""Writing the synthetic dataset: a new folder, complete or absent, and the project's cached one.

The files are those of the real repository layout (the five official splits
`split-0` .. `split-4`, each of three TSVs with CRLF line ends like the real
ones, the tag list, `NN/ID.npy` float32 (96, n_frames) dB arrays at 46.875
frames/s), so the real loaders read them unchanged. Every track is drawn
from numpy generators seeded by (seed, stream, track), so equal arguments
give byte-identical files, whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from mer_models.data.cache import cache_root
from mer_models.data.splits import PARTS, DatasetPaths
from mer_models.data.synthetic.catalogue import SPLITS, TAGS, Catalogue, plan_catalogue
from mer_models.data.synthetic.render import render_track
from mer_models.data.windows import FRAMES_PER_SECOND

log = logging.getLogger(__name__)

# Bump when the generated content changes: it names the cache folder, so a
# new generator never reads a dataset written by an older one.
GENERATOR_VERSION = 3
DEFAULT_TRACKS = 1000
MIN_TRACKS = 50
MARKER = "synthetic-complete.json"  # written last: a folder without it is not a dataset


# --- writing a dataset -------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a generation wrote, for the one-line report of the command line."""

    root: Path
    tracks: tuple[int, ...]  # per part of split 0, in PARTS order
    frames: int
    bytes: int
    seconds: float

    def line(self) -> str:
        parts = ", ".join(f"{part} {count}" for part, count in zip(PARTS, self.tracks, strict=True))
        hours = self.frames / FRAMES_PER_SECOND / 3600
        return (
            f"synthetic dataset in {self.root}: {sum(self.tracks)} tracks ({parts}), "
            f"{len(TAGS)} tags, {self.frames} frames ({hours:.1f} h), "
            f"{self.bytes / 1e6:.0f} MB, {self.seconds:.1f} s"
        )


def synthetic_paths(root: str | Path, split: int = 0) -> DatasetPaths:
    """The `DatasetPaths` of a dataset written under `root`: moodtheme, split `split`."""
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < SPLITS:
        raise ValueError(f"split must be an integer in 0..{SPLITS - 1}, got {split!r}")
    root = Path(root)
    return DatasetPaths(root / "metadata", root / "melspecs", split=split, subset="moodtheme")


def write_synthetic(
    out: str | Path, tracks: int = DEFAULT_TRACKS, seed: int = 0, workers: int | None = None
) -> Summary:
    """Generate a dataset into `out`, which must not exist or be an empty folder.

    Files are written into a temporary folder next to `out` and renamed into
    place at the end, with the marker file last, so `out` is either absent or
    complete. `workers` processes render the tracks (default: up to 2, none
    inside a daemon process, which may not start children); the files do not
    depend on it.
    """
    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    _check_arguments(out, tracks, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Made with the umask's permissions (tempfile.mkdtemp's 0700 would keep the dataset
    # from everyone else on a shared cache).
    temporary = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        catalogue = plan_catalogue(tracks, seed)
        _write_metadata(temporary / "metadata", catalogue)
        _write_melspecs(temporary / "melspecs", catalogue, seed, _worker_count(workers))
        summary = Summary(
            root=out,
            tracks=tuple(int((catalogue.parts == p).sum()) for p in range(len(PARTS))),
            frames=int(catalogue.frames.sum()),
            bytes=sum(f.stat().st_size for f in temporary.rglob("*") if f.is_file()),
            seconds=0.0,
        )
        marker = {"generator_version": GENERATOR_VERSION, "tracks": tracks, "seed": seed}
        (temporary / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # empty, as checked; os.replace cannot replace a folder
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log.info("generated %d synthetic tracks in %s in %.1f s", tracks, out, seconds)
    return Summary(out, summary.tracks, summary.frames, summary.bytes, seconds)


def _check_arguments(out: Path, tracks: int, seed: int) -> None:
    if isinstance(tracks, bool) or not isinstance(tracks, int) or tracks < MIN_TRACKS:
        raise ValueError(
            f"tracks must be an integer >= {MIN_TRACKS} (every tag must appear in every "
            f"part), got {tracks!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not an empty folder")


def _worker_count(workers: int | None) -> int:
    if workers is None:
        if multiprocessing.current_process().daemon:
            return 1
        return max(1, min(2, os.cpu_count() or 1))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def _write_metadata(metadata: Path, catalogue: Catalogue) -> None:
    """Tag list, the three split files of each of the SPLITS splits and the table of all tracks."""
    tags = metadata / "data" / "tags"
    tags.mkdir(parents=True)
    (tags / "moodtheme_split.txt").write_text("\n".join(TAGS) + "\n")
    # The real TSVs end their lines with CRLF; readers must cope, so ours do too.
    for split in range(SPLITS):
        folder = metadata / "data" / "splits" / f"split-{split}"
        folder.mkdir(parents=True)
        for part, name in enumerate(PARTS):
            rows = catalogue.rows(part, split=split)
            _write_tsv(folder / f"autotagging_moodtheme-{name}.tsv", rows)
    _write_tsv(metadata / "data" / "autotagging_moodtheme.tsv", catalogue.rows())


def _write_tsv(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def _write_melspecs(melspecs: Path, catalogue: Catalogue, seed: int, workers: int) -> None:
    jobs = [
        (
            melspecs / catalogue.melspec_path(i),
            int(catalogue.frames[i]),
            catalogue.labels[i],
            seed,
            i,
        )
        for i in range(len(catalogue))
    ]
    for folder in sorted({path.parent for path, *_ in jobs}):
        folder.mkdir(parents=True)
    if workers == 1:
        for job in jobs:
            _write_track(*job)
        return
    # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy half-way.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(1, len(jobs) // (8 * workers))
        for _ in pool.map(_write_track, *zip(*jobs, strict=True), chunksize=chunk):
            pass


def _write_track(path: Path, n_frames: int, labels: np.ndarray, seed: int, index: int) -> None:
    melspec, _ = render_track(n_frames, labels, np.random.default_rng((seed, 1, index)))
    np.save(path, melspec)


# --- the cached dataset of the project --------------------------------------------------------


def synthetic_dataset(
    tracks: int = DEFAULT_TRACKS, seed: int = 0, cache_dir: Path | None = None
) -> DatasetPaths:
    """The cached synthetic dataset of these arguments, generated first when missing.

    Lives in `cache_dir`, else `$MER_MODELS_CACHE`, else `~/.cache/mer_models`,
    in a folder named by generator version, tracks and seed. Several processes
    (Ray workers, parallel tests) may ask at once: a file lock lets one of
    them generate while the others wait, and a folder counts as complete only
    when the marker file, written last, is there.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / f"synthetic-v{GENERATOR_VERSION}-t{tracks}-s{seed}"
    if not (folder / MARKER).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f"{folder.name}.lock")):
            if not (folder / MARKER).is_file():
                if folder.exists():  # not ours: complete datasets always carry the marker
                    log.warning("removing incomplete synthetic dataset %s", folder)
                    shutil.rmtree(folder)
                log.info("generating the synthetic dataset (%d tracks, once) in %s", tracks, folder)
                write_synthetic(folder, tracks=tracks, seed=seed)
    return synthetic_paths(folder)
