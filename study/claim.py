"""A study's name, checked and claimed atomically: one driver per study folder at a time.

A name becomes a folder, an MLflow experiment and a registered model's
name, so it is checked before anything is written (`check_name`). A new
study's folder appears whole: it is built under a hidden name with its
`study.json` and its lock inside, then renamed into place, so a resume never
meets a claimed folder without its record, and of two drivers asking for one
name, one gets it and the other is told (a rename onto a folder that holds
files fails). Every driver, new or resuming, holds an exclusive lock on
`STUDY_DIR/.lock` until it exits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOCK_FILE = ".lock"
CLAIMING_PREFIX = ".claiming-"  # a new study's folder before it is complete
MAX_NAME = 100
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9 ._-]*")
ALLOWED = "letters A-Z and a-z, digits, '-', '_', '.' and spaces"


class StudyClaimed(RuntimeError):
    """The name is taken, or the study is running in another driver right now."""


class BadName(ValueError):
    """A study name that cannot name a folder, an experiment and a registered model."""


def check_name(name: str) -> None:
    """Refuse a name that is not plain: it names a folder under the storage, an MLflow
    experiment, filters over its runs and the registered model ``<name>-best``."""
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name) > MAX_NAME:
        problem = f"it has {len(name)} characters"
    elif name.startswith("."):
        problem = "it starts with '.' (a hidden folder)"
    elif name != name.strip():
        problem = "it starts or ends with a space"
    elif not NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9 ._-]", c)})
        problem = "it contains " + " ".join(repr(c) for c in bad)
    if problem is not None:
        raise BadName(
            f"--name {name[:120]!r}: {problem}. A study name may hold {ALLOWED}, at most "
            f"{MAX_NAME} characters, not starting with '.' (it names the study's folder, its "
            "MLflow experiment and its registered model)"
        )


def new_study_id() -> str:
    return uuid.uuid4().hex


def claim_new_study(study_dir: Path, write_record: Callable[[Path], None]) -> IO[str]:
    """Create the study folder with its record (`write_record(folder)` writes study.json
    into the folder it is given) and its lock held; keep the returned file open."""
    storage = study_dir.parent
    storage.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_claims(storage)
    building = storage / f"{CLAIMING_PREFIX}{study_dir.name}-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        lock = _lock(building)
        write_record(building)
        os.rename(building, study_dir)  # atomic; refused onto a folder that holds files
    except OSError as error:
        shutil.rmtree(building, ignore_errors=True)
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise StudyClaimed(
                f"a study named {study_dir.name} exists in {storage}; continue it with "
                "--resume, or choose another --name"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return lock


def claim_study(study_dir: Path) -> IO[str]:
    """Lock an existing study folder (a resume); keep the returned file open."""
    lock = _lock(study_dir)
    if lock is None:
        holder = _holder(study_dir)
        raise StudyClaimed(
            f"study {study_dir.name} in {study_dir.parent} is running in another driver "
            f"(pid {holder}); wait for it to end, or stop it first"
        )
    return lock


def _lock(folder: Path) -> IO[str] | None:
    lock = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held for the driver's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _holder(folder: Path) -> str:
    try:
        return (folder / LOCK_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _remove_abandoned_claims(storage: Path) -> None:
    """Half-built folders of drivers killed while claiming (their lock is free)."""
    for folder in storage.glob(f"{CLAIMING_PREFIX}*"):
        if not folder.is_dir():
            continue
        try:
            lock = _lock(folder)
        except OSError:
            continue
        if lock is not None:
            shutil.rmtree(folder, ignore_errors=True)
            lock.close()
