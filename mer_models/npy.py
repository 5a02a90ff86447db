""".npy files checked against their own header before anything is allocated.

`np.load` allocates what a file's header claims before it reads the data: a
header damaged to claim two trillion elements is an `ArrayMemoryError` with
a traceback, a file cut short a terse "cannot reshape" error. `check_npy`
reads the header alone and compares what it claims with the file's size,
so a damaged matrix (predictions, labels, a store's index) is one
`ValueError` naming the file, what its header claims and how to recover.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from tokenize import TokenError

import numpy as np
from numpy.lib import format as npy_format

MAGIC = npy_format.MAGIC_PREFIX  # b"\x93NUMPY"
REMEDY = "re-create the file (rerun what wrote it, or write it again with numpy.save)"
# The versions numpy.save writes for plain arrays (2.0: headers over 64 KiB).
HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}
MAX_HEADER_SIZE = 10_000  # numpy's own limit for files it does not trust (no pickles)
HEADER_LIMIT = len(MAGIC) + 2 + 4 + MAX_HEADER_SIZE  # magic, version, length, header
# What numpy's header parser raises on a damaged header (TokenError: its tokenizer's).
HEADER_ERRORS = (ValueError, EOFError, SyntaxError, TypeError, TokenError)


def check_npy(
    path: str | Path, role: str, remedy: str = REMEDY
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file whose header agrees with its size, read from the
    header alone; otherwise a ValueError naming the file (``{role} file {path}``) and
    ending with `remedy`.

    Refused before any allocation: no NumPy magic, an unreadable header, Python
    objects (only unpickling reads them), and a size other than header + shape x
    itemsize (a file cut short, or a header overwritten).
    """
    path = Path(path)

    def refused(why: str) -> ValueError:
        return ValueError(f"{role} file {path} {why}; {remedy}")

    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            # What a header can hold, in memory: a damaged length field cannot make numpy's
            # reader ask for gigabytes.
            head = io.BytesIO(file.read(HEADER_LIMIT))
    except FileNotFoundError:
        raise ValueError(f"{role} file {path} not found") from None
    except OSError as error:
        raise ValueError(f"{role} file {path} cannot be read ({error.strerror or error})") from None
    if head.read(len(MAGIC)) != MAGIC:
        raise refused(f"is not a .npy file (no NumPy header in its {size:,} bytes)")
    head.seek(0)
    try:
        version = npy_format.read_magic(head)
        reader = HEADER_READERS.get(version)
        header = reader(head, max_header_size=MAX_HEADER_SIZE) if reader else None
    except HEADER_ERRORS as error:
        raise refused(f"is not a readable .npy array (damaged header: {error})") from None
    if header is None:
        known = " or ".join(f"{major}.{minor}" for major, minor in HEADER_READERS)
        raise refused(f"has .npy format version {version[0]}.{version[1]}; read here: {known}")
    shape, _, dtype = header
    offset = head.tell()
    if dtype.hasobject:
        raise refused(f"holds Python objects (dtype {dtype}), which only unpickling would read")
    if any(n < 0 for n in shape):
        raise refused(f"has a .npy header claiming the negative shape {shape}")
    data = math.prod(shape) * dtype.itemsize  # Python ints: exact however large
    if offset + data != size:
        raise refused(
            f"is damaged: its .npy header claims shape {shape} of {dtype} ({data:,} bytes of "
            f"data after a {offset}-byte header, {offset + data:,} bytes in all), but the file "
            f"holds {size:,} bytes (cut short, or its header overwritten)"
        )
    return shape, dtype


def load_npy(path: str | Path, role: str, remedy: str = REMEDY) -> np.ndarray:
    """`np.load` (no pickles) of a file `check_npy` accepts; any failure is a ValueError
    naming the file."""
    check_npy(path, role, remedy)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # changed since the check, say
        raise ValueError(
            f"{role} file {path} is not a readable .npy array ({error}); {remedy}"
        ) from None
