"""Where a study writes: its storage, as one value built from `--storage`.

The results folder (study.json, trials, report) is always on the driver's
disk; Ray's checkpoints go to the same folder, or to a cloud URI (s3://,
gs://) when one is given. Checked in seconds before anything starts: a
read-only folder or a `--storage` under a regular file would otherwise
surface minutes later as a traceback, after the study's MLflow run exists.
The MLflow store's counterpart is `tracking.store.TrackingStore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracking.store import PlaceError, writable_folder

__all__ = ["PlaceError", "Storage", "is_cloud", "local_path"]


def is_cloud(uri: str) -> bool:
    """A cloud URI (s3://, gs://, ...), not a local path or a file:// URI."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    """A local path or file:// URI as an absolute path."""
    return Path(uri.removeprefix("file://")).expanduser().resolve()


@dataclass(frozen=True)
class Storage:
    """The folder that holds the study folders, and where Ray keeps checkpoints."""

    results: Path  # STUDY folders live in results / name
    cloud: str | None = None  # a cloud URI for Ray's checkpoints; None: `results`

    @classmethod
    def from_flag(cls, flag: str | None, working: Path) -> Storage:
        """`--storage`: a folder (default ./ray_results) or a cloud URI, the results then in
        ./ray_results."""
        if flag is None:
            return cls(working / "ray_results")
        if is_cloud(flag):
            return cls(working / "ray_results", flag)
        return cls(local_path(flag))

    def check(self) -> None:
        writable_folder(self.results, "--storage")
