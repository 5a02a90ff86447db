"""Tag recordings with a trained model.

    python -m tagging AUDIO... --model WHAT [--top N] [--json] [--crops K]

WHAT is a training run folder (python -m mer_models.train --out), a study
trial folder (STUDY/trials/<id>), or a study (its folder, or its name under
--results): its best trial by validation ROC-AUC, or with --fusion NAME a
fusion the study wrote (STUDY/fusions/NAME, e.g. top2). For each file it
prints the N most probable tags and the tags whose probability passes the
thresholds tuned on validation; --json prints one JSON object per line:
{"file": PATH, "top": [{"tag": ..., "probability": ...}, ...], "passed": [...]}.
A file that cannot be tagged is reported on stderr (with --json also as
{"file": PATH, "error": ...}), the others are still tagged, and the exit
code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mer_models.audio.frontend import AudioError, melspec_file
from mer_models.data.splits import SUBSETS, DataError, DatasetPaths
from tagging.scoring import tag_probabilities
from tagging.tagger import ModelSourceError, Tagger, load_tagger


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        tagger = _load(args)
    except (ModelSourceError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for member in tagger.members:
        member.network.to(device)
    if not args.json:
        print(f"model: {tagger.description}\n")
    failed = sum(not _tag_file(path, tagger, device, args) for path in args.audio)
    if failed:
        print(f"{failed} of {len(args.audio)} file(s) could not be tagged", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tagging",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("audio", nargs="+", help="audio files (MP3, WAV, FLAC, OGG, ...)")
    parser.add_argument("--model", required=True, help="run folder, trial folder or study")
    parser.add_argument("--fusion", help="a fusion of the study, e.g. top2 (STUDY/fusions/NAME)")
    parser.add_argument("--top", type=int, default=5, help="tags listed per file (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line and file")
    parser.add_argument(
        "--crops", type=int, help="K windows spread over the track (default: every window)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="windows per batch")
    parser.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--results", default="ray_results", help="where study names are looked up")
    group = parser.add_argument_group(
        "thresholds", "validation labels, for a run folder saved without thresholds.txt"
    )
    group.add_argument("--metadata", help="the dataset's metadata folder (data/splits, data/tags)")
    group.add_argument("--split", type=int, default=0, help="split number (default 0)")
    group.add_argument(
        "--subset",
        default="moodtheme",
        choices=SUBSETS,
        help="the dataset subset whose split files --metadata holds (default moodtheme)",
    )
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if args.crops is not None and args.crops < 1:
        parser.error(f"--crops must be >= 1, got {args.crops}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def _load(args: argparse.Namespace) -> Tagger:
    """The tagger --model (and --fusion) name; --metadata gives its validation labels."""
    metadata = None
    if args.metadata is not None:  # labels only: the melspec folder is not read
        metadata = DatasetPaths(args.metadata, args.metadata, args.split, args.subset)
    return load_tagger(args.model, results_root=args.results, fusion=args.fusion, metadata=metadata)


def _tag_file(path: str, tagger: Tagger, device: torch.device, args: argparse.Namespace) -> bool:
    """Tag one file and print its result; False (the error on stderr) when it cannot be read."""
    try:
        melspec = melspec_file(path)
    except AudioError as error:
        print(f"error: {error}", file=sys.stderr)
        if args.json:  # one line per file, failed ones too
            print(json.dumps({"file": str(path), "error": str(error)}), flush=True)
        return False
    probabilities, windows = tag_probabilities(tagger, melspec, device, args.crops, args.batch_size)
    if args.json:
        print(json.dumps(result_record(path, tagger, probabilities, args.top)), flush=True)
    else:
        print(format_result(path, tagger, probabilities, args.top, windows), flush=True)
    return True


def result_record(path: str, tagger: Tagger, probabilities: np.ndarray, top: int) -> dict:
    """The JSON line of one file: top N tags by probability, and the tags that pass."""
    order = np.argsort(-probabilities, kind="stable")
    passed = [int(i) for i in order if probabilities[i] > tagger.thresholds[i]]
    return {
        "file": str(path),
        "top": [
            {"tag": tagger.tags[i], "probability": round(float(probabilities[i]), 6)}
            for i in order[:top]
        ],
        "passed": [tagger.tags[i] for i in passed],
    }


def format_result(
    path: str, tagger: Tagger, probabilities: np.ndarray, top: int, windows: int
) -> str:
    """A readable table of one file's top tags, thresholds and passed tags."""
    record = result_record(path, tagger, probabilities, top)
    index = {tag: i for i, tag in enumerate(tagger.tags)}
    width = max(len(entry["tag"]) for entry in record["top"])
    lines = [f"{Path(path)}  ({windows} window{'s' if windows != 1 else ''})"]
    lines.append(f"  {'tag'.ljust(width)}  probability  threshold")
    for entry in record["top"]:
        threshold = tagger.thresholds[index[entry["tag"]]]
        mark = "  passed" if entry["tag"] in record["passed"] else ""
        lines.append(
            f"  {entry['tag'].ljust(width)}  {entry['probability']:11.3f}  {threshold:9.3f}{mark}"
        )
    lines.append(f"  passed: {', '.join(record['passed']) or '(none)'}\n")
    return "\n".join(lines)
