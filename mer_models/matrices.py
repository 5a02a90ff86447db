"""Checks of (tracks, tags) label and score matrices, shared by training outputs and analysis.

Errors name the matrix (the caller passes a name such as the file it came
from) and the first offending cell, instead of failing deep inside NumPy or
scikit-learn.
"""

from __future__ import annotations

import numpy as np


def check_binary(array: np.ndarray, name: str) -> np.ndarray:
    """Bool view of a label or decision matrix given as bool or 0/1 integers.

    Anything else (floats, 2s, negatives) is refused: silently thresholding
    it would score a different problem than the one the file claims to hold.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} has shape {array.shape}; expected a 2-D (tracks, tags) matrix")
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} has dtype {array.dtype}; expected bool or 0/1 integers")
    bad = (array != 0) & (array != 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} is not binary: value {array[row, col]} at row {row}, column {col} "
            f"(expected bool or 0/1 integers)"
        )
    return array.astype(bool)


def check_scores(array: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A finite 2-D score matrix, optionally of a given shape."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} has shape {array.shape}; expected a 2-D (tracks, tags) matrix")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}; expected {tuple(shape)}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} has dtype {array.dtype}; expected real-valued scores")
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} has {int((~finite).sum())} non-finite score(s) (NaN or inf), "
            f"the first at row {row}, column {col}"
        )
    return array
