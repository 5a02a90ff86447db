"""The MTG-Jamendo data layer: metadata, windows (melspec files or a packed store),
augmentation, batches, checks."""

from mer_models.data.splits import (
    PARTS,
    DataError,
    DatasetPaths,
    SplitTable,
    label_matrix,
    load_split,
    read_split,
    read_tags,
)

__all__ = [
    "PARTS",
    "DataError",
    "DatasetPaths",
    "SplitTable",
    "label_matrix",
    "load_split",
    "read_split",
    "read_tags",
]
