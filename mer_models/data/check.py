"""Preflight check of a dataset, run before hours of compute start.

Every split track must have its file, every tag must be in the tag list,
and every array must be float32 (bands, frames) and finite. Reading every
value of a 68 GB set takes a while, so files that passed are remembered
(by size and modification time) in the cache, and later checks, such as the
one each training run starts with, only read new or changed files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from mer_models.cache import cache_root
from mer_models.data.splits import PARTS, DataError, DatasetPaths, read_split, read_tags
from mer_models.data.windows import FRAMES_PER_SECOND, N_BANDS, open_melspec

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
            f"{self.paths.metadata}, mel-spectrograms from {self.paths.melspecs}"
        )

    def describe_problems(self, shown: int = 5) -> str:
        total = sum(len(found) for found in self.problems.values())
        lines = [
            f"dataset check failed: {total} problem(s) in split-{self.paths.split} "
            f"{self.paths.subset} ({self.paths.metadata}, {self.paths.melspecs})"
        ]
        for kind, found in self.problems.items():
            if not found:
                continue
            lines.append(f"- {kind}: {len(found)}")
            lines.extend(f"    {message}" for message in found[:shown])
            if len(found) > shown:
                lines.append(f"    ... and {len(found) - shown} more")
        return "\n".join(lines)


def check_dataset(paths: DatasetPaths, n_bands: int = N_BANDS) -> CheckReport:
    """Check metadata and every mel-spectrogram of the three parts of a split."""
    report = CheckReport(paths)
    for name, folder in (("metadata", paths.metadata), ("melspecs", paths.melspecs)):
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
    verified = _VerifiedFiles(paths.melspecs)
    for part in PARTS:
        row_problems: list[str] = []
        try:
            table = read_split(paths.split_file(part), tags, problems=row_problems)
        except DataError as error:
            report.problems["split file"].append(str(error))
            continue
        report.problems["split row"].extend(row_problems)
        report.tracks[part] = len(table)
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
    if not verified.contains(path):
        for start in range(0, array.shape[1], _CHUNK_FRAMES):
            if not np.isfinite(array[:, start : start + _CHUNK_FRAMES]).all():
                report.problems["NaN or infinite values"].append(
                    f"{track_id}: {path} holds NaN or infinite values (first in frames "
                    f"{start}..{min(start + _CHUNK_FRAMES, array.shape[1]) - 1})"
                )
                return array.shape[1]
        verified.add(path)
    return array.shape[1]


class _VerifiedFiles:
    """Files whose values passed, by (size, mtime), remembered in the cache."""

    def __init__(self, melspecs: Path) -> None:
        key = hashlib.sha256(str(melspecs.resolve()).encode()).hexdigest()[:20]
        self.melspecs = melspecs
        self.file = cache_root() / "verified" / f"{key}.json"
        self.entries: dict[str, list[int]] = {}
        self.changed = False
        if self.file.is_file():
            try:
                self.entries = json.loads(self.file.read_text())
            except json.JSONDecodeError:
                self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def contains(self, path: Path) -> bool:
        return self.entries.get(str(path.relative_to(self.melspecs))) == self._stamp(path)

    def add(self, path: Path) -> None:
        self.entries[str(path.relative_to(self.melspecs))] = self._stamp(path)
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.file) + ".lock"):
            merged = json.loads(self.file.read_text()) if self.file.is_file() else {}
            merged.update(self.entries)
            handle, temporary = tempfile.mkstemp(dir=self.file.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as out:
                json.dump(merged, out)
            os.replace(temporary, self.file)
