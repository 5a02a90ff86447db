"""Train one configuration without Ray.

    python -m mer_models.train --config CFG.yaml --out DIR [--metadata DIR --melspecs DIR]
    python -m mer_models.train --config CFG.yaml --out DIR --metadata DIR --store STORE

CFG.yaml is a flat mapping of `TrainConfig` fields; fields left out keep the
paper's defaults. Without data flags it trains on the embedded synthetic
dataset; `--store` reads windows from a packed store
(`python -m mer_models.data pack`) in place of the melspec folder. Progress
is printed after every epoch; `--resume` continues from `DIR/checkpoint`
(after Ctrl-C, or a kill), and a folder that holds a run is never trained
over without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mer_models.config import TrainConfig, load_config
from mer_models.data.arguments import add_data_arguments, dataset_paths
from mer_models.data.splits import DataError
from mer_models.training.metrics import BY_EPOCH_NAME, DEFAULT_SELECTION
from mer_models.training.step import GraphCaptureFailed
from mer_models.training.trainer import TrainingDiverged, train


def default_threads(config: TrainConfig) -> int:
    """Torch's threads beside `config.workers` loader processes: the cores left to each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // (config.workers + 1))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = _config(args)
        out = Path(args.out)
        restore = _restore_dir(out, args.resume, parser)
        paths = dataset_paths(args, parser)
        config = _with_split(config, paths.split, parser)
        metrics = train(
            config,
            paths,
            out,
            restore=restore,
            device=args.device,
            selection=args.metric,
        )
    except (DataError, GraphCaptureFailed, TrainingDiverged, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: python -m mer_models.train --out {args.out} "
            "--resume (and the same --config and data flags)",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(metrics, indent=2))
    print(f"results in {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mer_models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help="flat YAML mapping of config fields (default: the paper's)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on CUDA, run each training step eagerly instead of as one CUDA graph "
        "(sets cuda_graphs: false; for a GPU where the graph's capture fails)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the config's threads, else max(1, cores // "
        "(workers + 1)): the cores shared with the loader's worker processes; torch's own "
        "default takes every core and, beside busy workers, can make an epoch ten times "
        "slower)",
    )
    parser.add_argument(
        "--metric",
        choices=tuple(BY_EPOCH_NAME),
        default=DEFAULT_SELECTION,
        help="validation metric that early stopping and the best epoch follow "
        f"(default: {DEFAULT_SELECTION}, the paper's; MediaEval ranked by val_pr_auc)",
    )
    add_data_arguments(parser)
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    """--config's TrainConfig (else the paper's) with --no-cuda-graphs and the threads."""
    config = load_config(args.config) if args.config else TrainConfig()
    if args.no_cuda_graphs:
        config = config.replace(cuda_graphs=False)
    return config.replace(threads=args.threads or config.threads or default_threads(config))


def _restore_dir(out: Path, resume: bool, parser: argparse.ArgumentParser) -> Path | None:
    """OUT/checkpoint with --resume (which must exist); None, in a folder that holds no run."""
    restore = out / "checkpoint" if resume else None
    if restore is not None and not restore.is_dir():
        parser.error(f"--resume: no checkpoint at {restore}")
    if restore is None and (out / "checkpoint").exists():
        parser.error(
            f"--out {out} holds a run already (its checkpoint folder); continue it with "
            "--resume, or choose another --out"
        )
    return restore


def _with_split(config: TrainConfig, split: int, parser: argparse.ArgumentParser) -> TrainConfig:
    """The config on the data flags' split; a config that names another split is refused."""
    if config.split not in (0, split):
        parser.error(
            f"--config sets split: {config.split} but the data flags give split {split} "
            f"(--split, or the store's): pass --split {config.split}, or drop split from the config"
        )
    return config.replace(split=split)


if __name__ == "__main__":
    sys.exit(main())
