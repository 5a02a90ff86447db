"""The data flags shared by every command that reads data."""

from __future__ import annotations

import argparse

from mer_models.data.splits import SUBSETS, DatasetPaths


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data",
        "a real MTG-Jamendo download, read in place (default: the embedded synthetic dataset)",
    )
    group.add_argument(
        "--metadata",
        help="checkout of the MTG-Jamendo repository (holds data/splits and data/tags)",
    )
    group.add_argument("--melspecs", help="folder of mel-spectrograms, NN/ID.npy")
    group.add_argument("--split", type=int, default=0, help="official split number (default 0)")
    group.add_argument(
        "--subset", default="moodtheme", choices=SUBSETS, help="tag subset (default moodtheme)"
    )


def dataset_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DatasetPaths:
    """The dataset the flags name, or the cached synthetic dataset when none is named."""
    if (args.metadata is None) != (args.melspecs is None):
        parser.error(
            "--metadata and --melspecs go together: give both, or neither for synthetic data"
        )
    if args.metadata is None:
        from mer_models.synthetic import synthetic_dataset

        return synthetic_dataset()
    return DatasetPaths(args.metadata, args.melspecs, split=args.split, subset=args.subset)
