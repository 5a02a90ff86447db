"""Command line of the data layer.

python -m mer_models.data labels SPLIT.tsv --tags TAGS.txt --out M.npy
python -m mer_models.data check [--metadata DIR (--melspecs DIR | --store STORE)] [--split N] [--subset S] [--full]
python -m mer_models.data pack --metadata DIR --melspecs DIR --out STORE [--split N] [--subset S]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import numpy as np

from mer_models.data.arguments import add_data_arguments, dataset_paths
from mer_models.data.check import check_dataset
from mer_models.data.splits import SUBSETS, DataError, DatasetPaths, label_matrix
from mer_models.data.store import pack
from mer_models.files import atomic_write_bytes


def labels(args: argparse.Namespace) -> int:
    matrix = label_matrix(args.split_file, args.tags)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out}: bool {matrix.shape}, {int(matrix.sum())} positive labels")
    return 0


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    report = check_dataset(dataset_paths(args, parser), full=args.full)
    if not report.ok:
        print(report.describe_problems(), file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def pack_command(args: argparse.Namespace) -> int:
    paths = DatasetPaths(args.metadata, args.melspecs, split=args.split, subset=args.subset)
    try:
        result = pack(paths, args.out)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the tracks packed so far are kept in {args.out}; run the same "
            "command again to continue",
            file=sys.stderr,
        )
        return 130
    store = result.store
    gigabytes = store.manifest["bytes"] / 1e9
    if result.already_complete:
        print(f"{store.path} is already a complete store of {store.describe()}; nothing to do")
        return 0
    print(
        f"packed {len(store.index)} tracks of {store.describe()} into {store.path} "
        f"({gigabytes:.2f} GB float16"
        + (f", resumed after {result.resumed_from} tracks" if result.resumed_from else "")
        + f"); largest rounding error {store.manifest['max_abs_error_db']:.4f} dB"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mer_models.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    labels_parser = commands.add_parser("labels", help="label matrix of a split file, as .npy")
    labels_parser.add_argument("split_file", help="an MTG-Jamendo split TSV")
    labels_parser.add_argument("--tags", required=True, help="tag list, one a line (column order)")
    labels_parser.add_argument("--out", required=True, help="output .npy (bool, tracks x tags)")
    check_parser = commands.add_parser("check", help="verify a dataset before training on it")
    add_data_arguments(check_parser)
    check_parser.add_argument(
        "--full",
        action="store_true",
        help="ignore what earlier checks remembered as verified and read every byte again: "
        "every track of a packed store against the digest packing recorded in its index, "
        "every value of a melspec folder (finite, right shape and dtype; melspec files keep "
        "no digests, so a finite value changed in one is not seen)",
    )
    pack_parser = commands.add_parser(
        "pack",
        help="write a split's tracks into a packed window store (resumable)",
        description="Write every track of a split once as time-major float16, so that a "
        "training window is one contiguous read. Run the same command again to finish an "
        "interrupted pack.",
    )
    pack_parser.add_argument("--metadata", required=True, help="MTG-Jamendo repository checkout")
    pack_parser.add_argument("--melspecs", required=True, help="folder of mel-spectrograms")
    pack_parser.add_argument("--out", required=True, help="the store folder (new, or unfinished)")
    pack_parser.add_argument("--split", type=int, default=0, help="official split (default 0)")
    pack_parser.add_argument(
        "--subset", default="moodtheme", choices=SUBSETS, help="tag subset (default moodtheme)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "labels":
            return labels(args)
        if args.command == "pack":
            return pack_command(args)
        return check(args, parser)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
