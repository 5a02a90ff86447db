"""Where a study writes, checked in seconds before anything starts.

A read-only folder, a `--storage` under a regular file or an unreachable
tracking server would otherwise surface minutes later as a traceback, after
the study's MLflow run or folder exists.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


class PlaceError(ValueError):
    """A place the study writes to is unusable; the message names the flag."""


def check_places(storage_dir: Path, tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise PlaceError unless the results folder and the MLflow store can be used."""
    writable_folder(storage_dir, "--storage")
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
                pass
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PlaceError(
                f"--tracking-uri {tracking_uri}: no MLflow tracking server answers there "
                f"({reason}); start it (mlflow server ...) or give another --tracking-uri"
            ) from None
    elif tracking_uri.startswith("sqlite:"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        writable_folder(database.parent, "--tracking-uri")
    elif "://" not in tracking_uri or tracking_uri.startswith("file:"):
        writable_folder(Path(tracking_uri.removeprefix("file://")), "--tracking-uri")


def artifact_root(tracking_uri: str, working: Path) -> Path | None:
    """Where a local store's artifacts go: beside its database (a server keeps its own)."""
    if tracking_uri.startswith("sqlite:///"):
        return (
            Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve().parent / "mlruns"
        )
    if "://" not in tracking_uri:
        return None  # a file store keeps artifacts in its own folder
    return working / "mlruns" if tracking_uri.startswith("file:") else None


def writable_folder(path: Path, flag: str) -> None:
    """`path` is, or can be made as, a folder this user may write in."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PlaceError(f"{flag}: {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        hint = " (the default is under the working folder)" if flag == "--storage" else ""
        raise PlaceError(
            f"{flag}: {existing} is not writable, so {path} cannot be used{hint}; "
            f"give a writable {flag}"
        )
