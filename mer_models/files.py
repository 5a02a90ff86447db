"""Files written whole or not at all, readable as the umask allows.

Every record the project keeps (a study's records, checkpoints' summaries,
caches, melspecs) is written under a temporary name in the target's folder,
flushed, then renamed over the target: a kill or a full disk leaves the old
file or none, never half of one. Temporary files from `tempfile` are created
mode 0600 whatever the umask; these get the mode a plain `open` would give,
so on a shared cluster folder the group can read what a study writes.
`file_identity` tells one version of a file from another, for what a process
keeps of files it read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PARTIAL = ".partial"  # the suffix of anything the project is still writing


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the umask lets a new file have it (what a plain `open` gives 0o666)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` in one step (temporary file, fsync, rename)."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    try:
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, umask_mode())
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_partials(folder: Path) -> list[Path]:
    """Delete what an interrupted writer left under `folder` (names holding `.partial`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(
        (p for p in folder.rglob(f"*{PARTIAL}*") if PARTIAL in p.name),
        key=lambda p: len(p.parts),
    )
    removed = []
    for path in found:
        if not path.exists() and not path.is_symlink():
            continue  # inside a partial folder removed already
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def file_identity(path: Path) -> tuple[str, int, int, int] | str:
    """What tells one version of a file from another (path, inode, size, modification time):
    a file replaced whole or edited gets another. A missing file: its path (the reader that
    then opens it says what is missing)."""
    try:
        status = Path(path).stat()
    except OSError:
        return str(path)
    return (str(path), status.st_ino, status.st_size, status.st_mtime_ns)
