"""GPU sharing benchmark: N real trainings at once on one GPU, against one alone.

Meant for a GPU: it measures what `--gpus-per-trial 1/N` gives a study.
Each trial is its own process running `mer_models.training.train` on a
synthetic dataset (the trainer's whole code path: loader workers, the step,
validation, checkpoints). First one trial alone, then N at once; a trial's
speed is the median training samples/s of its epochs after the first
(start-up, autotuning and graph capture), which all trials run side by side.

Loader workers per trial default to the trial's share of the cores less
one (the trainer's own process), as the study sizes them. On a CPU it runs
too (device "cpu", no loader workers, the cores split between trials),
which is how it is tested; `--size toy` is a tiny model for that.

    python benchmarks/gpu_share.py --trials 4 [--size paper] [--tracks 3000] [--epochs 3] [--eager]

The last line printed is a JSON object with `solo_samples_per_second`,
`total_samples_per_second`, `per_trial_samples_per_second` and `device`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from concurrent_training import exit_with, run_concurrently  # noqa: E402

from mer_models.config import TrainConfig  # noqa: E402
from mer_models.data.synthetic import synthetic_dataset  # noqa: E402

SIZES = {
    # The paper's protocol: ResNet-18 width 64 with CBAM, GRU 256, 500-frame windows, batch 32.
    "paper": TrainConfig(width=64, window=500, batch_size=32, cbam=True, cell="gru", units=256),
    # A few CPU seconds an epoch: for testing the benchmark itself.
    "toy": TrainConfig(width=4, window=64, batch_size=8, cbam=False, units=16),
}


def trial_config(
    size: str, trials: int, epochs: int, workers: int | None, device: str, graphs: bool = True
):
    cores = os.cpu_count() or 1
    share = max(cores // trials, 1)
    if workers is None:
        workers = max(share - 1, 1) if device == "cuda" else 0
    return SIZES[size].replace(
        max_epochs=epochs,
        patience=epochs,
        workers=workers,
        threads=1 if device == "cuda" else share,
        cuda_graphs=graphs,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trainings at once")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--tracks", type=int, default=3000, help="synthetic dataset size")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (>= 2)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers per trial")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--eager", action="store_true", help="cuda_graphs off (for comparison)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.epochs < 2:
        parser.error("--trials must be >= 1 and --epochs >= 2 (the first epoch is not timed)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"synthetic dataset of {args.tracks} tracks ...", flush=True)
    paths = synthetic_dataset(tracks=args.tracks)
    figures: dict = {
        "device": name,
        "trials": args.trials,
        "size": args.size,
        "cuda_graphs": not args.eager and device == "cuda",
    }
    with tempfile.TemporaryDirectory(prefix="gpu-share-") as folder:
        work = Path(folder)
        graphs = not args.eager
        solo_config = trial_config(args.size, 1, args.epochs, args.workers, device, graphs)
        (solo,) = run_concurrently({"solo": solo_config}, paths, work / "solo", device)
        print(f"1 trial alone: {solo.samples_per_second:.1f} samples/s", flush=True)
        config = trial_config(args.size, args.trials, args.epochs, args.workers, device, graphs)
        shared = run_concurrently(
            {f"trial{i}": config for i in range(args.trials)}, paths, work / "shared", device
        )
    rates = [timing.samples_per_second for timing in shared]
    for timing in shared:
        print(f"{timing.name}: {timing.samples_per_second:.1f} samples/s", flush=True)
    total = sum(rates)
    figures.update(
        workers_per_trial=config.workers,
        solo_samples_per_second=round(solo.samples_per_second, 2),
        total_samples_per_second=round(total, 2),
        per_trial_samples_per_second=round(total / len(rates), 2),
        slowest_trial_samples_per_second=round(min(rates), 2),
        per_trial_fraction_of_solo=round(total / len(rates) / solo.samples_per_second, 3),
    )
    print(
        f"{args.trials} trials at once: {total:.1f} samples/s in all, "
        f"{total / len(rates):.1f} per trial ({figures['per_trial_fraction_of_solo']:.0%} of "
        f"one alone)",
        flush=True,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    exit_with(main, __file__)
