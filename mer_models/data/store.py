"""The packed window store: every track of a split once, time-major float16.

A melspec file is (96, T) float32, so a 500-frame window touches one page
per band row; in the store each track is (T, 96) float16, so the same
window is one contiguous 96 KB read, and the data halves (split-0's
mood/theme tracks, about 68-80 GB of float32 melspecs, become a 34-40 GB
store, which a large GPU node's page cache can hold). A store folder holds:

- ``windows.f16``: the tracks one after another, float16 (frames, bands);
- ``index.npy``: per track (in manifest order) its first frame, frame count
  and a BLAKE2b digest of its bytes;
- ``manifest.json``: format version, split, subset, tag order, the track ids
  of each part and the rounding error of packing. Written last and
  atomically: a store without it is unfinished and is never read.

Packing is resumable: ``pack.json`` records how many tracks are safely on
disk, and a new pack of the same split into the same folder continues from
there, writing the very bytes an uninterrupted pack writes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer_models.data.splits import PARTS, DataError, DatasetPaths, SplitTable, load_split
from mer_models.data.windows import N_BANDS, PAD_DB, open_melspec
from mer_models.files import PARTIAL, atomic_write_bytes, atomic_write_text, file_identity
from mer_models.npy import load_npy

log = logging.getLogger(__name__)

FORMAT = "mer_models packed window store"
VERSION = 1
MANIFEST = "manifest.json"
DATA = "windows.f16"
INDEX = "index.npy"
PROGRESS = "pack.json"  # only while a pack is unfinished
DIGESTS = "pack-digests.bin"  # digests of the tracks written so far, while packing
FLOAT16_MAX = 65504.0
_DIGEST_BYTES = 16
_INDEX_DTYPE = np.dtype([("start", "<i8"), ("frames", "<i8"), ("digest", "u1", (_DIGEST_BYTES,))])
# Data is made durable and progress recorded after this many bytes or tracks.
_CHECKPOINT_BYTES = 256 << 20
_CHECKPOINT_TRACKS = 64


@dataclass(frozen=True)
class PackedStore:
    """An opened, complete store: manifest and index; windows are read through `source`."""

    path: Path
    manifest: dict[str, Any]
    index: np.ndarray  # _INDEX_DTYPE, one row per track in manifest order

    @property
    def split(self) -> int:
        return int(self.manifest["split"])

    @property
    def subset(self) -> str:
        return str(self.manifest["subset"])

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.manifest["tags"])

    def track_ids(self) -> list[str]:
        return [track for part in PARTS for track in self.manifest["tracks"][part]]

    def describe(self) -> str:
        return f"split-{self.split} {self.subset}, {len(self.tags)} tags"

    def require_matches(self, paths: DatasetPaths, tags: tuple[str, ...]) -> None:
        """Refuse a dataset whose split, subset or tag order differs from the store's."""
        if (paths.split, paths.subset) != (self.split, self.subset):
            raise DataError(
                f"packed store {self.path} was built from split-{self.split} {self.subset}; the "
                f"dataset asks for split-{paths.split} {paths.subset} (metadata {paths.metadata}). "
                "Use the store's split and subset, or pack that split into another store."
            )
        if tags != self.tags:
            differs = next(
                (i for i, (a, b) in enumerate(zip(tags, self.tags, strict=False)) if a != b),
                min(len(tags), len(self.tags)),
            )
            raise DataError(
                f"packed store {self.path} was built with another tag order than "
                f"{paths.tag_file()}: {len(self.tags)} tags against {len(tags)}, first "
                f"difference at position {differs + 1} "
                f"({_at(self.tags, differs)!r} in the store, {_at(tags, differs)!r} in the "
                "metadata). Pack the store again from this metadata."
            )

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        """Each track's row in the index (built once per opened store)."""
        return {track: row for row, track in enumerate(self.track_ids())}

    def source(self, table: SplitTable) -> PackedSource:
        """The windows of `table`'s tracks; every track must be in the store."""
        rows = self._rows
        missing = [track for track in table.track_ids if track not in rows]
        if missing:
            raise DataError(
                f"packed store {self.path} ({self.describe()}) lacks {len(missing)} track(s) of "
                f"{table.file}, e.g. {', '.join(missing[:3])}: the metadata does not match the "
                "store. Pack the store again from this metadata."
            )
        entries = self.index[[rows[track] for track in table.track_ids]]
        return PackedSource(
            self.path / DATA,
            entries["start"].copy(),
            entries["frames"].copy(),
            int(self.manifest["bands"]),
        )


def _at(values: tuple[str, ...], position: int) -> str | None:
    return values[position] if position < len(values) else None


class PackedSource:
    """Windows of one table's tracks from a store's data file, one `pread` each.

    The file is opened lazily in each process (loader workers included).
    Windows are (bands, frames) float16 views of a fresh (frames, bands)
    buffer; tracks shorter than the window are padded with PAD_DB.
    """

    def __init__(self, data: Path, starts: np.ndarray, frames: np.ndarray, bands: int) -> None:
        self.data = data
        self.starts = starts
        self.frames = frames
        self.bands = bands
        self._descriptor: tuple[int, int] | None = None  # (pid, fd)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_descriptor": None}

    def __del__(self) -> None:
        if self._descriptor is not None and self._descriptor[0] == os.getpid():
            os.close(self._descriptor[1])

    def _fd(self) -> int:
        if self._descriptor is None or self._descriptor[0] != os.getpid():
            try:
                self._descriptor = (os.getpid(), os.open(self.data, os.O_RDONLY))
            except OSError as error:
                raise DataError(f"{self.data}: cannot open the packed store ({error})") from None
        return self._descriptor[1]

    def length(self, index: int) -> int:
        return int(self.frames[index])

    def read(self, index: int, start: int, frames: int) -> np.ndarray:
        real = max(min(int(self.frames[index]) - start, frames), 0)
        out = np.empty((frames, self.bands), dtype=np.float16)
        if real:
            row_bytes = self.bands * 2
            got = os.preadv(self._fd(), [out[:real]], (int(self.starts[index]) + start) * row_bytes)
            if got != real * row_bytes:
                raise DataError(
                    f"{self.data}: the packed store is truncated (a read of track row {index} "
                    "ended early); run python -m mer_models.data check --store on it"
                )
        out[real:] = PAD_DB
        return out.T  # (bands, frames)


# --- opening ------------------------------------------------------------------------------


def open_store(path: str | Path) -> PackedStore:
    """Open a complete store; an unfinished or foreign folder is a `DataError` saying why."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        if (path / PROGRESS).is_file():
            raise DataError(
                f"{path}: the packed store is unfinished (its pack was interrupted); run the "
                "same python -m mer_models.data pack command again to finish it"
            )
        raise DataError(
            f"{path}: not a packed store (no {MANIFEST}); build one with "
            "python -m mer_models.data pack"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{manifest_file}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{manifest_file}: not the manifest of a packed window store")
    if manifest.get("version") != VERSION:
        raise DataError(
            f"{manifest_file}: store format version {manifest.get('version')}; this version of "
            f"mer_models reads version {VERSION}. Pack the store again."
        )
    try:
        index = load_npy(
            path / INDEX,
            "packed store index",
            "pack the store again (python -m mer_models.data pack)",
        )
    except ValueError as error:
        raise DataError(str(error)) from None
    tracks = sum(len(manifest["tracks"][part]) for part in PARTS)
    if index.dtype != _INDEX_DTYPE or index.shape != (tracks,):
        raise DataError(
            f"{path / INDEX}: index is {index.dtype} {index.shape}; expected {tracks} entries "
            f"of {_INDEX_DTYPE} for the manifest's tracks"
        )
    return PackedStore(path.resolve(), manifest, index)


def cached_store(path: str | Path) -> PackedStore:
    """`open_store`, read once per process while its manifest and index stay the same
    (a worker running trial after trial opens its store once)."""
    path = Path(path)
    key = tuple(file_identity(path / name) for name in (MANIFEST, INDEX))
    store = _OPENED.get(key)
    if store is None:
        store = open_store(path)
        store.index.flags.writeable = False
        _OPENED.clear()  # one store at a time: an index is large
        _OPENED[key] = store
    return store


_OPENED: dict[tuple, PackedStore] = {}  # cached_store's store


# --- packing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackResult:
    store: PackedStore
    resumed_from: int  # tracks already on disk when this pack started
    already_complete: bool


def pack(paths: DatasetPaths, out: str | Path, progress: bool = True) -> PackResult:
    """Write the store of `paths` (melspec folder, split, subset) to `out`, or finish it.

    A complete store of the same split in `out` is left as it is; anything
    else already in `out` is refused rather than overwritten.
    """
    if paths.melspecs is None:
        raise DataError("packing reads a melspec folder: give --melspecs")
    out = Path(out)
    tables = {part: load_split(paths, part) for part in PARTS}
    identity = _identity(paths, tables)
    if (out / MANIFEST).is_file():
        store = open_store(out)
        if _same_identity(store.manifest, identity):
            (out / PROGRESS).unlink(missing_ok=True)
            (out / DIGESTS).unlink(missing_ok=True)
            return PackResult(store, len(store.index), already_complete=True)
        raise DataError(
            f"{out} already holds a complete packed store of {store.describe()} with other "
            f"tracks or tags than split-{paths.split} {paths.subset} of {paths.metadata}; "
            "choose another --out or remove it"
        )
    lengths = _track_lengths(paths, tables)
    plan = {**identity, "frames": lengths.tolist()}
    done = _resume_point(out, plan)
    _write_tracks(paths, tables, out, plan, done, progress)
    return PackResult(open_store(out), done, already_complete=False)


def _identity(paths: DatasetPaths, tables: dict[str, SplitTable]) -> dict[str, Any]:
    """What a store is built from: split, subset, tag order, track ids, file digests."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "split": paths.split,
        "subset": paths.subset,
        "bands": N_BANDS,
        "dtype": "float16",
        "layout": "time-major (frames, bands)",
        "tags": list(tables["train"].tags),
        "tracks": {part: list(tables[part].track_ids) for part in PARTS},
        "sources": {
            "tag_file": _sha256(paths.tag_file()),
            **{part: _sha256(paths.split_file(part)) for part in PARTS},
        },
    }


def _same_identity(manifest: dict[str, Any], identity: dict[str, Any]) -> bool:
    return all(manifest.get(key) == value for key, value in identity.items())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _track_lengths(paths: DatasetPaths, tables: dict[str, SplitTable]) -> np.ndarray:
    """Frames of every track, from the .npy headers (which are checked on the way)."""
    seen: dict[str, str] = {}
    lengths = []
    for part in PARTS:
        table = tables[part]
        for track, relative in zip(table.track_ids, table.melspec_paths, strict=True):
            if track in seen:
                raise DataError(
                    f"track {track} is in both the {seen[track]} and the {part} part of "
                    f"split-{paths.split} {paths.subset}; a split's parts must not overlap"
                )
            seen[track] = part
            lengths.append(_open(paths, track, relative).shape[1])
    return np.asarray(lengths, dtype=np.int64)


def _open(paths: DatasetPaths, track: str, relative: str) -> np.ndarray:
    try:
        return open_melspec(paths.melspecs / relative)
    except DataError as error:
        raise DataError(f"track {track}: {error}") from None


def _resume_point(out: Path, plan: dict[str, Any]) -> int:
    """Tracks already safely written by an earlier pack of the same plan (0: a fresh start)."""
    progress_file = out / PROGRESS
    if progress_file.is_file():
        try:
            progress = json.loads(progress_file.read_text())
        except json.JSONDecodeError:
            progress = {}
        if progress.get("plan") != plan:
            raise DataError(
                f"{out} holds an unfinished pack of another dataset (split-"
                f"{progress.get('plan', {}).get('split')} "
                f"{progress.get('plan', {}).get('subset')}, or other tracks, tags or files) than "
                f"split-{plan['split']} {plan['subset']}; remove it or choose another --out"
            )
        return int(progress["done"])
    if out.exists() and any(not _temporary(path) for path in out.iterdir()):
        raise DataError(
            f"{out} exists and is not a packed store: choose an empty or new folder for --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _atomic_json(progress_file, {"plan": plan, "done": 0, "max_abs_error_db": 0.0})
    return 0


def _write_tracks(
    paths: DatasetPaths,
    tables: dict[str, SplitTable],
    out: Path,
    plan: dict[str, Any],
    done: int,
    show: bool,
) -> None:
    layout = _Layout.of(tables, plan)
    progress = json.loads((out / PROGRESS).read_text())
    max_error = float(progress["max_abs_error_db"])
    data_fd = os.open(out / DATA, os.O_RDWR | os.O_CREAT, 0o666)  # as the umask allows
    digest_fd = os.open(out / DIGESTS, os.O_RDWR | os.O_CREAT, 0o666)  # as the umask allows
    tracks = len(layout.rows)
    meter = _Progress(
        tracks,
        layout.total_bytes,
        done,
        layout.offset(done) if done < tracks else layout.total_bytes,
        show,
    )
    try:
        os.ftruncate(data_fd, layout.total_bytes)
        os.ftruncate(digest_fd, tracks * _DIGEST_BYTES)
        max_error = _pack_rows(paths, out, plan, layout, done, data_fd, digest_fd, meter, max_error)
        digests = os.pread(digest_fd, tracks * _DIGEST_BYTES, 0)
    finally:
        os.close(data_fd)
        os.close(digest_fd)
        meter.close()
    _write_index(out, layout, digests)
    _complete(paths, out, plan, layout, max_error)


@dataclass(frozen=True)
class _Layout:
    """Where the tracks go: (track, melspec path) in store order, and each one's first frame
    and frames in the data file."""

    rows: list[tuple[str, str]]
    starts: np.ndarray
    lengths: np.ndarray
    row_bytes = N_BANDS * 2  # one float16 frame of every band (a class constant)

    @classmethod
    def of(cls, tables: dict[str, SplitTable], plan: dict[str, Any]) -> _Layout:
        lengths = np.asarray(plan["frames"], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rows = [
            (track, relative)
            for part in PARTS
            for track, relative in zip(
                tables[part].track_ids, tables[part].melspec_paths, strict=True
            )
        ]
        return cls(rows, starts, lengths)

    @property
    def total_bytes(self) -> int:
        return int(self.lengths.sum()) * self.row_bytes

    def offset(self, row: int) -> int:
        """The data file's byte offset of a track."""
        return int(self.starts[row]) * self.row_bytes


def _pack_rows(
    paths: DatasetPaths,
    out: Path,
    plan: dict[str, Any],
    layout: _Layout,
    done: int,
    data_fd: int,
    digest_fd: int,
    meter: _Progress,
    max_error: float,
) -> float:
    """Pack the tracks from `done` on into the open files, recording progress (synced) every
    checkpoint's worth of bytes or tracks and after the last; the largest error so far."""
    unsynced = since_checkpoint = 0
    for row in range(done, len(layout.rows)):
        track, relative = layout.rows[row]
        packed, error = _pack_track(paths, track, relative, int(layout.lengths[row]))
        os.pwrite(data_fd, packed, layout.offset(row))
        digest = hashlib.blake2b(packed, digest_size=_DIGEST_BYTES).digest()
        os.pwrite(digest_fd, digest, row * _DIGEST_BYTES)
        max_error = max(max_error, error)
        unsynced += len(packed)
        since_checkpoint += 1
        meter.update(row + 1, len(packed))
        if (
            unsynced >= _CHECKPOINT_BYTES
            or since_checkpoint >= _CHECKPOINT_TRACKS
            or row + 1 == len(layout.rows)
        ):
            os.fsync(data_fd)
            os.fsync(digest_fd)
            _atomic_json(
                out / PROGRESS, {"plan": plan, "done": row + 1, "max_abs_error_db": max_error}
            )
            unsynced = since_checkpoint = 0
    return max_error


def _write_index(out: Path, layout: _Layout, digests: bytes) -> None:
    """index.npy: every track's start, frames and digest."""
    index = np.empty(len(layout.rows), dtype=_INDEX_DTYPE)
    index["start"], index["frames"] = layout.starts, layout.lengths
    index["digest"] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, _DIGEST_BYTES)
    buffer = io.BytesIO()
    np.save(buffer, index)
    atomic_write_bytes(out / INDEX, buffer.getvalue())


def _complete(
    paths: DatasetPaths, out: Path, plan: dict[str, Any], layout: _Layout, max_error: float
) -> None:
    """Write the manifest that makes the store complete, then remove what packing left."""
    identity = {key: value for key, value in plan.items() if key != "frames"}
    manifest = {
        **identity,
        "frames_total": int(layout.lengths.sum()),
        "bytes": layout.total_bytes,
        "max_abs_error_db": max_error,
        "packed_from": {"metadata": str(paths.metadata), "melspecs": str(paths.melspecs)},
    }
    _atomic_json(out / MANIFEST, manifest)  # from here on the store is complete
    (out / PROGRESS).unlink()
    (out / DIGESTS).unlink()
    for path in out.iterdir():  # left by a pack killed while renaming a file into place
        if _temporary(path):
            path.unlink()


def _temporary(path: Path) -> bool:
    """A file `atomic_write_bytes` had not renamed into place yet (``.tmp``: older packs)."""
    return path.name.startswith(".") and path.name.endswith((PARTIAL, ".tmp"))


def _pack_track(paths: DatasetPaths, track: str, relative: str, frames: int) -> tuple[bytes, float]:
    """A track's (frames, bands) float16 bytes and its largest rounding error in dB."""
    array = _open(paths, track, relative)
    if array.shape[1] != frames:
        raise DataError(
            f"track {track}: {paths.melspecs / relative} now has {array.shape[1]} frames, "
            f"{frames} when this pack began; start the pack again in a new folder"
        )
    values = np.ascontiguousarray(array.T)  # (frames, bands) float32
    finite = np.isfinite(values)
    if not finite.all():
        frame, band = np.argwhere(~finite)[0]
        raise DataError(
            f"track {track}: {paths.melspecs / relative} holds NaN or infinite values (first at "
            f"band {band}, frame {frame}); a packed store holds finite values only"
        )
    too_large = np.abs(values) > FLOAT16_MAX
    if too_large.any():
        frame, band = np.argwhere(too_large)[0]
        raise DataError(
            f"track {track}: {paths.melspecs / relative} holds {values[frame, band]} at band "
            f"{band}, frame {frame}, beyond float16's range (|x| <= {FLOAT16_MAX:g}); dB values "
            "never are: check how this file was made, or train from --melspecs"
        )
    packed = values.astype(np.float16)
    error = float(np.abs(packed.astype(np.float32) - values).max(initial=0.0))
    return packed.tobytes(), error


def _atomic_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1))


class _Progress:
    """A progress line on stderr: redrawn in place on a terminal, every 10 s otherwise."""

    def __init__(self, tracks: int, total_bytes: int, done: int, done_bytes: int, show: bool):
        self.tracks, self.total_bytes = tracks, total_bytes
        self.done, self.bytes = done, done_bytes
        self.show = show
        self.terminal = sys.stderr.isatty()
        self.started = self.last = time.monotonic()
        self.start_bytes = done_bytes
        if show and done:
            print(f"resuming: {done}/{tracks} tracks already packed", file=sys.stderr)

    def update(self, done: int, written: int) -> None:
        self.done, self.bytes = done, self.bytes + written
        now = time.monotonic()
        if self.show and (
            now - self.last >= (0.2 if self.terminal else 10.0) or done == self.tracks
        ):
            self.last = now
            rate = (self.bytes - self.start_bytes) / max(now - self.started, 1e-9)
            left = (self.total_bytes - self.bytes) / rate if rate > 0 else 0.0
            line = (
                f"packing {done}/{self.tracks} tracks ({100 * done / self.tracks:.1f}%), "
                f"{self.bytes / 1e9:.2f}/{self.total_bytes / 1e9:.2f} GB, "
                f"{rate / 1e6:.0f} MB/s, {left / 60:.1f} min left"
            )
            print(
                ("\r" + line) if self.terminal else line,
                end="" if self.terminal else "\n",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.show and self.terminal:
            print(file=sys.stderr)


# --- verifying ----------------------------------------------------------------------------


def damaged_tracks(store: PackedStore) -> list[str]:
    """What is wrong with a store's data: its size, its index, or tracks whose bytes changed.

    Reads every track once: its digest must be the one packing recorded and
    its values finite.
    """
    data = store.path / DATA
    expected = int(store.manifest["bytes"])
    try:
        size = data.stat().st_size
    except OSError as error:
        return [f"{data}: cannot read the data file ({error})"]
    if size != expected:
        return [f"{data} is {size} bytes; the manifest promises {expected} (truncated or replaced)"]
    frames = store.index["frames"]
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]])
    if (frames < 1).any() or not np.array_equal(store.index["start"], starts):
        return [f"{store.path / INDEX}: track offsets are not contiguous; the index is damaged"]
    if int(frames.sum()) * int(store.manifest["bands"]) * 2 != expected:
        return [f"{store.path / INDEX}: the tracks' frames do not add up to the data file's size"]
    row_bytes = int(store.manifest["bands"]) * 2
    problems = []
    descriptor = os.open(data, os.O_RDONLY)
    try:
        for row, track in enumerate(store.track_ids()):
            entry = store.index[row]
            packed = os.pread(
                descriptor, int(entry["frames"]) * row_bytes, int(entry["start"]) * row_bytes
            )
            digest = hashlib.blake2b(packed, digest_size=_DIGEST_BYTES).digest()
            expected_digest = entry["digest"].tobytes()
            if digest != expected_digest:
                bits = np.frombuffer(packed, dtype=np.uint16)
                finite = "" if (bits & 0x7FFF).max(initial=0) < 0x7C00 else ", NaN or infinite"
                first = int(entry["start"]) * row_bytes
                problems.append(
                    f"track {track}: its bytes in {data} changed since packing{finite} "
                    f"(frames {entry['start']}..{entry['start'] + entry['frames'] - 1}, bytes "
                    f"{first}..{first + len(packed) - 1}): BLAKE2b digest {digest.hex()}, "
                    f"expected {expected_digest.hex()} as packed ({INDEX})"
                )
            if (row + 1) % 2000 == 0:
                log.info("verified %d/%d tracks of the store", row + 1, len(store.index))
    finally:
        os.close(descriptor)
    return problems
