"""Preflight check of a dataset, run before hours of compute start.

Every split track must have its file, every tag must be in the tag list,
and every array must be float32 (bands, frames) and finite. Reading every
value of a 68 GB set takes a while, so files that passed are remembered
in the cache, and later checks, such as the one each training run starts
with, only read new or changed files. A file is remembered by its size,
inode, modification and change time: a write in place changes the change
time even when the modification time is set back (`os.utime`), and a file
replaced by another has another inode.

A dataset read from a packed store is checked against the store instead:
complete, built from this split, subset and tag order, holding every
track, and every track's bytes as packed (the digests in its index); a
store that passed is remembered by its manifest and the same stamp of its
data and index files. `full=True` (`check --full`) trusts nothing
remembered and reads every byte again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from mer_models.data.cache import cache_root
from mer_models.data.splits import (
    PARTS,
    DataError,
    DatasetPaths,
    SplitTable,
    read_split,
    read_tags,
)
from mer_models.data.store import (
    DATA,
    INDEX,
    MANIFEST,
    PackedStore,
    damaged_tracks,
    open_store,
)
from mer_models.data.windows import FRAMES_PER_SECOND, N_BANDS, open_melspec
from mer_models.files import atomic_write_text

log = logging.getLogger(__name__)

_CHUNK_FRAMES = 16384  # frames read at a time when scanning values


@dataclass
class CheckReport:
    """What a check found: counts per part, and every problem by kind."""

    paths: DatasetPaths
    tags: int = 0
    tracks: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self) -> str:
        hours = sum(self.frames.values()) / FRAMES_PER_SECOND / 3600
        parts = ", ".join(f"{part} {self.tracks.get(part, 0)}" for part in PARTS)
        return (
            f"dataset OK: {sum(self.tracks.values())} tracks ({parts}), {self.tags} tags, "
            f"{hours:.1f} h of audio; split-{self.paths.split} {self.paths.subset} from "
            f"{self.paths.metadata}, {self._windows()}"
        )

    def _windows(self) -> str:
        if self.paths.store is not None:
            return f"windows from the packed store {self.paths.store}"
        return f"mel-spectrograms from {self.paths.melspecs}"

    def describe_problems(self, shown: int = 5) -> str:
        total = sum(len(found) for found in self.problems.values())
        lines = [
            f"dataset check failed: {total} problem(s) in split-{self.paths.split} "
            f"{self.paths.subset} ({self.paths.metadata}, {self.paths.windows})"
        ]
        for kind, found in self.problems.items():
            if not found:
                continue
            lines.append(f"- {kind}: {len(found)}")
            lines.extend(f"    {message}" for message in found[:shown])
            if len(found) > shown:
                lines.append(f"    ... and {len(found) - shown} more")
        return "\n".join(lines)


def check_dataset(paths: DatasetPaths, n_bands: int = N_BANDS, full: bool = False) -> CheckReport:
    """Check metadata and every mel-spectrogram of the three parts of a split.

    `full`: ignore what earlier checks remembered and read every value (every
    byte of a packed store) again; what passes is remembered as usual.
    """
    report = CheckReport(paths)
    windows = "store" if paths.store is not None else "melspecs"
    for name, folder in (("metadata", paths.metadata), (windows, paths.windows)):
        if not folder.is_dir():
            report.problems["missing folder"].append(f"--{name} folder {folder} does not exist")
    if not report.ok:
        return report
    try:
        tags = read_tags(paths.tag_file())
    except DataError as error:
        report.problems["tag list"].append(str(error))
        return report
    report.tags = len(tags)
    parts = _read_parts(paths, tags, report)
    _check_overlap(paths, parts, report)
    if paths.store is not None:
        return _check_with_store(paths, tags, parts, report, full)
    verified = _VerifiedFiles(paths.melspecs, trusted=not full)
    for part, table in parts.items():
        report.frames[part] = 0
        for number, (track_id, relative) in enumerate(
            zip(table.track_ids, table.melspec_paths, strict=True), start=1
        ):
            if number % 1000 == 0:
                log.info("checked %d/%d %s tracks", number, len(table), part)
            frames = _check_melspec(paths.melspecs / relative, track_id, n_bands, verified, report)
            report.frames[part] += frames
    verified.save()
    return report


def _read_parts(
    paths: DatasetPaths, tags: tuple[str, ...], report: CheckReport
) -> dict[str, SplitTable]:
    """The split tables that read, their row and file problems recorded in `report`."""
    parts: dict[str, SplitTable] = {}
    for part in PARTS:
        row_problems: list[str] = []
        try:
            table = read_split(paths.split_file(part), tags, problems=row_problems)
        except DataError as error:
            report.problems["split file"].append(str(error))
            continue
        parts[part] = table
        report.problems["split row"].extend(row_problems)
        report.tracks[part] = len(table)
    return parts


def _check_overlap(paths: DatasetPaths, parts: dict[str, SplitTable], report: CheckReport) -> None:
    """A track in two parts (train and test, say) leaks its labels into the evaluation."""
    seen: dict[str, str] = {}
    for part, table in parts.items():
        for track_id in table.track_ids:
            if track_id in seen:
                report.problems["track in two parts"].append(
                    f"{track_id} is in both {seen[track_id]} ({paths.split_file(seen[track_id])}) "
                    f"and {part} ({paths.split_file(part)}); each track belongs to one part"
                )
            else:
                seen[track_id] = part


def _check_with_store(
    paths: DatasetPaths,
    tags: tuple[str, ...],
    parts: dict[str, SplitTable],
    report: CheckReport,
    full: bool,
) -> CheckReport:
    try:
        store = open_store(paths.store)
        store.require_matches(paths, tags)
    except DataError as error:
        report.problems["packed store"].append(str(error))
        return report
    frames = dict(zip(store.track_ids(), store.index["frames"].tolist(), strict=True))
    for part, table in parts.items():
        report.frames[part] = sum(frames.get(track, 0) for track in table.track_ids)
        _compare_tracks(store, part, table, report)
    if report.ok:
        _check_store_data(store, report, full)
    return report


def _compare_tracks(store: PackedStore, part: str, table: SplitTable, report: CheckReport) -> None:
    packed = store.manifest["tracks"][part]
    if list(table.track_ids) == packed:
        return
    missing = sorted(set(table.track_ids) - set(packed))
    extra = sorted(set(packed) - set(table.track_ids))
    report.problems["store mismatch"].append(
        f"{table.file} lists {len(table)} tracks, the store's {part} part {len(packed)}: "
        f"{len(missing)} not in the store (e.g. {', '.join(missing[:3]) or '-'}), "
        f"{len(extra)} only in the store (e.g. {', '.join(extra[:3]) or '-'})"
        + ("" if missing or extra else ", in another order")
        + "; pack the store again from this metadata"
    )


def _check_store_data(store: PackedStore, report: CheckReport, full: bool) -> None:
    verified = _VerifiedFiles(store.path, trusted=not full)
    before = verified.store_stamp(store)
    if verified.contains_store(before):
        return
    log.info("verifying every track of the packed store %s", store.path)
    damaged = damaged_tracks(store)
    report.problems["damaged store"].extend(damaged)
    if not damaged and verified.store_stamp(store) == before:  # not written while read
        verified.add_store(before)
        verified.save()


def require_valid_dataset(paths: DatasetPaths) -> CheckReport:
    """Run the check and raise `DataError` describing every problem, if any."""
    report = check_dataset(paths)
    if not report.ok:
        raise DataError(report.describe_problems())
    return report


def _check_melspec(
    path: Path, track_id: str, n_bands: int, verified: _VerifiedFiles, report: CheckReport
) -> int:
    """Check one file; returns its frame count (0 when unreadable)."""
    if not path.is_file():
        report.problems["missing mel-spectrogram"].append(f"{track_id}: {path} not found")
        return 0
    try:
        array = open_melspec(path, n_bands)
    except DataError as error:
        kind = "wrong shape or dtype" if "expected float32" in str(error) else "unreadable file"
        report.problems[kind].append(f"{track_id}: {error}")
        return 0
    before = verified.stamp(path)
    if not verified.contains(path, before):
        for start in range(0, array.shape[1], _CHUNK_FRAMES):
            if not np.isfinite(array[:, start : start + _CHUNK_FRAMES]).all():
                report.problems["NaN or infinite values"].append(
                    f"{track_id}: {path} holds NaN or infinite values (first in frames "
                    f"{start}..{min(start + _CHUNK_FRAMES, array.shape[1]) - 1})"
                )
                return array.shape[1]
        if verified.stamp(path) == before:  # not written while it was read
            verified.add(path, before)
    return array.shape[1]


class _VerifiedFiles:
    """Files whose values passed, by (size, inode, mtime, ctime), remembered in the cache.

    Not `trusted` (a full check): nothing remembered counts, though what
    passes is still remembered.
    """

    def __init__(self, melspecs: Path, trusted: bool = True) -> None:
        key = hashlib.sha256(str(melspecs.resolve()).encode()).hexdigest()[:20]
        self.melspecs = melspecs
        self.trusted = trusted
        self.file = cache_root() / "verified" / f"{key}.json"
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.file.is_file():
            try:
                self.entries = json.loads(self.file.read_text())
            except json.JSONDecodeError:
                self.entries = {}

    @staticmethod
    def stamp(path: Path) -> list[int]:
        """What a write changes: a write in place moves the change time even when the
        modification time is put back, and a replaced file has another inode."""
        stat = path.stat()
        return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]

    def contains(self, path: Path, stamp: list[int]) -> bool:
        return self.trusted and self.entries.get(str(path.relative_to(self.melspecs))) == stamp

    def add(self, path: Path, stamp: list[int]) -> None:
        self.entries[str(path.relative_to(self.melspecs))] = stamp
        self.changed = True

    def store_stamp(self, store: PackedStore) -> list:
        manifest = hashlib.sha256((store.path / MANIFEST).read_bytes()).hexdigest()
        return [*self.stamp(store.path / DATA), *self.stamp(store.path / INDEX), manifest]

    def contains_store(self, stamp: list) -> bool:
        return self.trusted and self.entries.get(DATA) == stamp

    def add_store(self, stamp: list) -> None:
        self.entries[DATA] = stamp
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.file) + ".lock"):
            merged = json.loads(self.file.read_text()) if self.file.is_file() else {}
            merged.update(self.entries)
            atomic_write_text(self.file, json.dumps(merged))
