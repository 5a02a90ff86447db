"""Output folders written all or nothing: filled in a hidden sibling, then renamed into place.

A fusion or a report is several files that only make sense together. They
are written into a temporary folder next to the destination (same file
system, so the final step is a rename) and appear under their real name
only when every file is complete; on any error the temporary folder is
removed and an earlier folder of that name is left as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def check_output_dir(out: str | Path, replaceable: Callable[[Path], bool] | None = None) -> Path:
    """An output folder we may create: absent, empty, or one ``replaceable`` accepts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder; choose another")
    if out.exists() and any(out.iterdir()) and not (replaceable and replaceable(out)):
        raise ValueError(f"output folder {out} already exists and is not empty; choose another")
    return out


@contextmanager
def staged_folder(
    out: str | Path, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block ends without error it becomes ``out``.

    ``out`` must pass `check_output_dir`; a non-empty one that ``replaceable``
    accepts (e.g. an earlier run's outputs) is swapped for the new folder.
    """
    out = check_output_dir(out, replaceable)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(out, "new")
    staging.mkdir()  # with the usual (umask) permissions, unlike tempfile.mkdtemp
    try:
        yield staging
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _sibling(out: Path, role: str) -> Path:
    """A fresh hidden name beside ``out`` (same file system, so renames are atomic)."""
    return out.with_name(f".{out.name}.{role}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _swap(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
        return
    retired = _sibling(out, "old")
    os.rename(out, retired)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(retired, out)  # put the earlier folder back
        raise
    shutil.rmtree(retired, ignore_errors=True)
