"""A study's name, claimed atomically: one driver per study folder at a time.

A new study creates its folder with an exclusive `mkdir` (two drivers asking
for one name: one gets it, the other is told), and every driver, new or
resuming, holds an exclusive lock on `STUDY_DIR/.lock` until it exits.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = ".lock"


class StudyClaimed(RuntimeError):
    """The name is taken, or the study is running in another driver right now."""


def claim_study(study_dir: Path, *, new: bool) -> IO[str]:
    """Create (when `new`) and lock the study folder; keep the returned file open."""
    if new:
        study_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            study_dir.mkdir()
        except FileExistsError:
            raise StudyClaimed(
                f"a study named {study_dir.name} exists in {study_dir.parent}; continue it "
                "with --resume, or choose another --name"
            ) from None
    lock = open(study_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the driver's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise StudyClaimed(
            f"study {study_dir.name} in {study_dir.parent} is running in another driver "
            f"(pid {holder}); wait for it to end, or stop it first"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
