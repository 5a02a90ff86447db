"""Run a study: a search space of training configurations as parallel Ray Tune trials.

    python study/run.py --space table1.yaml

Without data flags it trains on the embedded synthetic dataset (generated
once, then cached). Results go to STORAGE/NAME (default ./ray_results/table1),
every trial is an MLflow run nested under the study's run (default store:
./mlflow.db), and the study ends with a Table 1 style summary, a report, the
fusion of its two best trials, and its best model registered in MLflow as
NAME-best. `--resume` continues an interrupted study.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not this folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from mer_models.data.arguments import add_data_arguments, dataset_paths  # noqa: E402
from mer_models.data.check import check_dataset  # noqa: E402
from study.budgets import BUDGETS  # noqa: E402
from study.search_space import SearchSpace, SpaceError, load_space  # noqa: E402

log = logging.getLogger("study")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python study/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--space",
        default="table1.yaml",
        help="search space: a path, or a file in search_spaces/ (default table1.yaml)",
    )
    parser.add_argument("--name", help="study name (default: the space's name, numbered if taken)")
    parser.add_argument(
        "--storage",
        help="results and checkpoints: a folder shared by all nodes (default ./ray_results); "
        "or a cloud URI (s3://, gs://) for Ray's checkpoints, the results then in ./ray_results",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study")
    parser.add_argument(
        "--scheduler",
        choices=("fifo", "asha"),
        help="override the space's scheduler: fifo trains every trial to its own stop (equal "
        "budgets, to reproduce a table), asha stops weak trials early (to search)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's, MLflow's and the libraries' own messages",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)",
    )
    parser.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        help="training protocol (default: the space's, usually quick)",
    )
    resources = parser.add_argument_group("resources")
    resources.add_argument("--cpus-per-trial", type=float, default=1.0)
    resources.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="fractions let several trials share one GPU",
    )
    resources.add_argument("--max-concurrent", type=int, help="most trials at once")
    resources.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="retries of a crashed trial from its last checkpoint (default 2)",
    )
    resources.add_argument("--address", help="join a running Ray cluster ('auto' or HOST:PORT)")
    add_data_arguments(parser)
    return parser.parse_args(argv), parser


def study_name(args: argparse.Namespace, storage_dir: Path, space_name: str) -> str:
    """The explicit name; else the space's, numbered past studies that exist."""
    if args.name:
        return args.name
    taken = sorted(
        (p.name for p in storage_dir.glob(f"{space_name}*") if (p / "study.json").is_file()),
        key=lambda name: (len(name), name),
    )
    taken = [n for n in taken if n == space_name or n.removeprefix(f"{space_name}-").isdigit()]
    if args.resume:
        return taken[-1] if taken else space_name
    return space_name if not taken else f"{space_name}-{len(taken) + 1}"


# Loggers whose INFO lines (database creation, migrations, cluster notices) are not ours.
LIBRARY_LOGGERS = ("mlflow", "alembic", "ray", "filelock", "urllib3")


def configure_console(verbose: bool) -> None:
    """Our progress table and messages only; with ``verbose``, the libraries' own too.

    Called before Ray and MLflow are imported (Ray's progress box and its
    TensorBoard hint are switched off by environment), and again after, since
    both set their loggers' levels on import.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stdout
    )
    for name in ("study", "analysis"):
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        return
    # Ray Tune's own progress output (its configuration box, TensorBoard hint); ours is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def with_scheduler(space: SearchSpace, scheduler: str | None) -> SearchSpace:
    """The space with its scheduler type replaced by ``scheduler`` (--scheduler), if given."""
    if scheduler is None or scheduler == space.scheduler.type:
        return space
    return dataclasses.replace(
        space, scheduler=dataclasses.replace(space.scheduler, type=scheduler)
    )


def main(argv: list[str] | None = None) -> int:
    args, parser = parse_args(argv)
    configure_console(args.verbose)
    try:
        space = load_space(args.space)
    except SpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    space = with_scheduler(space, args.scheduler)
    working = Path.cwd()
    storage = args.storage or str(working / "ray_results")
    local_storage = "://" not in storage or storage.startswith("file://")
    # A cloud URI holds Ray's checkpoints and experiment state; the results
    # folder (summary, predictions, report) then stays on the driver.
    storage_dir = (
        Path(storage.removeprefix("file://")).expanduser().resolve()
        if local_storage
        else working / "ray_results"
    )
    name = study_name(args, storage_dir, space.name)
    if (storage_dir / name / "study.json").is_file() and not args.resume:
        print(
            f"error: a study named {name} exists in {storage_dir}; continue it with --resume, "
            "or choose another --name",
            file=sys.stderr,
        )
        return 2
    if args.resume and not (storage_dir / name / "study.json").is_file():
        print(f"error: --resume: no study named {name} in {storage_dir}", file=sys.stderr)
        return 2

    # Imported here so that a bad space fails fast, without loading Ray.
    # Checkpoints every epoch are the point here, not a bottleneck to warn about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from mer_models.data.splits import DataError
    from study.driver import StudyOptions, check_trial_configs, run_study, study_params
    from study.tracking import StudyTracker, study_dataset
    from tracking.runs import default_tracking_uri

    configure_console(args.verbose)  # Ray and MLflow set their loggers' levels on import

    options = StudyOptions(
        space=space,
        name=name,
        storage=storage_dir,
        ray_storage=None if local_storage else storage,
        data=None,  # type: ignore[arg-type]
        tracking_uri=args.tracking_uri or default_tracking_uri(working),
        budget=args.budget or space.budget,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        address=args.address,
        resume=args.resume,
    )
    try:
        check_trial_configs(options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        data = dataset_paths(args, parser)
        report = check_dataset(data)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not report.ok:
        print(report.describe_problems(), file=sys.stderr)
        return 1
    print(report.summary())
    options = StudyOptions(**{**options.__dict__, "data": data})

    tracker = StudyTracker(
        options.tracking_uri,
        name,
        artifact_root=working / "mlruns",
        description=space.description,
        dataset=study_dataset(data, report.tracks, report.tags),
    )
    tracker.start(study_params(options))
    print(
        f"study {name}: space {space.file}, budget {options.budget}, "
        f"{'resuming' if args.resume else 'starting'} in {options.study_dir}"
    )
    results = run_study(options, tracker)
    return finish(options, tracker, trials_started=len(results))


def finish(options, tracker, trials_started: int) -> int:
    """Summary, report and fusion; then where everything is."""
    from mer_models.study_results import load_study
    from study.summary import format_table

    study = load_study(options.study_dir, require_results=False)
    unfinished = trials_started - sum(trial.end_state is not None for trial in study.trials)
    table = format_table(study)
    print()
    print(table)
    print()
    print(f"results: {options.study_dir}")
    print(f"MLflow:  {tracker.tracking_uri} (experiment {options.name})")
    print(f"open the MLflow UI with: mlflow ui --backend-store-uri {tracker.tracking_uri}")
    if unfinished > 0:
        print(
            f"{unfinished} trial(s) unfinished; continue with: python study/run.py --space "
            f"{options.space.file} --name {options.name} --resume"
        )
        tracker.finish_study("KILLED")
        return 1
    if not any(trial.has_predictions for trial in study.trials):
        print(
            "error: no trial finished with results, so there is no report or fusion",
            file=sys.stderr,
        )
        tracker.finish_study("FAILED")
        return 1
    from analysis.conclude import conclude_study

    status, conclusion = 0, None
    try:
        conclusion = conclude_study(options.study_dir)
        for line in conclusion.lines:
            print(line)
    except Exception as error:  # the trials are on disk already: say what failed, keep them
        if not isinstance(error, ValueError | OSError):
            traceback.print_exc()
        print(
            f"error: the study finished but its report or fusion failed: {error}\n"
            f"The trials' results are intact in {options.study_dir}; once the cause is fixed: "
            f"python -m analysis fuse {options.study_dir} --top-k 2, then "
            f"python -m analysis report {options.study_dir}",
            file=sys.stderr,
        )
        status = 1
    if conclusion is not None:
        status = report_best(options, tracker, table, conclusion.fusion_dir)
    tracker.finish_study()
    return status


def report_best(options, tracker, table: str, fusion_dir) -> int:
    """The result and the best model into MLflow, and where they are; 1 if MLflow failed."""
    from mlflow.exceptions import MlflowException

    from mer_models.study_results import load_study
    from study.result import record_result

    try:
        lines = record_result(
            load_study(options.study_dir), tracker, options.space.file, table, fusion_dir
        )
    except (MlflowException, OSError) as error:
        print(
            f"error: the study's result and best model were not recorded in MLflow "
            f"({tracker.tracking_uri}): {error}; the results on disk are complete",
            file=sys.stderr,
        )
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
