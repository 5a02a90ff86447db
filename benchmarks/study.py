"""Study benchmark: ASHA against FIFO, and 2 concurrent trials against 1 at a time.

On the synthetic dataset and `table1.yaml` (quick budget), runs the study
driver three or four times, each a fresh study in a temporary folder:

- `asha`: the space as written (ASHA on validation ROC-AUC);
- `fifo`: the same space with `scheduler: {type: fifo}`, so every trial runs
  its full `max_epochs` (early stopping with patience still applies);
- `serial` / `parallel`: FIFO with `--max-concurrent 1` and `2` on a
  shortened budget (`--concurrency-epochs`), for the wall time of running
  two trials at once on two cores against one at a time.

Trial-epochs are the sum of each trial's `epochs_run`; `same_best` says
whether ASHA's best trial by validation ROC-AUC has FIFO's best configuration.

    python benchmarks/study.py [--space table1.yaml] [--concurrency-epochs 3]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name
# would hide the `study` package: the project root goes before it.
sys.path.insert(0, str(ROOT))

from study.records import load_study, ranked_trials  # noqa: E402
from study.search_space import find_space  # noqa: E402

ARCHITECTURE = ("model", "cbam", "cell", "units", "layers")


def write_space(source: Path, out: Path, scheduler: dict | None, max_epochs: int | None) -> Path:
    """A copy of the space with another scheduler and/or a shorter max_epochs."""
    space = yaml.safe_load(source.read_text())
    if scheduler is not None:
        space["scheduler"] = scheduler
    if max_epochs is not None:
        space.setdefault("parameters", {}).update(max_epochs=max_epochs, patience=max_epochs)
    out.write_text(yaml.safe_dump(space, sort_keys=False))
    return out


def run_study(space: Path, work: Path, name: str, *extra: str) -> dict:
    """Run one study to the end; its wall time, trial-epochs and best configuration."""
    command = [
        sys.executable,
        str(ROOT / "study" / "run.py"),
        "--space",
        str(space),
        "--name",
        name,
        "--storage",
        str(work / "ray_results"),
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        *extra,
    ]
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=work, env=environment, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"study {name} failed with exit code {completed.returncode}")
    study = load_study(work / "ray_results" / name)
    epochs = [int(trial.metrics.get("epochs_run", 0)) for trial in study.trials]
    best = ranked_trials(study)[0]
    return {
        "seconds": round(seconds, 1),
        "trials": len(study.trials),
        "trial_epochs": sum(epochs),
        "best_trial": best.id,
        "best_config": {key: best.config.get(key) for key in ARCHITECTURE},
        "best_validation_roc_auc": round(float(best.metrics["validation_roc_auc"]), 4),
        "best_test_roc_auc": round(float(best.metrics["test_roc_auc"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="table1.yaml")
    parser.add_argument(
        "--concurrency-epochs",
        type=int,
        default=3,
        help="max_epochs of the serial/parallel runs (0: skip them)",
    )
    args = parser.parse_args()
    source = find_space(args.space)
    figures: dict = {"space": source.name, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="study-benchmark-") as folder:
        work = Path(folder)
        runs = {
            "asha": (write_space(source, work / "asha.yaml", None, None), ()),
            "fifo": (write_space(source, work / "fifo.yaml", {"type": "fifo"}, None), ()),
        }
        if args.concurrency_epochs > 0:
            short = write_space(
                source, work / "short.yaml", {"type": "fifo"}, args.concurrency_epochs
            )
            runs["serial"] = (short, ("--max-concurrent", "1"))
            runs["parallel"] = (short, ("--max-concurrent", "2"))
        for name, (space, extra) in runs.items():
            result = run_study(space, work, name, *extra)
            figures[name] = result
            print(
                f"{name}: {result['seconds']} s, {result['trial_epochs']} trial-epochs, best "
                f"{result['best_config']} val {result['best_validation_roc_auc']}",
                flush=True,
            )
    asha, fifo = figures["asha"], figures["fifo"]
    figures["asha_trial_epoch_fraction"] = round(asha["trial_epochs"] / fifo["trial_epochs"], 3)
    figures["asha_wall_time_fraction"] = round(asha["seconds"] / fifo["seconds"], 3)
    figures["same_best"] = asha["best_config"] == fifo["best_config"]
    if "parallel" in figures:
        speedup = figures["serial"]["seconds"] / figures["parallel"]["seconds"]
        figures["concurrency_speedup"] = round(speedup, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
