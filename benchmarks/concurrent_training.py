"""Several real trainings at once, one process each, timed over the epochs they share.

Used by `gpu_share.py` and `table1_projection.py`, which end through
`exit_with`. Each process runs
`mer_models.training.train` (the trainer's own code path: loader workers,
the graphed or eager step, validation, checkpoints) on its config. All of
them wait at a barrier after their first epoch, which holds start-up,
cuDNN autotuning and graph capture, so that the later epochs run side by
side and their speeds are what each trial gets while sharing the device.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mer_models.config import TrainConfig  # noqa: E402
from mer_models.data.scaling import band_stats  # noqa: E402
from mer_models.data.splits import DatasetPaths, load_split  # noqa: E402

BARRIER_TIMEOUT_S = 1800.0  # a trial stuck before its first epoch ends: the others stop too


@dataclass(frozen=True)
class TrialTiming:
    """One trial's epochs: training samples/s per epoch and wall times."""

    name: str
    history: list[dict]
    first_epoch_end: float  # time.time() when the barrier released it
    end: float  # time.time() at its last epoch's end

    @property
    def shared_epochs(self) -> list[dict]:
        """Epochs after the barrier (all of them if there was only one)."""
        return self.history[1:] or self.history

    @property
    def samples_per_second(self) -> float:
        """Median training samples/s of the shared epochs (validation excluded)."""
        return statistics.median(r["samples_per_second"] for r in self.shared_epochs)

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall seconds of a shared epoch, validation and checkpoint included."""
        return statistics.median(r["seconds"] for r in self.shared_epochs)


def _trial(
    name: str,
    config: dict,
    paths: dict,
    out_dir: str,
    device: str,
    barrier,
    results,
) -> None:
    from mer_models.training.trainer import train

    released = [time.time()]

    def on_epoch(record: dict, checkpoint: Path) -> None:
        if record["epoch"] == 1:
            barrier.wait(BARRIER_TIMEOUT_S)
            released[0] = time.time()

    try:
        train(
            TrainConfig.from_dict(config),
            DatasetPaths(**paths),
            Path(out_dir),
            on_epoch=on_epoch,
            device=device,
            check_data=False,
        )
        history = json.loads((Path(out_dir) / "history.json").read_text())
        results.put((name, history, released[0], time.time(), None))
    except BaseException:
        barrier.abort()
        results.put((name, [], 0.0, 0.0, traceback.format_exc()))


def run_concurrently(
    configs: dict[str, TrainConfig], paths: DatasetPaths, work: Path, device: str
) -> list[TrialTiming]:
    """Train every config at once, each in its own process; their timings, in order.

    The training split's band statistics are computed (and cached) here
    first, so the trials do not race to compute them.
    """
    for window in {config.window for config in configs.values()}:
        band_stats(load_split(paths, "train"), paths, window)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier = context.Barrier(len(configs))
    results = context.Queue()
    processes = [
        context.Process(
            target=_trial,
            args=(
                name,
                config.to_dict(),
                paths.to_dict(),
                str(work / name),
                device,
                barrier,
                results,
            ),
        )
        for name, config in configs.items()
    ]
    for process in processes:
        process.start()
    collected: dict[str, TrialTiming] = {}
    failures = []
    while len(collected) + len(failures) < len(processes):
        try:
            name, history, released, end, error = results.get(timeout=5.0)
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:  # killed without a word (out of memory, a signal): stop the rest
                barrier.abort()
                failures.extend(f"a trial process exited with code {p.exitcode}" for p in dead)
                for process in processes:
                    process.terminate()
                break
            continue
        if error is not None:
            failures.append(f"trial {name} failed:\n{error}")
        else:
            collected[name] = TrialTiming(name, history, released, end)
    for process in processes:
        process.join()
    if failures:
        raise RuntimeError("\n".join(failures))
    return [collected[name] for name in configs]


def exit_with(main: Callable[[], int], script: str) -> None:
    """A benchmark script's exit: `main`'s status, or its error on one line and status 1
    (bad arguments raise ValueError, a failed trial RuntimeError), without a traceback."""
    try:
        sys.exit(main())
    except (ValueError, RuntimeError) as error:
        print(f"{Path(script).name}: {error}", file=sys.stderr)
        sys.exit(1)
