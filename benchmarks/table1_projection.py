"""Table 1 at the paper's protocol on one GPU: 10 epochs of every row at once, projected to 100.

Every configuration of `search_spaces/table1.yaml` trains at the same time,
one process each (as a FIFO study with one GPU shared by all trials), under
the `paper` budget (ResNet-18 width 64, 500-frame windows, batch 32, patience
20), for `--epochs` epochs on a synthetic dataset cut to the real split-0
sizes (9,949 / 3,802 / 4,231 tracks; the generator's own durations: an epoch
reads one window per track). The study's wall time for 100 epochs is then
projected from the measured wall time (process start-up, autotuning, graph
capture and the first epochs) and each trial's median epoch after the first
(validation and checkpoint included), measured while all rows share the GPU:

    trial time = measured wall time + (100 - epochs) x median later epoch
    study time = the slowest trial's

An upper bound: early stopping (patience 20) would end trials sooner, and a
trial that finishes frees the GPU for the rest. The arithmetic is printed.
Meant for a GPU; `--scale 0.005 --budget quick --rows 2` runs it on a CPU at
toy size.

    python benchmarks/table1_projection.py [--epochs 10] [--scale 1.0] [--budget paper]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from concurrent_training import TrialTiming, exit_with, run_concurrently  # noqa: E402

from mer_models.config import TrainConfig  # noqa: E402
from mer_models.data.splits import PARTS, DatasetPaths  # noqa: E402
from mer_models.data.synthetic import PART_SHARES, synthetic_dataset  # noqa: E402
from study_folder.budgets import BUDGETS  # noqa: E402
from study_folder.search_space import load_space  # noqa: E402

REAL_SPLIT_SIZES = {"train": 9949, "validation": 3802, "test": 4231}  # split-0, mood/theme
PROTOCOL_EPOCHS = 100
TARGET_MINUTES = 20.0


def cut_to_sizes(paths: DatasetPaths, sizes: dict[str, int], out: Path) -> DatasetPaths:
    """A copy of the metadata whose split files keep the first `sizes[part]` tracks."""
    metadata = out / "metadata"
    shutil.copytree(paths.metadata, metadata)
    cut = dataclasses.replace(paths, metadata=metadata)
    for part, size in sizes.items():
        lines = cut.split_file(part).read_bytes().decode().splitlines()
        if len(lines) - 1 < size:
            raise ValueError(
                f"{cut.split_file(part)}: {len(lines) - 1} tracks, fewer than the {size} needed"
            )
        cut.split_file(part).write_bytes(("\r\n".join(lines[: size + 1]) + "\r\n").encode())
    return cut


def row_configs(space: str, budget: str, epochs: int, rows: int | None, device: str) -> dict:
    loaded = load_space(space)
    fixed = {k: v for k, v in loaded.parameters.items() if not isinstance(v, dict)}
    chosen = loaded.configs[:rows] if rows else loaded.configs
    cores = os.cpu_count() or 1
    share = max(cores // len(chosen), 1)
    resources = (
        {"workers": max(share - 1, 1), "threads": 1}
        if device == "cuda"
        else {"workers": 0, "threads": share}
    )
    configs = {}
    for index, row in enumerate(chosen):
        values = {**BUDGETS[budget], **fixed, **row, **resources, "max_epochs": epochs}
        name = f"row{index + 1}-" + "-".join(str(v) for v in row.values())
        configs[name] = TrainConfig.from_dict(values, source=f"{space} row {index + 1}")
    return configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs measured (>= 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real splits")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="paper")
    parser.add_argument("--space", default="table1.yaml")
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    if args.epochs < 2 or not 0 < args.scale <= 1:
        parser.error("--epochs must be >= 2 and --scale in (0, 1]")
    return args


def tracks_needed(sizes: dict[str, int]) -> int:
    """Tracks the synthetic dataset needs for every part to reach its size (the generator
    splits 60/20/20 by artist, so with a margin)."""
    shares = dict(zip(PARTS, PART_SHARES, strict=True))
    return math.ceil(max(sizes[p] / shares[p] for p in PARTS) * 1.1)


def measure(
    configs: dict[str, TrainConfig], sizes: dict[str, int], tracks: int, device: str, epochs: int
) -> tuple[list[TrialTiming], float]:
    """Every row trained at once on the synthetic dataset cut to `sizes`: the trials'
    timings and the wall time of their run."""
    with tempfile.TemporaryDirectory(prefix="table1-projection-") as folder:
        work = Path(folder)
        paths = cut_to_sizes(synthetic_dataset(tracks=tracks), sizes, work)
        print(f"{len(configs)} rows at once on {device}, {epochs} epochs ...", flush=True)
        run_started = time.perf_counter()
        timings = run_concurrently(configs, paths, work / "runs", device)
        return timings, time.perf_counter() - run_started


def project_rows(timings: list[TrialTiming], measured: float) -> tuple[dict[str, dict], float]:
    """Each row's figures and its projection to the protocol's epochs, the arithmetic
    printed; and the study's projected time, its slowest row's."""
    rows = {}
    projections = []
    for timing in timings:
        first = timing.history[0]["seconds"]
        later = timing.seconds_per_epoch
        remaining = PROTOCOL_EPOCHS - len(timing.history)
        projected = measured + remaining * later
        projections.append(projected)
        rows[timing.name] = {
            "epochs_run": len(timing.history),
            "first_epoch_seconds": round(first, 2),
            "later_epoch_seconds": round(later, 2),
            "train_samples_per_second": round(timing.samples_per_second, 1),
            "projected_seconds": round(projected, 1),
        }
        print(
            f"{timing.name}: {len(timing.history)} epochs, {timing.samples_per_second:.0f} "
            f"samples/s, first epoch {first:.1f} s; {measured:.1f} s + {remaining} x {later:.2f} s = "
            f"{projected:.0f} s for {PROTOCOL_EPOCHS} epochs",
            flush=True,
        )
    return rows, max(projections)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = {part: max(math.ceil(n * args.scale), 8) for part, n in REAL_SPLIT_SIZES.items()}
    tracks = tracks_needed(sizes)
    print(f"synthetic dataset of {tracks} tracks, cut to {sizes} ...", flush=True)
    configs = row_configs(args.space, args.budget, args.epochs, args.rows, device)
    started = time.perf_counter()
    timings, measured = measure(configs, sizes, tracks, device, args.epochs)
    rows, study = project_rows(timings, measured)
    figures = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "budget": args.budget,
        "split_sizes": sizes,
        "epochs_measured": args.epochs,
        "measured_seconds": round(measured, 1),
        "rows": rows,
        "projected_study_seconds": round(study, 1),
        "projected_study_minutes": round(study / 60, 2),
        "target_minutes": TARGET_MINUTES,
        "within_target": study / 60 <= TARGET_MINUTES,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"Table 1, {PROTOCOL_EPOCHS} epochs, all rows at once: max over rows = {study:.0f} s "
        f"= {study / 60:.1f} min (target <= {TARGET_MINUTES:.0f} min; an upper bound, "
        "no early stopping)",
        flush=True,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    exit_with(main, __file__)
