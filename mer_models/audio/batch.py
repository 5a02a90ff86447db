"""Mel-spectrograms for a whole folder of recordings, resumable and in parallel.

Outputs mirror the inputs by relative path with the suffix replaced by
``.npy``, so the dataset's ``NN/ID.mp3`` becomes ``NN/ID.npy``. Every array
is written to a temporary name and renamed into place
(`mer_models.files.atomic_write_bytes`, with the mode the umask gives), so an
output that exists is complete: a killed run is continued by running it
again, which first removes the temporary files the kill left, and finished
files are not recomputed. A file that fails is reported with its reason and
the others are still written.
"""

from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer_models.audio.frontend import AudioError, melspec_file
from mer_models.files import PARTIAL, atomic_write_bytes

AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff")


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Outcome:
    job: Job
    error: str | None  # None: written


def save_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def remove_leftovers(jobs: list[Job], out_dir: str | Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``out_dir`` (names holding
    ``.partial``: ours, ``.NAME.npy.PID.partial``, and older versions' ``NAME.npy.partial-X``);
    an output of a recording whose own name holds ``.partial`` is kept."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    targets = {job.target for job in jobs}
    removed = []
    for path in sorted(out_dir.rglob(f"*{PARTIAL}*")):
        if PARTIAL in path.name and path.is_file() and path not in targets:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def plan(audio_dir: str | Path, out_dir: str | Path) -> list[Job]:
    """One job per audio file under ``audio_dir`` (sorted), target ``out_dir/REL.npy``.

    Two recordings that would share an output (``a.mp3`` and ``a.wav`` in one
    folder) are refused before anything is computed.
    """
    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    if not audio_dir.is_dir():
        raise AudioError(f"{audio_dir}: not a folder of recordings")
    sources = sorted(
        path
        for path in audio_dir.rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
    )
    if not sources:
        raise AudioError(
            f"{audio_dir}: no audio files found (looked for {', '.join(AUDIO_SUFFIXES)})"
        )
    jobs, seen = [], {}
    for source in sources:
        target = out_dir / source.relative_to(audio_dir).with_suffix(".npy")
        if target in seen:
            raise AudioError(
                f"{seen[target]} and {source} would both be written to {target}; rename one of them"
            )
        seen[target] = source
        jobs.append(Job(source, target))
    return jobs


def run_job(job: Job) -> Outcome:
    """Compute and write one melspec; a recording that fails is an Outcome with its reason."""
    try:
        save_atomic(job.target, melspec_file(job.source))
    except AudioError as error:
        return Outcome(job, str(error))
    return Outcome(job, None)


def run_jobs(
    jobs: list[Job], workers: int = 1, on_done: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """Run the jobs whose output does not exist yet, in ``workers`` processes.

    Returns the outcomes of the jobs run (finished outputs are skipped);
    ``on_done`` sees each as it completes.
    """
    pending = [job for job in jobs if not job.target.is_file()]
    outcomes = []
    # Closed at once however this loop ends: a Ctrl-C landing in `on_done` must cancel
    # the jobs not started yet as one landing in the wait does.
    with contextlib.closing(_execute(pending, workers)) as executed:
        for outcome in executed:
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
    return outcomes


def _execute(jobs: list[Job], workers: int) -> Iterator[Outcome]:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        yield from map(run_job, jobs)
        return
    # Workers ignore Ctrl-C: the parent stops, cancels what has not started and lets
    # the files in progress finish (each is written whole or not at all). However the
    # loop ends (an interrupt here or in the caller, which closes this generator), the
    # jobs not started are cancelled: the pool's own exit would run every one of them.
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts)
    try:
        futures = [pool.submit(run_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
