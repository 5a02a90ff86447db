"""The data flags shared by every command that reads data."""

from __future__ import annotations

import argparse

from mer_models.data.splits import SUBSETS, DatasetPaths, read_tags


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data",
        "a real MTG-Jamendo download, read in place, or its packed store "
        "(default: the embedded synthetic dataset)",
    )
    group.add_argument(
        "--metadata",
        help="checkout of the MTG-Jamendo repository (holds data/splits and data/tags)",
    )
    windows = group.add_mutually_exclusive_group()
    windows.add_argument("--melspecs", help="folder of mel-spectrograms, NN/ID.npy")
    windows.add_argument(
        "--store",
        help="packed window store (python -m mer_models.data pack) in place of --melspecs; "
        "labels still come from --metadata",
    )
    group.add_argument(
        "--split", type=int, help="official split number (default: the store's, else 0)"
    )
    group.add_argument(
        "--subset", choices=SUBSETS, help="tag subset (default: the store's, else moodtheme)"
    )


def dataset_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DatasetPaths:
    """The dataset the flags name, or the cached synthetic dataset when none is named.

    With a store, split and subset default to the store's; a store that does
    not match the metadata is refused (`DataError`).
    """
    store = getattr(args, "store", None)
    if (args.metadata is None) != (args.melspecs is None and store is None):
        parser.error(
            "--metadata goes with --melspecs or --store: give both, or neither for synthetic data"
        )
    if args.metadata is None:
        from mer_models.data.synthetic import synthetic_dataset

        paths = synthetic_dataset()  # its five splits: --split chooses one
        return paths if args.split is None else paths.on_split(args.split)
    split, subset = args.split, args.subset
    if store is not None:
        from mer_models.data.store import open_store

        packed = open_store(store)
        split = packed.split if split is None else split
        subset = packed.subset if subset is None else subset
        paths = DatasetPaths(args.metadata, split=split, subset=subset, store=store)
        packed.require_matches(paths, read_tags(paths.tag_file()))
        return paths
    return DatasetPaths(
        args.metadata,
        args.melspecs,
        split=0 if split is None else split,
        subset="moodtheme" if subset is None else subset,
    )
