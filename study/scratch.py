"""A trial's node-local scratch folder, and the sweep of those whose trial is gone.

A trial works in `/tmp/mer-trial-<key>-*` (its restored checkpoint and the
files its training writes: on the paper's model a few hundred MB) and
removes it when it ends. A trial killed outright (SIGKILL, a lost worker,
a killed study that is never resumed) cannot, so the folder carries a lock
file that the trial holds locked while it lives: the kernel releases a
flock when its process ends, however it ends. A folder whose lock can be
taken is therefore left over, whichever study it belonged to, and every
trial start and study start on the node removes such folders. A folder
without a lock file (made by an older version, or being made this instant)
is removed once nothing was written in it for an hour.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "mer-trial-"  # /tmp/mer-trial-<key>-*
LOCK_FILE = ".lock"
UNLOCKED_LEFT_AFTER_S = 3600.0  # a folder without a lock file: left over once this quiet


class Scratch:
    """One trial's scratch folder, locked as its own until `remove`."""

    def __init__(self, key: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{key}-"))
        self._lock = open(self.path / LOCK_FILE, "w")  # noqa: SIM115 - held until remove()
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def sweep() -> list[Path]:
    """Remove the scratch folders on this node that no living trial holds; those removed."""
    return [
        folder
        for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")
        if folder.is_dir() and _remove_if_left_over(folder)
    ]


def _remove_if_left_over(folder: Path) -> bool:
    try:
        lock = open(folder / LOCK_FILE)  # noqa: SIM115 - closed below (never created here)
    except FileNotFoundError:
        if _quiet_for(folder) < UNLOCKED_LEFT_AFTER_S:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False  # another user's, or gone meanwhile
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its trial lives
        shutil.rmtree(folder, ignore_errors=True)
        return True


def _quiet_for(folder: Path) -> float:
    """Seconds since anything in the folder was written."""
    try:
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=0.0)
        return time.time() - max(newest, folder.stat().st_mtime)
    except OSError:
        return 0.0
