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
import logging
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not this folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from mer_models.data.arguments import add_data_arguments, dataset_paths  # noqa: E402
from mer_models.data.check import CheckReport, require_valid_dataset  # noqa: E402
from mer_models.data.splits import DataError, DatasetPaths  # noqa: E402
from study.claim import (  # noqa: E402
    BadName,
    StudyClaimed,
    check_name,
    claim_new_study,
    claim_study,
    new_study_id,
)
from study.places import PlaceError, Storage, is_cloud  # noqa: E402
from study.signals import STOP  # noqa: E402
from study_folder.budgets import BUDGETS  # noqa: E402
from study_folder.records import (  # noqa: E402
    CONFIRM_FILE,
    STUDY_FILE,
    RecordError,
    StudyRecord,
    read_study,
    require_resumable,
    write_study,
)
from study_folder.search_space import (  # noqa: E402
    SearchSpace,
    SpaceError,
    find_space,
    load_space,
    space_from_text,
)
from tracking.store import TrackingStore  # noqa: E402
from tracking.ui import comparison_url  # noqa: E402

log = logging.getLogger("study")
DEFAULT_SPACE = "table1.yaml"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python study/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--space",
        help="search space: a path, or a file in search_spaces/ (default table1.yaml; "
        "a resume continues with the study's own)",
    )
    parser.add_argument("--name", help="study name (default: the space's name, numbered if taken)")
    parser.add_argument(
        "--storage",
        help="results and checkpoints: a folder shared by all nodes (default ./ray_results); "
        "or a cloud URI (s3://, gs://) for Ray's checkpoints, the results then in ./ray_results",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study with the space, budget, data and MLflow store "
        "it began with",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run trials that failed for good again, from their last checkpoint",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep a finished trial's last checkpoints (default: deleted once its results "
        "are recorded)",
    )
    parser.add_argument(
        "--scheduler",
        choices=("race", "fifo", "asha"),
        help="override the space's scheduler: race drops rows significantly worse than the "
        "best at synchronous rungs (the same answer whatever the timing), fifo trains every "
        "trial to its own stop (equal budgets), asha stops weak trials early as they come "
        "(to search; its decisions depend on timing)",
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
        "--mlflow-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long the study's end waits for an unreachable or slow MLflow store before "
        "it stops with the resume that records what the store lacks (default 120)",
    )
    parser.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        help="training protocol (default: the space's, usually quick)",
    )
    resources = parser.add_argument_group("resources")
    resources.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="CPU cores a trial holds (default 1; its training threads, and with a GPU its "
        "loader workers, follow)",
    )
    resources.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="fractions let several trials share one GPU",
    )
    resources.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="run every trial's training step eagerly on its GPU, not as one CUDA graph "
        "(cuda_graphs: false); a --resume may add it, after a capture failed",
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
    """The explicit name; else the space's, numbered past the studies that exist."""
    if args.name:
        return args.name
    taken = sorted(
        (p.name for p in storage_dir.glob(f"{space_name}*") if p.is_dir()),
        key=lambda name: (len(name), name),
    )
    taken = [n for n in taken if n == space_name or n.removeprefix(f"{space_name}-").isdigit()]
    if args.resume:
        return taken[-1] if taken else space_name
    number = len(taken) + 1
    while f"{space_name}-{number}" in taken:
        number += 1
    return space_name if not taken else f"{space_name}-{number}"


def space_study_name(space: str) -> str:
    """A new study's name before numbering: its space file's stem, but `<study>-confirm` for
    the confirm.yaml a study wrote into its own folder (else every confirmation of every
    study would be `confirm`, `confirm-2`, ...)."""
    path = Path(space)
    if path.name == CONFIRM_FILE and (path.parent / STUDY_FILE).is_file():
        return f"{path.resolve().parent.name}-confirm"
    return path.stem


def resume_conflicts(
    args: argparse.Namespace, parser: argparse.ArgumentParser, recorded: StudyRecord
) -> list[str]:
    """The flags that contradict what a study began with (its study.json)."""
    conflicts = []
    if args.space is not None:
        path = find_space(args.space)
        if path.read_text(encoding="utf-8") != recorded.space_yaml:
            changed = " (the file changed since)" if str(path) == recorded.space else ""
            conflicts.append(f"--space {args.space}: it began with {recorded.space}{changed}")
    if args.budget is not None and args.budget != recorded.budget:
        conflicts.append(f"--budget {args.budget}: it began with budget {recorded.budget}")
    if args.scheduler is not None and args.scheduler != recorded.scheduler:
        conflicts.append(f"--scheduler {args.scheduler}: it began with {recorded.scheduler}")
    if args.metadata is not None:
        began = DatasetPaths(**recorded.data).to_dict()
        if dataset_paths(args, parser).to_dict() != began:
            conflicts.append(
                "--metadata/--melspecs/--store/--split/--subset: it began with "
                + ", ".join(f"{k} {v}" for k, v in began.items() if v is not None)
            )
    if args.tracking_uri is not None and args.tracking_uri != recorded.tracking_uri:
        conflicts.append(
            f"--tracking-uri {args.tracking_uri}: it began with {recorded.tracking_uri}"
        )
    if args.storage and is_cloud(args.storage) and args.storage != recorded.ray_storage:
        conflicts.append(f"--storage {args.storage}: it began with {recorded.ray_storage}")
    return conflicts


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
    for name in ("study", "analysis", "mer_models.data"):  # the data's: its progress
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        return
    # Ray Tune's own progress output (its configuration box, TensorBoard hint); ours is printed.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at: URL" for every run a server closes; the study prints
    # where its runs are once, at the end.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


# MLflow's HTTP client waits 120 s per request and retries 7 times by default: a frozen
# server would hold the driver for many minutes. The driver's writes are retried by its own
# queue instead (tracking.study_tracker), within the study's end timeout.
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
STOP_WAIT_S = 4.0  # what a stopped study waits for MLflow to mark its runs KILLED


def main(argv: list[str] | None = None) -> int:
    STOP.install()  # first: whatever this process inherited (SIGINT ignored under `&`, nohup)
    try:
        status = run(argv)
    except KeyboardInterrupt:  # before the study was claimed (run_tracked handles it after)
        print(
            f"\n{STOP.name or 'interrupted'}: stopped before the study began; nothing was started",
            file=sys.stderr,
        )
        status = 130
    if STOP.received is not None or _ray_started():
        # Everything is said and recorded (the study's files, its MLflow runs through the
        # tracker's drained queue). Ray's exit handler and the interpreter's teardown would
        # take seconds more (about 3.5 s on a 2-core VM); the cluster's reaper ends a local
        # cluster once the driver is gone, and a remote one sees its driver leave.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _ray_started() -> bool:
    """Whether this process connected to Ray (a study that ran), without importing it."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


class Refusal(Exception):
    """A study that cannot start as asked: `text` says why (printed as is), `code` is the
    exit status. Raised before anything is written."""

    def __init__(self, text: str, code: int = 2) -> None:
        super().__init__(text)
        self.text, self.code = text, code


def run(argv: list[str] | None = None) -> int:
    args, parser = parse_args(argv)
    configure_console(args.verbose)
    for key, value in MLFLOW_HTTP.items():
        os.environ.setdefault(key, value)
    working = Path.cwd()
    try:
        # Everything that can be checked is checked before anything is written.
        recorded, space, study_dir = study_to_run(args, parser, working)
        data = study_data(args, parser, recorded, space)
        if args.address:
            use_cluster_token()
        options = study_options(args, working, recorded, space, study_dir, data)
        planned, data_report = check_before_start(options)
        study_id = claim(options, recorded)
    except Refusal as refusal:
        print(refusal.text, file=sys.stderr)
        return refusal.code
    except StudyClaimed as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(data_report.summary())
    return run_tracked(options, data_report, working, study_id, planned)


_claims: list = []  # the claimed study's lock, held until the driver exits


def claim(options, recorded: StudyRecord | None) -> str:
    """Claim the study's folder (a new one appears with its study.json); its id."""
    from study.driver import study_record

    if recorded is not None:
        _claims.append(claim_study(options.study_dir))
        return recorded.study_id
    study_id = new_study_id()
    record = study_record(options, study_id)
    _claims.append(claim_new_study(options.study_dir, lambda folder: write_study(folder, record)))
    return study_id


def study_to_run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, working: Path
) -> tuple[StudyRecord | None, SearchSpace, Path]:
    """The study the flags name: its record (on --resume), its space and its folder."""
    storage = Storage.from_flag(args.storage, working)
    try:
        if args.name is not None:
            check_name(args.name)
        name = study_name(args, storage.results, space_study_name(args.space or DEFAULT_SPACE))
        check_name(name)
    except BadName as error:
        raise Refusal(f"error: {error}") from None
    study_dir = storage.results / name
    if args.resume and not study_dir.is_dir():
        raise Refusal(f"error: --resume: no study named {name} in {storage.results}")
    if not args.resume and study_dir.exists():
        raise Refusal(
            f"error: a study named {name} exists in {storage.results}; continue it with "
            "--resume, or choose another --name"
        )
    try:
        recorded = read_study(study_dir) if args.resume else None
        if args.resume and recorded is None:
            raise Refusal(
                f"error: --resume: {study_dir} has no {STUDY_FILE}: it was claimed by an older "
                "version of this tool, which was stopped before writing the study's record, "
                "so what it was to run is unknown. Remove the folder and start the study again"
            )
        if recorded is None:
            space = load_space(args.space or DEFAULT_SPACE).with_scheduler(args.scheduler)
        else:
            require_resumable(study_dir, recorded)
            space = space_from_text(recorded.space_yaml, Path(recorded.space))
            space = space.with_scheduler(recorded.scheduler)
            conflicts = resume_conflicts(args, parser, recorded)
            if conflicts:
                raise SpaceError(
                    f"--resume continues study {name} as it began ({study_dir / 'study.json'}); "
                    "leave out, or start a new study (another --name) for: " + "; ".join(conflicts)
                )
    except (SpaceError, DataError, RecordError) as error:
        raise Refusal(f"error: {error}") from None
    return recorded, space, study_dir


def study_data(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    recorded: StudyRecord | None,
    space: SearchSpace,
) -> DatasetPaths:
    """The dataset the study trains on: a resume's as it began; else the flags', on the
    space's first split when the space names its `splits`."""
    if recorded is not None:
        return DatasetPaths(**recorded.data)
    try:
        data = dataset_paths(args, parser)
    except DataError as error:
        raise Refusal(f"error: {error}", 1) from None
    if not space.splits:
        return data
    if args.split is not None:
        raise Refusal(
            f"error: --split {args.split}: the space {space.file} runs every trial on the "
            f"splits {', '.join(map(str, space.splits))} (its splits key); leave out --split"
        )
    return data.on_split(space.splits[0])  # the study's first split


def study_options(
    args: argparse.Namespace,
    working: Path,
    recorded: StudyRecord | None,
    space: SearchSpace,
    study_dir: Path,
    data: DatasetPaths,
):
    """The study's options, once: a resume takes what it began with from its record.

    Imports Ray (about two seconds), so that a bad space above fails fast without it."""
    # Checkpoints every epoch are the point here, not a bottleneck to warn about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from study.driver import StudyOptions

    configure_console(args.verbose)  # Ray and MLflow set their loggers' levels on import
    storage = Storage.from_flag(args.storage, working)
    return StudyOptions(
        space=space,
        name=study_dir.name,
        storage=storage.results,
        ray_storage=recorded.ray_storage if recorded else storage.cloud,
        data=data,
        tracking_uri=(
            recorded.tracking_uri
            if recorded
            else args.tracking_uri or TrackingStore.default(working).uri
        ),
        budget=recorded.budget if recorded else args.budget or space.budget,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        address=args.address,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
        retry_failed=args.retry_failed,
        cuda_graphs=not args.no_cuda_graphs,
        mlflow_timeout_s=args.mlflow_timeout,
    )


def check_before_start(options) -> tuple[list[dict] | None, CheckReport]:
    """The study's plan (every trial's config, the reuse, a resume's records), the data and
    the places written to; (the planned trials, the data check's report). A problem is a
    Refusal naming it."""
    from study.driver import check_plan

    try:
        planned = check_plan(options)
    except ValueError as error:
        raise Refusal(f"error: {error}") from None
    report = None  # the study's own split's: what its MLflow dataset describes
    for split in options.splits:  # every split a trial trains on, before any starts
        log.info("checking the dataset (%s, split-%d) ...", options.data.metadata, split)
        try:
            checked = require_valid_dataset(options.data.on_split(split))
        except DataError as error:
            raise Refusal(f"error: {error}", 1) from None
        report = report or checked
    try:
        Storage(options.storage).check()
        TrackingStore(options.tracking_uri).check()
    except PlaceError as error:
        raise Refusal(f"error: {error}") from None
    return planned, report


def run_tracked(
    options, data_report: CheckReport, working: Path, study_id: str, planned: list[dict] | None
) -> int:
    """The study with its MLflow runs, from the parent run's start to the last line."""
    from study.driver import ClusterError, StorageFault, StoreFailed, run_study, study_params
    from tracking.study_tracker import StudyTracker, study_dataset

    params = study_params(options)
    tracker = StudyTracker(
        options.tracking_uri,
        options.name,
        artifact_root=TrackingStore(options.tracking_uri).artifact_root(working),
        description=options.space.description,
        dataset=study_dataset(options.data, data_report.tracks, data_report.tags),
        searched=options.searched,
        study_id=study_id,
        drain_timeout_s=options.mlflow_timeout_s,
        metric=options.space.metric,
    )
    try:
        try:
            TrackingStore(options.tracking_uri).create_whole()
            tracker.start(params, per_row=options.space.draws)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - a store that cannot be opened or written
            return store_failed(options, tracker, error)
        print(
            f"study {options.name}: space {options.space.file}, budget {options.budget}, "
            f"{'resuming' if options.resume else 'starting'} in {options.study_dir}"
        )
        trials_run = run_study(options, tracker, planned)
        return finish(options, tracker, trials_started=trials_run)
    except StorageFault as error:
        return finish(options, tracker, trials_started=0, fault=str(error))
    except ClusterError as error:
        _close_runs(tracker, "FAILED")
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return stopped(options, tracker)
    except StoreFailed as failure:
        return store_failed(options, tracker, failure.error)
    except BaseException:
        _close_runs(tracker, "FAILED")
        raise


def use_cluster_token() -> None:
    """Join with this machine's Ray token when it has one; before Ray is imported.

    `ray start --head` with a token turns on token authentication, and a driver
    joining with an address does not turn it on by itself (Ray reads the mode
    once, on import): with a token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token), the driver uses it.
    """
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (
        os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _resume_hint(options) -> str:
    return f"continue with: python study/run.py --name {_quoted(options.name)} --resume" + (
        f" --storage {options.ray_storage or options.storage}"
        if options.storage != Path.cwd() / "ray_results" or options.ray_storage
        else ""
    )


def _quoted(name: str) -> str:
    return f"'{name}'" if " " in name else name


def _close_runs(tracker, status: str) -> bool:
    """No MLflow run stays RUNNING after the driver ends; a resume reopens them. False
    (with a warning) when the store did not take it in time."""
    try:
        return tracker.close_open_runs(status)
    except Exception as error:  # noqa: BLE001 - the original failure matters more
        print(f"warning: MLflow runs could not be closed: {_first_line(error)}", file=sys.stderr)
        return False


def _finish_study(tracker, status: str) -> bool:
    try:
        return tracker.finish_study(status)
    except Exception as error:  # noqa: BLE001 - the study's own stop matters more
        print(
            f"warning: the study's MLflow run could not be closed: {_first_line(error)}",
            file=sys.stderr,
        )
        return False


def _first_line(error: BaseException) -> str:
    """An error in a few words: its innermost cause (MLflow wraps SQLAlchemy's and
    SQLite's, whose first lines say little)."""
    from tracking.writer import reason_of

    return reason_of(error)


def show_table(options, tracker) -> tuple:
    """The summary table so far and where everything is; (the study or None, its trials)."""
    from study.summary import format_table
    from study_folder.records import load_study

    try:
        study = load_study(options.study_dir, require_results=False)
        trials, table = study.trials, format_table(study)
    except ValueError:  # stopped before any trial was recorded
        study, trials, table = None, (), "no trial has finished yet"
    print()
    print(table)
    print()
    print(f"results: {options.study_dir} ({_size(options.study_dir)})")
    print(f"MLflow:  {tracker.tracking_uri} (experiment {options.name})")
    store = TrackingStore(tracker.tracking_uri)
    print(store.ui_line())
    if tracker.experiment_id is not None:
        print(f"open:    {comparison_url(store.ui_address, tracker.experiment_id)}")
    return study, trials, table


def _unfinished(study, trials, started: int) -> int:
    """Trials the study plans (else `started`) that have not ended."""
    planned = study.planned if study is not None and study.planned else started
    return planned - sum(trial.end_state is not None for trial in trials)


def stopped(options, tracker) -> int:
    """A stop signal (SIGINT, SIGTERM) in any phase: the table so far, the runs KILLED, the
    resume command; within seconds, whatever the MLflow store does."""
    tracker.end_within(STOP_WAIT_S)
    tracker.drop_end_writes()
    study, trials, _ = show_table(options, tracker)
    unfinished = _unfinished(study, trials, len(trials))
    closed = _close_runs(tracker, "KILLED") and _finish_study(tracker, "KILLED")
    if unfinished > 0:
        print(f"{unfinished} trial(s) unfinished")
    if not closed:
        print(
            f"warning: MLflow ({tracker.tracking_uri}) did not take the study's stop within "
            f"{STOP_WAIT_S:.0f} s; its runs show RUNNING until the study is resumed",
            file=sys.stderr,
        )
    print(f"\nstudy {options.name} stopped ({STOP.name or 'interrupted'}); {_resume_hint(options)}")
    return 130


def store_failed(options, tracker, error: BaseException) -> int:
    """The MLflow store failed for good (deleted, damaged, refusing the writes): the trials'
    records on disk are whole; one paragraph and the resume that logs what it lacks."""
    from tracking.study_tracker import store_failure_reason

    tracker.end_within(STOP_WAIT_S)
    show_table(options, tracker)
    print(
        f"error: the study stopped because its MLflow store {tracker.tracking_uri} failed: "
        f"{store_failure_reason(tracker.tracking_uri, error)}. The study's records in "
        f"{options.study_dir} are whole and every unfinished trial keeps its last "
        "checkpoint; once the store is back (restored, or reachable again), "
        f"{_resume_hint(options).removeprefix('continue with: ')} continues the study and "
        "logs what MLflow lacks",
        file=sys.stderr,
    )
    if TrackingStore(tracker.tracking_uri).missing_file() is None:  # else MLflow makes it anew
        _close_runs(tracker, "KILLED")
    return 1


def finish(options, tracker, trials_started: int, fault: str | None = None) -> int:
    """Summary, fusion, report, and their record in MLflow; then where everything is. With
    `fault` (a full or unwritable disk stopped the study), the summary so far and how to
    continue. The parent run ends FINISHED only once everything is recorded."""
    study, trials, table = show_table(options, tracker)
    unfinished = _unfinished(study, trials, trials_started)
    if fault is not None:
        return disk_failed(options, tracker, fault)
    if unfinished > 0 or study is None:
        print(f"{max(unfinished, 0)} trial(s) unfinished; {_resume_hint(options)}")
        _close_runs(tracker, "KILLED")
        _finish_study(tracker, "KILLED")
        return 1
    if not any(trial.has_predictions for trial in trials):
        print(
            "error: no trial finished with results, so there is no report or fusion",
            file=sys.stderr,
        )
        _finish_study(tracker, "FAILED")
        return 1
    from analysis.conclude import conclude_study
    from study.trainable import storage_fault

    try:
        conclusion = conclude_study(options.study_dir, track=False)
    except OSError as error:
        if storage_fault(error):
            return disk_failed(options, tracker, f"the study's end: {error}")
        return end_failed(options, tracker, error)
    except ValueError as error:
        return end_failed(options, tracker, error)
    for line in conclusion.lines:
        print(line)
    return record_end(options, tracker, table, conclusion)


def disk_failed(options, tracker, fault: str) -> int:
    print(
        f"error: the study stopped because its storage failed: {fault}. Its records are "
        "whole and every unfinished trial keeps its last complete checkpoint; once there "
        "is room (or the place is writable again), "
        f"{_resume_hint(options).removeprefix('continue with: ')} continues it",
        file=sys.stderr,
    )
    _close_runs(tracker, "KILLED")
    _finish_study(tracker, "KILLED")
    return 1


def end_failed(options, tracker, error: Exception) -> int:
    """The fusion or the report failed on the trials' results (a damaged file, a bug)."""
    if not isinstance(error, ValueError | OSError):
        traceback.print_exc()
    print(
        f"error: the study's trials finished but its report or fusion failed: {error}\n"
        f"The trials' results are intact in {options.study_dir}; once the cause is fixed, "
        f"{_resume_hint(options).removeprefix('continue with: ')} finishes the study",
        file=sys.stderr,
    )
    _finish_study(tracker, "FAILED")
    return 1


def record_end(options, tracker, table: str, conclusion) -> int:
    """The fusion run, the report, the result and the best model into MLflow, through the
    tracker's queue, then the parent run FINISHED: within the end timeout, else one
    paragraph and the resume that logs what the store lacks."""
    from study.result import queue_end, result_lines
    from study_folder.records import load_study

    study = load_study(options.study_dir)
    record = None
    try:
        record = queue_end(
            study,
            tracker,
            conclusion,
            (options.space.file.name, options.space.text),
            table,
            options.device,
        )
        recorded = tracker.finish_study("FINISHED")
        failure = None
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - a write that failed for good
        recorded, failure = False, error
    if recorded and record is not None and record.uri is not None:
        print("\n".join(result_lines(study, record, tracker.tracking_uri)))
        return 0
    reason = (
        f"it refused a write: {_first_line(failure)}"
        if failure is not None
        else f"it did not take them within {options.mlflow_timeout_s:.0f} s (--mlflow-timeout)"
    )
    print(
        f"error: the study's result, fusion run and best model were not all recorded in "
        f"MLflow ({tracker.tracking_uri}): {reason}. The results on disk are complete; once "
        f"the store is reachable, {_resume_hint(options).removeprefix('continue with: ')} "
        "records what it lacks",
        file=sys.stderr,
    )
    return 1


def _size(folder: Path) -> str:
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return f"{size / 1e6:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
