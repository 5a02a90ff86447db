"""The project's cache folder: synthetic datasets, input statistics, checked files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$MER_MODELS_CACHE`, else `~/.cache/mer_models`."""
    return Path(
        os.environ.get("MER_MODELS_CACHE", Path.home() / ".cache" / "mer_models")
    ).expanduser()
