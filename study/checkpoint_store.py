"""Trial checkpoints that the trials keep themselves, in the study's storage.

Ray Tune restores a trial from the one checkpoint its saved experiment state
names. That state is saved every few seconds, while Ray deletes checkpoints
past `num_to_keep` at once, so a kill in between leaves a state naming a
checkpoint that is gone; and a truncated or garbled newest checkpoint is
retried until the trial fails, never falling back to the intact one before it.

So a trial keeps its own, `STORAGE/NAME/checkpoints/<trial_id>/epoch-NNNN/`
(a local or shared folder, or a cloud URI), and reports none to Ray: Ray's
state names no checkpoint, so nothing it relies on is ever deleted. Each is
written under a `.partial` name and renamed once complete; the newest two are
kept (the newest and one to fall back on). A trial starts from the newest one
that loads, naming every one it skipped and why.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from mer_models.files import PARTIAL
from mer_models.training.checkpoint import (
    STATE_FILE,
    SUMMARY_FILE,
    CheckpointDamaged,
    load_checkpoint,
)
from study.places import is_cloud, local_path

FOLDER = "checkpoints"  # under the study's storage folder
KEEP = 2  # the newest checkpoint and one to fall back on
_EPOCH = re.compile(r"^epoch-(\d+)$")


@dataclass(frozen=True)
class NewestCheckpoint:
    """The newest checkpoint that loads (None: none does), and those skipped on the way."""

    folder: Path | None
    summary: dict[str, Any]
    skipped: tuple[str, ...]


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """Load every file of a checkpoint folder; its summary, or CheckpointDamaged."""
    for name in (SUMMARY_FILE, STATE_FILE):
        if not (folder / name).is_file():
            raise CheckpointDamaged(f"{folder / name}: missing")
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        if not isinstance(summary, dict) or "epoch" not in summary:
            raise ValueError("not a checkpoint summary (no 'epoch')")
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointDamaged(f"{folder / SUMMARY_FILE}: {error}") from None
    load_checkpoint(folder)  # tensors and plain values only: a planted pickle is refused
    return summary


class CheckpointStore:
    """One trial's checkpoints under a storage root (a local path or a cloud URI)."""

    def __init__(self, root: str, trial_id: str) -> None:
        self.root = root
        self.trial_id = trial_id
        if is_cloud(root):
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs = pafs.LocalFileSystem()
            base = str(local_path(root))
        self.path = f"{base.rstrip('/')}/{trial_id}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __getstate__(self) -> dict[str, Any]:  # filesystems are rebuilt where unpickled
        return {"root": self.root, "trial_id": self.trial_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["trial_id"])

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint folder, newest first."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            match = _EPOCH.match(info.base_name)
            if match and info.type == pafs.FileType.Directory:
                found.append(int(match.group(1)))
        return sorted(found, reverse=True)

    def save(self, local_dir: Path, epoch: int) -> None:
        """Copy a checkpoint folder in as `epoch-NNNN`, then drop all but the newest KEEP."""
        target = self._epoch_path(epoch)
        staging = target + PARTIAL
        self.fs.create_dir(self.path, recursive=True)
        self._delete(staging)
        try:
            if self.local:
                shutil.copytree(local_dir, staging)
            else:
                pafs.copy_files(
                    str(local_dir),
                    staging,
                    source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=self.fs,
                )
        except BaseException:
            self._delete(staging)  # a full disk leaves no half checkpoint behind
            raise
        self._delete(target)
        self.fs.move(staging, target)
        for older in self.epochs()[KEEP:]:
            self._delete(self._epoch_path(older))

    @contextlib.contextmanager
    def newest(self) -> Iterator[NewestCheckpoint]:
        """The newest checkpoint that loads, as a local folder while the context is open."""
        skipped: list[str] = []
        with tempfile.TemporaryDirectory(prefix=f"mer-checkpoint-{self.trial_id}-") as temp:
            for epoch in self.epochs():
                folder = self._local_copy(epoch, Path(temp))
                try:
                    summary = check_checkpoint(folder)
                except CheckpointDamaged as error:
                    skipped.append(f"skipped epoch-{epoch:04d}: {error}")
                    continue
                yield NewestCheckpoint(folder, summary, tuple(skipped))
                return
            yield NewestCheckpoint(None, {}, tuple(skipped))

    def remove_partials(self) -> None:
        """Drop checkpoints a kill left half-copied (`epoch-NNNN.partial`)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.base_name.endswith(PARTIAL):
                self._delete(f"{self.path}/{info.base_name}")

    def delete(self) -> None:
        """Remove every checkpoint of the trial (its results are recorded elsewhere)."""
        self._delete(self.path)

    def _epoch_path(self, epoch: int) -> str:
        return f"{self.path}/epoch-{epoch:04d}"

    def _local_copy(self, epoch: int, temp: Path) -> Path:
        if self.local:
            return Path(self._epoch_path(epoch))
        folder = temp / f"epoch-{epoch:04d}"
        folder.mkdir()
        pafs.copy_files(
            self._epoch_path(epoch),
            str(folder),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return folder

    def _delete(self, path: str) -> None:
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_dir(path)
