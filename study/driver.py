"""The study driver: a validated search space to a Ray Tune run, and its results.

Results live in `STORAGE/NAME/` (Ray Tune's experiment folder, so any node
of a cluster with shared storage can restore any trial); the driver adds
`study.json` and `trials/` there, which the analysis package reads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths
from mer_models.study_results import write_groundtruth
from study.budgets import BUDGETS
from study.checkpoints import FOLDER as CHECKPOINTS
from study.recorder import StudyRecorder
from study.search_space import MODE, SearchSpace
from study.tracking import StudyTracker
from study.trainable import ERROR_KEY, ROW_KEY, run_trial
from tracking.names import searched_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOptions:
    space: SearchSpace
    name: str
    storage: Path  # the study's results folder lives in storage / name
    data: DatasetPaths
    tracking_uri: str
    budget: str
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    address: str | None = None
    resume: bool = False
    progress_seconds: float = 20.0
    # Where Ray Tune keeps trial checkpoints and its experiment state: the
    # storage folder, or a cloud URI (s3://, gs://) when the results folder
    # stays on the driver. None: `storage`.
    ray_storage: str | None = None
    keep_checkpoints: bool = False  # a finished trial's checkpoints stay (else deleted)
    retry_failed: bool = False  # a resume runs failed trials again from their checkpoints

    @property
    def ray_storage_path(self) -> str:
        return self.ray_storage or str(self.storage)

    @property
    def ray_experiment(self) -> str:
        return f"{self.ray_storage_path.rstrip('/')}/{self.name}"

    @property
    def study_dir(self) -> Path:
        return self.storage / self.name

    @property
    def searched(self) -> tuple[str, ...]:
        """The fields the space varies (they name the trials' runs and the summary's columns)."""
        return searched_fields(self.space.parameters, self.space.configs or [])

    @property
    def checkpoints(self) -> str:
        """The root of the trials' own checkpoint stores (see study.checkpoints)."""
        return f"{self.ray_experiment}/{CHECKPOINTS}"


def fixed_values(options: StudyOptions) -> dict[str, Any]:
    """Budget and resource-derived values, under the space's own parameters."""
    values: dict[str, Any] = dict(BUDGETS[options.budget])
    values["threads"] = max(int(options.cpus_per_trial), 1)
    # On CPU the trial's cores train; loading in the main process costs ~5%
    # there. With a GPU, spare cores feed it.
    values["workers"] = max(int(options.cpus_per_trial) - 1, 1) if options.gpus_per_trial else 0
    return values


def param_space(options: StudyOptions) -> dict[str, Any]:
    """Ray Tune's param space: fixed values under the search space's own."""
    return fixed_values(options) | space_values(options.space)


def space_values(space: SearchSpace) -> dict[str, Any]:
    """A search space in Ray Tune's terms: its values, distributions and `configs` rows."""
    values = {key: _tune_value(spec) for key, spec in space.parameters.items()}
    if space.configs:
        values[ROW_KEY] = tune.grid_search(space.configs)
    return values


def _tune_value(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    ((kind, values),) = spec.items()
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    if kind == "uniform":
        return tune.uniform(*values)
    if kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(values[0], values[1] + 1)  # both bounds included


def max_epochs(options: StudyOptions) -> int:
    space = options.space
    fixed = space.parameters.get("max_epochs")
    if isinstance(fixed, int):
        return fixed
    return space.scheduler.max_epochs or int(BUDGETS[options.budget]["max_epochs"])


def make_scheduler(options: StudyOptions):
    spec = options.space.scheduler
    if spec.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=spec.max_epochs or max_epochs(options),
        grace_period=spec.grace_period,
        reduction_factor=spec.reduction_factor,
    )


def make_searcher(options: StudyOptions):
    if options.space.searcher != "optuna":
        return None  # grid and random: Ray Tune's variant generator
    searcher = OptunaSearch(seed=int(options.space.parameters.get("seed", 0) or 0))
    return ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent or 2)


def run_study(options: StudyOptions, tracker: StudyTracker):
    """Run (or resume) the study in its claimed folder; returns Ray Tune's ResultGrid."""
    write_study_file(options, tracker)
    write_groundtruth(options.study_dir, options.data)
    if not ray.is_initialized():
        if options.address:
            join_cluster(options.address)
            nodes = sum(node.get("Alive", False) for node in ray.nodes())
            if nodes > 1 and options.storage == Path.cwd() / "ray_results":
                log.warning(
                    "warning: the cluster has %d nodes but --storage is the default %s, a folder "
                    "on this machine only: a trial moved to another node cannot find its "
                    "checkpoints. Give --storage a folder every node mounts, or a cloud URI "
                    "(README: On a multi-GPU Ray cluster).",
                    nodes,
                    options.storage,
                )
        else:
            ray.init(
                address="local",  # its own cluster, never one a `ray start` left on this node
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
    # After ray.init, which installs its own SIGTERM handler (an abrupt exit):
    # SIGTERM (kill, timeout, batch schedulers) stops the study as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    logging.getLogger("ray.tune.tune").addFilter(_NoRestoreHint())
    recorded = recorded_trials(options.study_dir)
    retrying = frozenset(t for t, state in recorded.items() if state == "error")
    retrying = retrying if options.retry_failed else frozenset()
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            data=options.data.to_dict(),
            checkpoints=options.checkpoints,
            recorded={
                trial: last_result(options.study_dir / "trials" / trial, options.space.metric)
                for trial in recorded
                if trial not in retrying
            },
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    recorder = StudyRecorder(
        options.study_dir,
        tracker,
        options.checkpoints,
        options.progress_seconds,
        searched=options.searched,
        keep_checkpoints=options.keep_checkpoints,
        retrying=retrying,
    )
    for trial_id in recorded:
        recorder.close_recorded(options.study_dir / "trials" / trial_id)
    failure_config = tune.FailureConfig(max_failures=options.max_failures)
    if options.resume and tune.Tuner.can_restore(options.ray_experiment):
        tuner = tune.Tuner.restore(
            options.ray_experiment, trainable, resume_errored=options.retry_failed
        )
        # Ray restores the configs pickled when the study began, with the recorder and
        # the run options of that first run; this run's recorder (its retries, options,
        # tracker), --max-failures and --max-concurrent replace them.
        restored = tuner._local_tuner
        restored.get_run_config().callbacks = [recorder]
        restored.get_run_config().failure_config = failure_config
        restored._tune_config.max_concurrent_trials = options.max_concurrent
        return tuner.fit()
    # A new study, or one stopped before Ray saved its first state: its trials start afresh.
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(options),
        tune_config=tune.TuneConfig(
            metric=options.space.metric,
            mode=MODE,
            scheduler=make_scheduler(options),
            search_alg=make_searcher(options),
            num_samples=options.space.num_samples,
            max_concurrent_trials=options.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=options.name,
            storage_path=options.ray_storage_path,
            callbacks=[recorder],
            failure_config=failure_config,
            verbose=0,
        ),
    )
    return tuner.fit()


class ClusterError(RuntimeError):
    """The Ray cluster named by --address cannot be joined; the message says why."""


def join_cluster(address: str) -> None:
    """Join a running cluster (its token, if any, was set up by `use_cluster_token`)."""
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as error:  # ConnectionError, AuthenticationError, ...
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ClusterError(
            f"--address {address}: could not join the Ray cluster ({message}). Start it with "
            "`ray start --head`; a cluster started so uses token authentication, and this "
            "machine needs its token: copy the head node's ~/.ray/auth_token here (or set "
            "RAY_AUTH_TOKEN to what `ray get-auth-token` prints on the head node)"
        ) from None


def write_study_file(options: StudyOptions, tracker: StudyTracker) -> None:
    """`study.json`: what a resume continues with (space, budget, data, stores)."""
    study_file = options.study_dir / "study.json"
    if study_file.is_file():
        return  # a resume: the study keeps what it began with
    staging = study_file.with_suffix(".partial")
    staging.write_text(
        json.dumps(
            {
                "name": options.name,
                "space": str(options.space.file),
                "space_yaml": options.space.file.read_text(encoding="utf-8"),
                "budget": options.budget,
                "scheduler": options.space.scheduler.type,
                "searched": list(options.searched),
                "trials": options.space.trial_count,
                "data": options.data.to_dict(),
                "tracking_uri": tracker.tracking_uri,
                "ray_storage": options.ray_storage,
                "experiment_id": tracker.experiment_id,
                "parent_run_id": tracker.parent_run_id,
            },
            indent=2,
        )
    )
    staging.rename(study_file)


def recorded_trials(study_dir: Path) -> dict[str, str]:
    """Trials whose results the study holds, with their end state."""
    recorded = {}
    for metrics in sorted((study_dir / "trials").glob("*/metrics.json")):
        try:
            recorded[metrics.parent.name] = json.loads(metrics.read_text())["end_state"]
        except (ValueError, KeyError, OSError):
            continue  # unreadable: the trial is recorded again when it ends
    return recorded


def last_result(trial_dir: Path, metric: str) -> dict[str, Any]:
    """A recorded trial's last epoch as Ray saw it (epoch and the searched metric); for a
    failed trial, its error."""
    try:
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        if metrics["end_state"] == "error":
            return {ERROR_KEY: f"failed before the study was resumed: {metrics.get('error')}"}
        history = json.loads((trial_dir / "history.json").read_text())
        last = history[-1]
        return {"epoch": int(last["epoch"]), metric: float(last[metric])}
    except (ValueError, KeyError, IndexError, OSError):
        return {"epoch": 0, metric: float("nan")}


class _NoRestoreHint(logging.Filter):
    """Ray's own `Tuner.restore(...)` hint; the driver prints the study's resume command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


def study_params(options: StudyOptions) -> dict[str, Any]:
    """What the study's parent MLflow run records."""
    return {
        "space": options.space.name,
        "searcher": options.space.searcher,
        "scheduler": options.space.scheduler.type,
        "num_samples": options.space.num_samples,
        "budget": options.budget,
        "metric": options.space.metric,
        **{f"data.{k}": v for k, v in options.data.to_dict().items()},
        **{f"budget.{k}": v for k, v in BUDGETS[options.budget].items()},
    }


def check_trial_configs(options: StudyOptions) -> None:
    """Every fixed combination must make a valid TrainConfig before Ray starts."""
    fixed = fixed_values(options)
    fixed.update({k: v for k, v in options.space.parameters.items() if not isinstance(v, dict)})
    for row in options.space.configs or [{}]:
        TrainConfig.from_dict({**fixed, **row}, source=str(options.space.file))
    spec = options.space.scheduler
    if spec.type == "asha":
        epochs = spec.max_epochs or max_epochs(options)
        if spec.grace_period > epochs:
            raise ValueError(
                f"{options.space.file}: scheduler.grace_period {spec.grace_period} is more than "
                f"the {epochs} epochs a trial runs (scheduler.max_epochs, else max_epochs): "
                "ASHA could never compare trials; lower grace_period or raise max_epochs"
            )
    try:
        make_scheduler(options)
    except AssertionError as error:  # Ray's own checks of the scheduler's values
        raise ValueError(f"{options.space.file}: scheduler: {error or 'invalid values'}") from None
