"""Mel-spectrograms from audio, computed as the MTG-Jamendo dataset's were.

    python -m mer_models.audio melspec AUDIO --out X.npy
    python -m mer_models.audio melspecs AUDIO_DIR --out MELSPEC_DIR [--workers N]

`melspec` writes one (96, T) float32 array. `melspecs` converts a folder,
mirrored by relative path (the dataset's NN/ID.mp3 becomes NN/ID.npy);
run it again to continue an interrupted run: finished files are skipped.
Recordings that fail are listed at the end and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from mer_models.audio.batch import plan, remove_leftovers, run_jobs, save_atomic
from mer_models.audio.frontend import AudioError, melspec_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mer_models.audio",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("melspec", help="one recording to one .npy file")
    one.add_argument("audio", help="audio file (MP3, WAV, FLAC, OGG, ...)")
    one.add_argument("--out", required=True, help="output .npy file")
    many = commands.add_parser("melspecs", help="a folder of recordings, mirrored")
    many.add_argument("audio_dir", help="folder of recordings (searched recursively)")
    many.add_argument("--out", required=True, help="output folder of .npy files")
    many.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    try:
        if args.command == "melspec":
            array = melspec_file(args.audio)
            save_atomic(args.out, array)
            print(f"{args.out}: {array.shape[0]} bands x {array.shape[1]} frames")
            return 0
        if args.workers < 1:
            parser.error(f"--workers must be >= 1, got {args.workers}")
        return _convert_folder(Path(args.audio_dir), Path(args.out), args.workers)
    except AudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted; the files written so far are complete and kept: run the same "
            "command again to continue",
            file=sys.stderr,
        )
        return 130


def _convert_folder(audio_dir: Path, out_dir: Path, workers: int) -> int:
    jobs = plan(audio_dir, out_dir)
    left = remove_leftovers(jobs, out_dir)
    if left:
        print(f"removed {len(left)} unfinished file(s) an interrupted run left", file=sys.stderr)
    done = sum(job.target.is_file() for job in jobs)
    with tqdm(total=len(jobs) - done, unit="file", desc="melspecs", file=sys.stderr) as bar:
        outcomes = run_jobs(jobs, workers, on_done=lambda _: bar.update())
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    print(
        f"{len(outcomes) - len(failed)} written, {done} already done, {len(failed)} failed "
        f"(of {len(jobs)} recordings) in {out_dir}"
    )
    if failed:
        print(f"{len(failed)} recording(s) failed:", file=sys.stderr)
        for outcome in failed:
            print(f"  {outcome.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
