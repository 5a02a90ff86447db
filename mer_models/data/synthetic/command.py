"""Generate the synthetic dataset into a new folder.

python -m mer_models.synthetic --out DIR [--tracks N] [--seed S] [--workers W]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mer_models.data.synthetic.write import DEFAULT_TRACKS, MIN_TRACKS, write_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mer_models.synthetic",
        description="Generate the synthetic MTG-Jamendo mood/theme dataset (metadata and "
        "mel-spectrograms) into a new folder.",
    )
    parser.add_argument("--out", required=True, help="new (or empty) output folder")
    parser.add_argument(
        "--tracks", type=int, default=DEFAULT_TRACKS, help=f"tracks (default {DEFAULT_TRACKS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: up to 2; same files)"
    )
    args = parser.parse_args(argv)
    if args.tracks < MIN_TRACKS:
        parser.error(f"--tracks must be >= {MIN_TRACKS}, got {args.tracks}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"--out {out} exists and is not an empty folder")
    summary = write_synthetic(out, tracks=args.tracks, seed=args.seed, workers=args.workers)
    print(summary.line())
    return 0
