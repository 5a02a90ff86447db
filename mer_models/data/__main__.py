"""Command line of the data layer.

python -m mer_models.data labels SPLIT.tsv --tags TAGS.txt --out M.npy
python -m mer_models.data check [--metadata DIR --melspecs DIR] [--split N] [--subset S]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from mer_models.data.arguments import add_data_arguments, dataset_paths
from mer_models.data.check import check_dataset
from mer_models.data.splits import DataError, label_matrix


def labels(args: argparse.Namespace) -> int:
    matrix = label_matrix(args.split_file, args.tags)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, suffix=".npy.tmp")
    with os.fdopen(handle, "wb") as stream:
        np.save(stream, matrix)
    os.replace(temporary, out)
    print(f"wrote {out}: bool {matrix.shape}, {int(matrix.sum())} positive labels")
    return 0


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    report = check_dataset(dataset_paths(args, parser))
    if not report.ok:
        print(report.describe_problems(), file=sys.stderr)
        return 1
    print(report.summary())
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "labels":
            return labels(args)
        return check(args, parser)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
