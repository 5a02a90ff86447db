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
whether ASHA's best trial by validation ROC-AUC has FIFO's best configuration
(the fields the space varies).

`--space wide24` is a set of explicit configurations drawn at random
(`--seed`) from `wide.yaml`'s distributions, `--configs` of them (24), written
as the `configs` of a grid space (quick budget, ASHA with grace period 2 and
reduction factor 3) in the benchmark's temporary folder; its studies run two
trials at a time. Before any study runs, the dataset, its check and the band
statistics of every window the space uses are cached, so that no study pays
for them alone.

`startup_seconds_per_trial` is the mean time a trial holds its slot outside
its epochs (an epoch's `seconds`: training, validation and the best epoch's
test predictions): the worker's start and imports, data, model, loaders,
checkpoints, reports and the recording of its results. Each slot's time runs
from the start of Ray Tune's run (its `tuner.pkl`) to the end of the slot's
last trial (its `metrics.json`): the driver's start and its summary at the
end are not a trial's, nor is a slot left idle at the end. Pooled over the
ASHA and FIFO studies. `outside_epochs_seconds` is the coarser figure: a
study's wall time less its epoch seconds shared over the slots.

`asha_epoch_seconds_fraction` is ASHA's epoch seconds over FIFO's, and
`asha_epochs_at_fifo_cost` the same with each of ASHA's epochs priced at
what FIFO's run of that configuration paid for that epoch: a configuration
trains alike under both, so the second is what ASHA's choice of epochs is
worth, and the gap between them is ASHA's epochs running slower.

`--space race` draws 12 configurations from `wide.yaml` (seed 0) with
`repeats: 3` and `scheduler: {type: race, grace_period: 2,
reduction_factor: 2, alpha: 0.05}`, and runs it twice with two trials at a
time, once with one, and once under FIFO: its last line adds
`race_trial_epochs`, `fifo_trial_epochs`, `race_wall_seconds`,
`fifo_wall_seconds`, `same_best_row`, `decisions_identical` (the three
races' rungs.json decisions), `rows_identical` (their rows.json) and
`full_budget_rows_as_fifo` (every row the race kept to the end has FIFO's
means and intervals, to the last digit). `--race-epochs N` gives the race
and FIFO N epochs (patience as the budget's), for how the race's share of the
wall time moves with the budget; `--race-once` runs the race once only (no
repeat, none one at a time), so its determinism figures are left out.

    python benchmarks/study_schedulers.py [--space table1.yaml|wide24|race] [--configs 24]
                               [--concurrency-epochs 3] [--race-epochs N] [--race-once]

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

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name
# would hide the `study` package: the project root goes before it.
sys.path.insert(0, str(ROOT))

from mer_models.models.registry import ARCHITECTURE_FIELDS as ARCHITECTURE  # noqa: E402
from study_folder.budgets import BUDGETS  # noqa: E402
from study_folder.records import load_study, ranked_trials, row_key  # noqa: E402
from study_folder.search_space import find_space, load_space, tune_value  # noqa: E402

GENERATED = {"wide24": "wide.yaml", "race": "wide.yaml"}  # drawn here: the space drawn from
RACE = {"type": "race", "grace_period": 2, "reduction_factor": 2, "alpha": 0.05}
RACE_CONFIGS, RACE_REPEATS = 12, 3
SLOTS = 2  # trials at a time in a generated space's studies


def draw_space(
    source: Path, out: Path, count: int, seed: int, scheduler: dict | None = None, repeats: int = 1
) -> Path:
    """`count` configurations drawn (seeded) from the space's distributions, written as the
    explicit `configs` of a grid space: quick budget, ASHA (grace 2, reduction 3) unless
    `scheduler` says otherwise; with `repeats`, seeds 0..repeats-1 of each."""
    from ray.tune.search.variant_generator import generate_variants

    space = load_space(str(source))
    values = {key: tune_value(spec) for key, spec in space.parameters.items()}
    random_state = np.random.RandomState(seed)
    configs = []
    for _ in range(count):
        for _, variant in generate_variants(values, random_state=random_state):
            configs.append({key: _plain(value) for key, value in variant.items()})
    drawn = {
        "description": f"{count} configurations drawn (seed {seed}) from {source.name}",
        "searcher": "grid",
        "num_samples": 1,
        "budget": "quick",
        "metric": {"name": space.metric, "mode": space.mode},
        "scheduler": scheduler or {"type": "asha", "grace_period": 2, "reduction_factor": 3},
        **({"repeats": repeats} if repeats > 1 else {"parameters": {"seed": 0}}),
        "configs": configs,
    }
    out.write_text(yaml.safe_dump(drawn, sort_keys=False))
    return out


def _plain(value):
    """A drawn numpy scalar as the YAML scalar it is."""
    return value.item() if isinstance(value, np.generic) else value


def searched_keys(space_file: Path) -> tuple[str, ...]:
    """What a space varies: the architecture, then its configs' and sampled fields."""
    space = yaml.safe_load(space_file.read_text())
    varied = {key for row in space.get("configs") or [] for key in row}
    varied |= {k for k, v in (space.get("parameters") or {}).items() if isinstance(v, dict)}
    return ARCHITECTURE + tuple(sorted(varied - set(ARCHITECTURE)))


def warm_caches(space_file: Path) -> None:
    """The synthetic dataset, its check and the band statistics of each window the space
    uses: computed once here rather than by whichever study runs first."""
    from mer_models.data.check import check_dataset
    from mer_models.data.scaling import band_stats
    from mer_models.data.synthetic import synthetic_dataset
    from mer_models.training.trainer import split_tables
    from study_folder.budgets import BUDGETS

    space = yaml.safe_load(space_file.read_text())
    fixed = {**BUDGETS[space.get("budget", "quick")], **(space.get("parameters") or {})}
    windows = {row.get("window", fixed["window"]) for row in space.get("configs") or [{}]}
    paths = synthetic_dataset()
    check_dataset(paths)
    train = split_tables(paths)["train"]
    for window in sorted(windows):
        band_stats(train, paths, int(window))


def write_space(source: Path, out: Path, scheduler: dict | None, max_epochs: int | None) -> Path:
    """A copy of the space with another scheduler and/or a shorter max_epochs."""
    space = yaml.safe_load(source.read_text())
    if scheduler is not None:
        space["scheduler"] = scheduler
    if max_epochs is not None:
        space.setdefault("parameters", {}).update(max_epochs=max_epochs, patience=max_epochs)
    out.write_text(yaml.safe_dump(space, sort_keys=False))
    return out


def run_study(
    space: Path, work: Path, name: str, *extra: str, slots: int = SLOTS, keys=ARCHITECTURE
) -> dict:
    """Run one study to the end; its wall time, trial-epochs, best configuration and the
    time its trials spend outside their epochs (`slots`: trials at a time)."""
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
    epoch_seconds = sum(row["seconds"] for trial in study.trials for row in trial.history)
    slot_seconds = _slot_seconds(study, slots)
    best = ranked_trials(study)[0]
    by_config = {
        row_key(trial.config): [row["seconds"] for row in trial.history] for trial in study.trials
    }
    return {
        "seconds": round(seconds, 1),
        "trials": len(study.trials),
        "trial_epochs": sum(epochs),
        "best_trial": best.key,
        "best_config": {key: best.config.get(key) for key in keys},
        "best_validation_roc_auc": round(float(best.metrics["validation_roc_auc"]), 4),
        "best_test_roc_auc": round(float(best.metrics["test_roc_auc"]), 4),
        "epoch_seconds": round(epoch_seconds, 1),
        "slot_seconds": round(slot_seconds, 1),
        "startup_seconds_per_trial": round((slot_seconds - epoch_seconds) / len(study.trials), 2),
        "outside_epochs_seconds": round(seconds - epoch_seconds / slots, 1),
        "load_average": _load(),
        "by_config": by_config,  # each configuration's epoch seconds (not printed)
    }


def epochs_at_fifo_cost(asha: dict, fifo: dict) -> float:
    """ASHA's trial-epochs priced at FIFO's seconds for the same epochs, over FIFO's epoch
    seconds. A configuration trains alike under both (same seed: the same epochs, the same
    best epochs predicting the test set), so this is the share of FIFO's epoch time that
    ASHA's choice of epochs is worth; against ASHA's own epoch seconds it tells a slower
    epoch (the machine) from a dearer choice (ASHA keeping the costlier configurations)."""
    priced = 0.0
    for key, seconds in asha["by_config"].items():
        reference = fifo["by_config"].get(key, seconds)
        priced += sum(reference[: len(seconds)]) + sum(seconds[len(reference) :])
    return priced / sum(sum(seconds) for seconds in fifo["by_config"].values())


def _slot_seconds(study, slots: int) -> float:
    """Seconds the trial slots were held: from Ray Tune's start to each slot's last trial's
    end. Trials start as slots free up, so the slots' last ends are the `slots` latest."""
    started = (study.dir / "tuner.pkl").stat().st_mtime
    ends = sorted((trial.dir / "metrics.json").stat().st_mtime for trial in study.trials)
    return sum(end - started for end in ends[-slots:])


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def race_figures(
    work: Path, keys: tuple[str, ...], epochs: int | None = None, once: bool = False
) -> dict:
    """`--space race`: 12 configurations drawn from wide.yaml x 3 seeds, raced twice with two
    trials at a time and once with one (`once`: once only), and run under FIFO; `epochs`:
    both with that max_epochs instead of the budget's."""
    source = race_space(work, epochs)
    fifo_space = write_space(source, work / "fifo.yaml", {"type": "fifo"}, None)
    runs = {
        "race": (source, ("--max-concurrent", str(SLOTS))),
        **(
            {}
            if once
            else {
                "race_again": (source, ("--max-concurrent", str(SLOTS))),
                "race_serial": (source, ("--max-concurrent", "1")),
            }
        ),
        "fifo": (fifo_space, ("--max-concurrent", str(SLOTS))),
    }
    figures: dict = {
        "configs": RACE_CONFIGS,
        "repeats": RACE_REPEATS,
        "scheduler": RACE,
        "max_epochs": epochs or BUDGETS["quick"]["max_epochs"],
    }
    outcome, by_config = {}, {}
    for name, (space, flags) in runs.items():
        result = run_study(space, work, name, *flags, slots=int(flags[1]), keys=keys)
        by_config[name] = result.pop("by_config")
        folder = work / "ray_results" / name
        rows = json.loads((folder / "rows.json").read_text())
        for row in rows:  # trial ids are each study's own
            row.pop("trials")
        outcome[name] = {"rows": rows, "rungs": _decisions(folder / "rungs.json")}
        figures[name] = result
        print(f"{name}: {result['seconds']} s, {result['trial_epochs']} trial-epochs", flush=True)
    figures.update(race_comparison(figures["race"], figures["fifo"], by_config))
    figures.update(race_agreement(outcome))
    return figures


def race_space(work: Path, epochs: int | None) -> Path:
    """The race's space: 12 wide.yaml draws x 3 seeds (with `epochs`: that max_epochs), its
    caches warmed."""
    source = draw_space(
        find_space("wide.yaml"), work / "race.yaml", RACE_CONFIGS, 0, RACE, RACE_REPEATS
    )
    if epochs is not None:
        space = yaml.safe_load(source.read_text())
        space.setdefault("parameters", {})["max_epochs"] = epochs
        source.write_text(yaml.safe_dump(space, sort_keys=False))
    warm_caches(source)
    return source


def race_comparison(race: dict, fifo: dict, by_config: dict[str, dict]) -> dict:
    """The race against FIFO: trial-epochs, wall time, and where the race's wall time goes."""
    figures = {}
    figures["race_trial_epochs"] = race["trial_epochs"]
    figures["fifo_trial_epochs"] = fifo["trial_epochs"]
    figures["race_wall_seconds"] = race["seconds"]
    figures["fifo_wall_seconds"] = fifo["seconds"]
    figures["race_trial_epoch_fraction"] = round(race["trial_epochs"] / fifo["trial_epochs"], 3)
    figures["race_wall_time_fraction"] = round(race["seconds"] / fifo["seconds"], 3)
    # Where the race's wall time goes: its epochs' share of FIFO's epoch seconds, as run and
    # as FIFO's same epochs cost (the rest of the wall time is outside the epochs).
    figures["race_epoch_seconds_fraction"] = round(race["epoch_seconds"] / fifo["epoch_seconds"], 3)
    figures["race_epochs_at_fifo_cost"] = round(
        epochs_at_fifo_cost({"by_config": by_config["race"]}, {"by_config": by_config["fifo"]}), 3
    )
    return figures


def race_agreement(outcome: dict[str, dict]) -> dict:
    """Whether the races decided alike and wrote the same rows (where it ran more than
    once), and whether their rows agree with FIFO's."""
    figures = {}
    races = [outcome[name] for name in ("race", "race_again", "race_serial") if name in outcome]
    if len(races) > 1:
        figures["decisions_identical"] = all(r["rungs"] == races[0]["rungs"] for r in races)
        figures["rows_identical"] = all(r["rows"] == races[0]["rows"] for r in races)
    raced = {row["row"]: row for row in outcome["race"]["rows"]}
    reference = {row["row"]: row for row in outcome["fifo"]["rows"]}
    figures["same_best_row"] = (
        outcome["race"]["rows"][0]["row"] == outcome["fifo"]["rows"][0]["row"]
    )
    figures["full_budget_rows_as_fifo"] = all(
        row[key] == reference[name][key]
        for name, row in raced.items()
        for key in ("test_roc_auc", "test_pr_auc", "val_roc_auc")
    )
    figures["rows_dropped"] = len(reference) - len(raced)
    return figures


def _decisions(path: Path) -> list[tuple]:
    """A rungs.json's decisions: (rung, row, decision) per entry; [] for a study that did not
    race (FIFO)."""
    if not path.is_file():
        return []
    return [(e["rung"], e["row"], e["decision"]) for e in json.loads(path.read_text())]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--space", default="table1.yaml", help=f"a space, or one drawn here: {', '.join(GENERATED)}"
    )
    parser.add_argument("--configs", type=int, default=24, help="configurations a drawn space has")
    parser.add_argument("--seed", type=int, default=0, help="seed of a drawn space's draws")
    parser.add_argument(
        "--race-epochs", type=int, help="max_epochs of --space race's studies (the budget's: 12)"
    )
    parser.add_argument(
        "--race-once", action="store_true", help="--space race: the race once, then FIFO"
    )
    parser.add_argument(
        "--concurrency-epochs",
        type=int,
        default=3,
        help="max_epochs of the serial/parallel runs (0: skip them; a drawn space skips them)",
    )
    return parser.parse_args()


def scheduler_runs(
    source: Path, work: Path, extra: tuple[str, ...], concurrency_epochs: int
) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Each study's space and flags: ASHA and FIFO on the space, then (unless
    `concurrency_epochs` is 0) FIFO on a shorter budget one trial at a time and two."""
    runs = {
        "asha": (write_space(source, work / "asha.yaml", None, None), extra),
        "fifo": (write_space(source, work / "fifo.yaml", {"type": "fifo"}, None), extra),
    }
    if concurrency_epochs > 0:
        short = write_space(source, work / "short.yaml", {"type": "fifo"}, concurrency_epochs)
        runs["serial"] = (short, ("--max-concurrent", "1"))
        runs["parallel"] = (short, ("--max-concurrent", "2"))
    return runs


def run_studies(
    runs: dict[str, tuple[Path, tuple[str, ...]]], work: Path, keys: tuple[str, ...], figures: dict
) -> dict[str, dict]:
    """Each study run in turn, its figures under its name in `figures` and its line printed;
    each one's epoch seconds by configuration."""
    by_config: dict[str, dict] = {}
    for name, (space, flags) in runs.items():
        slots = int(flags[flags.index("--max-concurrent") + 1]) if flags else os.cpu_count()
        result = run_study(space, work, name, *flags, slots=slots, keys=keys)
        by_config[name] = result.pop("by_config")
        figures[name] = result
        print(
            f"{name}: {result['seconds']} s, {result['trial_epochs']} trial-epochs, "
            f"{result['startup_seconds_per_trial']} s a trial outside epochs, best "
            f"{result['best_config']} val {result['best_validation_roc_auc']} "
            f"(load average {result['load_average']})",
            flush=True,
        )
    return by_config


def scheduler_comparison(figures: dict, by_config: dict[str, dict]) -> dict:
    """ASHA against FIFO (trial-epochs, wall time, best configuration, time outside epochs),
    and two trials at a time against one where they ran."""
    asha, fifo = figures["asha"], figures["fifo"]
    wall_fraction = round(asha["seconds"] / fifo["seconds"], 3)
    outside = sum(run["slot_seconds"] - run["epoch_seconds"] for run in (asha, fifo))
    comparison = {
        "asha_trial_epoch_fraction": round(asha["trial_epochs"] / fifo["trial_epochs"], 3),
        "asha_wall_time_fraction": wall_fraction,
        "same_best": asha["best_config"] == fifo["best_config"],
        "asha_wall_seconds": asha["seconds"],
        "fifo_wall_seconds": fifo["seconds"],
        "wall_ratio": wall_fraction,
        "startup_seconds_per_trial": round(outside / (asha["trials"] + fifo["trials"]), 2),
        # Where ASHA's wall time goes: its epochs' share of FIFO's epoch seconds, as run and
        # as FIFO's same epochs cost (a difference: ASHA's epochs ran slower, not dearer).
        "asha_epoch_seconds_fraction": round(asha["epoch_seconds"] / fifo["epoch_seconds"], 3),
        "asha_epochs_at_fifo_cost": round(
            epochs_at_fifo_cost({"by_config": by_config["asha"]}, {"by_config": by_config["fifo"]}),
            3,
        ),
    }
    if "parallel" in figures:
        speedup = figures["serial"]["seconds"] / figures["parallel"]["seconds"]
        comparison["concurrency_speedup"] = round(speedup, 3)
    return comparison


def main() -> None:
    args = parse_args()
    figures: dict = {"space": args.space, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="study-benchmark-") as folder:
        work = Path(folder)
        if args.space == "race":
            keys = searched_keys(
                draw_space(find_space("wide.yaml"), work / "keys.yaml", RACE_CONFIGS, 0)
            )
            figures.update(race_figures(work, keys, args.race_epochs, args.race_once))
            print(json.dumps(figures))
            return
        extra: tuple[str, ...] = ()
        concurrency_epochs = args.concurrency_epochs
        if args.space in GENERATED:
            source = draw_space(
                find_space(GENERATED[args.space]), work / "drawn.yaml", args.configs, args.seed
            )
            figures.update(configs=args.configs, seed=args.seed)
            extra = ("--max-concurrent", str(SLOTS))
            concurrency_epochs = 0
        else:
            source = find_space(args.space)
            figures["space"] = source.name
        keys = searched_keys(source)
        warm_caches(source)
        runs = scheduler_runs(source, work, extra, concurrency_epochs)
        by_config = run_studies(runs, work, keys, figures)
    figures.update(scheduler_comparison(figures, by_config))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
