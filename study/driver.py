"""The study driver: a validated search space to a Ray Tune run, and its results.

Results live in `STORAGE/NAME/` (Ray Tune's experiment folder, so any node
of a cluster with shared storage can restore any trial); the driver adds
`study.json` and `trials/` there, which the analysis package reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import generate_variants

from mer_models.config import CUDA_ONLY_FIELDS, TrainConfig
from mer_models.data.splits import DatasetPaths
from mer_models.files import remove_partials
from study import scratch
from study.checkpoint_store import FOLDER as CHECKPOINTS
from study.local_cluster import start_local_cluster
from study.race import (
    Course,
    RaceRule,
    RowDecision,
    replay,
    rung_epochs,
    rung_line,
    score_of,
)
from study.race_scheduler import RaceScheduler, RaceTrialGenerator
from study.recorder import StudyRecorder
from study.signals import STOP
from study.trainable import (
    RECORDED_KEY,
    ROW_KEY,
    run_trial,
    storage_fault,
    trial_config,
    trial_key,
)
from study_folder import records, reuse
from study_folder.budgets import BUDGETS
from study_folder.records import write_groundtruth
from study_folder.search_space import (
    MODE,
    RACE_WITH_OPTUNA,
    RUNG_SCHEDULERS,
    SearchSpace,
    tune_value,
)
from tracking.names import SEED_FIELD, SPLIT_FIELD, row_name, searched_fields
from tracking.study_tracker import StudyTracker

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
    progress_seconds: float = 300.0  # off a terminal: the whole progress table at most this often
    # Where Ray Tune keeps trial checkpoints and its experiment state: the
    # storage folder, or a cloud URI (s3://, gs://) when the results folder
    # stays on the driver. None: `storage`.
    ray_storage: str | None = None
    keep_checkpoints: bool = False  # a finished trial's checkpoints stay (else deleted)
    retry_failed: bool = False  # a resume runs failed trials again from their checkpoints
    cuda_graphs: bool = True  # False (--no-cuda-graphs): every trial's step runs eagerly
    mlflow_timeout_s: float = 120.0  # the study's end waits this long for its MLflow store

    @property
    def ray_storage_path(self) -> str:
        return self.ray_storage or str(self.storage)

    @property
    def ray_experiment(self) -> str:
        return f"{self.ray_storage_path.rstrip('/')}/{self.name}"

    @property
    def device(self) -> str:
        """Where the trials train: Ray gives a trial without GPUs none to see."""
        return "cuda" if self.gpus_per_trial > 0 else "cpu"

    @property
    def study_dir(self) -> Path:
        return self.storage / self.name

    @property
    def splits(self) -> tuple[int, ...]:
        """The official splits the trials run on: the space's `splits`, else the data's one."""
        return self.space.splits or (self.data.split,)

    @property
    def searched(self) -> tuple[str, ...]:
        """The fields the space varies (they name the trials' runs and the summary's columns)."""
        return searched_fields(self.space.parameters, self.space.configs or [])

    @property
    def checkpoints(self) -> str:
        """The root of the trials' own checkpoint stores (see study.checkpoint_store)."""
        return f"{self.ray_experiment}/{CHECKPOINTS}"


def fixed_values(options: StudyOptions) -> dict[str, Any]:
    """Budget and resource-derived values, under the space's own parameters."""
    values: dict[str, Any] = dict(BUDGETS[options.budget])
    values["split"] = options.data.split  # a space's `splits` draw each trial's own
    values["threads"] = max(int(options.cpus_per_trial), 1)
    # On CPU the trial's cores train; loading in the main process costs ~5%
    # there. With a GPU, spare cores feed it.
    values["workers"] = max(int(options.cpus_per_trial) - 1, 1) if options.gpus_per_trial else 0
    if not options.cuda_graphs:
        values["cuda_graphs"] = False
    if options.device != "cuda":  # recorded as they act: nothing of theirs runs on a CPU
        values.update(dict.fromkeys(CUDA_ONLY_FIELDS, False))
    return values


def param_space(options: StudyOptions) -> dict[str, Any]:
    """Ray Tune's param space: fixed values under the search space's own (--no-cuda-graphs
    and a CPU's false CUDA-only switches over both)."""
    values = fixed_values(options) | space_values(options.space)
    if not options.cuda_graphs:
        values["cuda_graphs"] = False
    if options.device != "cuda":
        values.update(dict.fromkeys(CUDA_ONLY_FIELDS, False))
    return values


def space_values(space: SearchSpace) -> dict[str, Any]:
    """A search space in Ray Tune's terms: its values, distributions and `configs` rows."""
    values = {key: tune_value(spec) for key, spec in space.parameters.items()}
    if space.configs:
        values[ROW_KEY] = tune.grid_search(space.configs)
    return values


def max_epochs(options: StudyOptions) -> int:
    space = options.space
    fixed = space.parameters.get("max_epochs")
    if isinstance(fixed, int):
        return fixed
    return space.scheduler.max_epochs or int(BUDGETS[options.budget]["max_epochs"])


def make_scheduler(options: StudyOptions):
    """FIFO or ASHA (a race's scheduler is `make_race`'s: it needs the study's trials)."""
    spec = options.space.scheduler
    if spec.type == "race":
        raise ValueError("a race's scheduler is made by make_race, from the study's trials")
    if spec.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=spec.max_epochs or max_epochs(options),
        grace_period=spec.grace_period,
        reduction_factor=spec.reduction_factor,
    )


def decision_epochs(options: StudyOptions) -> tuple[int, ...]:
    """The epochs at which the study's scheduler may stop a trial: a race's or ASHA's rungs
    (ASHA's at the same grace_period * reduction_factor^k); none under FIFO."""
    spec = options.space.scheduler
    if spec.type == "fifo":
        return ()
    epochs = spec.max_epochs or max_epochs(options)
    return rung_epochs(spec.grace_period, spec.reduction_factor, epochs)


def race_rule(options: StudyOptions) -> RaceRule:
    spec = options.space.scheduler
    return RaceRule(decision_epochs(options), spec.reduction_factor, spec.alpha)


def course_of(trial: records.Trial, options: StudyOptions) -> Course:
    """A recorded trial as the race sees it: its row, its draw, and its whole history."""
    metric = options.space.metric
    return Course(
        trial.key,
        row_name(trial.config, options.searched),
        records.draw_of(trial.config),
        [score_of(record.get(metric)) for record in trial.history],
        ended=True,
        failed=trial.end_state == "error",
    )


def make_race(
    options: StudyOptions,
    recorded: list[records.Trial],
    running: int,
    tracker: StudyTracker | None = None,
    note: Callable[[str], None] | None = None,
) -> tuple[RaceScheduler, RaceTrialGenerator]:
    """The race's scheduler and trial generator for `running` trials to run, with the trials
    `recorded` as ended before (a resume): their histories re-derive the rungs decided. At
    each rung decided: rungs.json written, `note` told its line, MLflow its rows."""
    generator = RaceTrialGenerator(max_concurrent=options.max_concurrent or 0)
    scheduler = RaceScheduler(
        race_rule(options),
        expected=len(recorded) + running,
        identify=lambda trial: _identify(trial, options),
        metric=options.space.metric,
        recorded=[course_of(trial, options) for trial in recorded],
        generator=generator,
    )

    def on_rung(decisions: list[RowDecision]) -> None:
        records.write_rungs(options.study_dir, scheduler.race.to_json())
        if note is not None:
            note(rung_line(decisions))
        if tracker is not None:
            tracker.log_rungs(scheduler.race.to_json())

    scheduler.on_rung = on_rung
    return scheduler, generator


def _identify(trial, options: StudyOptions) -> tuple[str, str, tuple[Any, ...]]:
    config = trial_config(trial.config).to_dict()
    key = trial_key(trial.config, trial.trial_id)
    return key, row_name(config, options.searched), records.draw_of(config)


def make_searcher(options: StudyOptions, ended: list[records.Trial] = ()):
    """Optuna's searcher (grid and random trials are drawn by `planned_trials`), told the
    results of the trials a resumed study has recorded."""
    sampled = [k for k, spec in options.space.parameters.items() if isinstance(spec, dict)]
    done = [t for t in ended if t.end_state not in (None, "error") and t.history]
    points = [{k: t.config[k] for k in sampled} for t in done]
    rewards = [max(row.get(options.space.metric, float("-inf")) for row in t.history) for t in done]
    searcher = OptunaSearch(
        # Its sampler's draws begin again from its seed: a resumed one is seeded past them,
        # or its first draws would repeat the trials it was told of.
        seed=options.space.search_seed + len(ended),
        points_to_evaluate=points or None,
        evaluated_rewards=rewards or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent or 2)


def planned_trials(options: StudyOptions) -> list[dict[str, Any]] | None:
    """Every trial a grid or random space runs, as whole configs, in the order they run;
    None for optuna, whose points depend on the results so far.

    Drawn here, not by Ray's searcher, seeded by the space's `search_seed`: the same
    space gives the same trials, and a resume knows which have not begun. With
    `repeats: N` every configuration drawn (a row) runs with seeds 0..N-1, and with
    `splits` on each split, draw by draw: every row on seed 0 and the first split first,
    then the next split, then seed 1, so a study stopped early has whole draws of rows.
    """
    space = options.space
    if space.searcher == "optuna":
        return None
    random_state = np.random.RandomState(space.search_seed)
    fixed = fixed_values(options)
    rows = []
    for _ in range(space.num_samples):
        for _, variant in generate_variants(space_values(space), random_state=random_state):
            rows.append({**fixed, **variant})
    if space.draws == 1:
        return [trial_config(row).to_dict() for row in rows]
    seeds = range(space.repeats) if space.repeats > 1 else [None]
    return [
        trial_config(
            {**row, **({} if seed is None else {SEED_FIELD: seed}), SPLIT_FIELD: split}
        ).to_dict()
        for seed in seeds
        for split in options.splits
        for row in rows
    ]


def run_study(
    options: StudyOptions, tracker: StudyTracker, planned: list[dict[str, Any]] | None
) -> int:
    """Run (or resume) the study in its claimed folder, `planned` its trials as `check_plan`
    drew and checked them; the number of trials Ray ran.

    A resume is rebuilt from the study's records (`study_folder.records`), never from
    Ray's saved state: trials that ended stay as recorded, unfinished ones
    continue with their recorded config from their newest loadable checkpoint,
    and trials never begun start. Raises StorageFault when a full or unwritable
    disk stopped it.
    """
    listed = _prepare_folder(options, tracker, planned)
    retrying = frozenset(t.key for t in listed if t.end_state == "error" and options.retry_failed)
    to_run = _trials_to_run(listed, retrying, planned)
    if planned is None or to_run:
        _start_ray(options)
        STOP.install()  # after ray.init, which puts its own SIGTERM handler (an abrupt exit) there
        _quiet_ray_logs()
    else:
        print(
            f"every trial of study {options.name} has ended: nothing to train; its end is "
            "made again from its records (the report anew, the fusion and MLflow records "
            "where they are missing)"
        )
    race = None
    if options.space.scheduler.type == "race":
        ended = [t for t in listed if t.end_state is not None and t.key not in retrying]
        race = make_race(
            options, ended, len(to_run), tracker, note=lambda line: recorder.console.note(line)
        )
    recorder = _make_recorder(options, tracker, listed, retrying, race)
    ran = 0
    if planned is None:
        ran = _run_optuna(options, recorder, listed, to_run)
    elif to_run:
        ran = _fit(options, recorder, _explicit_space(options, to_run), None, len(to_run), race)
    if recorder.fault is not None:
        raise StorageFault(recorder.fault)
    if recorder.store_failure is not None:
        raise StoreFailed(recorder.store_failure)
    if race is not None:
        conclude_race(options, tracker)
    return ran


def _prepare_folder(
    options: StudyOptions, tracker: StudyTracker, planned: list[dict[str, Any]] | None
) -> list[records.Trial]:
    """The study's trials as recorded, once its folder is ready to run in: its records made
    whole (MLflow's ids in study.json, interrupted trial writes finished or undone), the
    ground truth written, another study's trials taken over (`reuse`), leftovers removed.
    Raises StorageFault when a full or unwritable disk stops that."""
    try:
        record_tracking(options, tracker)
        records.recover_trials(options.study_dir)
        for split in options.splits:  # the data's split in the study folder, others beside
            write_groundtruth(
                options.study_dir,
                options.data.on_split(split),
                own_folder=split != options.data.split,
            )
        _take_over(options, planned)
        listed = records.read_trials(options.study_dir)
        remove_leftovers(options)
        return listed
    except OSError as error:
        if storage_fault(error):
            raise StorageFault(f"the study's records: {error}") from None
        raise


def check_reuse(options: StudyOptions) -> None:
    """The study a space's `reuse` names, checked before anything is written (ReuseError)."""
    source = _reuse_source(options)
    if source is not None:
        reuse.check_source(source, options.data.to_dict(), options.space.metric)


def _reuse_source(options: StudyOptions) -> Path | None:
    """The study `reuse` names; None without one, or for a resume that finds it gone (what
    was taken over is in this study's folder; the rest trains)."""
    source = options.space.reuse
    if source is None or (options.resume and not (source / records.STUDY_FILE).is_file()):
        return None
    return source


def _take_over(options: StudyOptions, planned: list[dict[str, Any]] | None) -> None:
    """The ended trials of the study `reuse` names that this one plans and has not begun
    (`planned`: a space with `reuse` is never optuna's)."""
    source = _reuse_source(options)
    if source is None or planned is None:
        return
    taken = reuse.take_over(source, options.study_dir, planned, options.device)
    if taken:
        print(
            f"took over {len(taken)} ended trial(s) of {source.name} (the same "
            "configuration and seed, budget, data and device): they are not trained again"
        )


def _quiet_ray_logs() -> None:
    """Ray Tune's loggers keep quiet about what the study says itself (`_NoRayTrialNoise`)."""
    for name in (
        "ray.tune.tune",
        "ray.tune.execution.tune_controller",
        "ray.tune.execution.experiment_state",
    ):
        logging.getLogger(name).addFilter(_NoRayTrialNoise())


def _trials_to_run(
    listed: list[records.Trial],
    retrying: frozenset[str],
    planned: list[dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Entries for `_explicit_space`: the recorded trials that did not end (or are retried),
    with their keys, then the planned configs no trial has begun (no key yet)."""
    to_run = [
        {"key": t.key, "config": t.config}
        for t in listed
        if t.end_state is None or t.key in retrying
    ]
    if planned is not None:
        not_begun, _ = records.match_planned(planned, listed)
        to_run += [{"key": None, "config": config} for config in not_begun]
    return to_run


def _make_recorder(
    options: StudyOptions,
    tracker: StudyTracker,
    listed: list[records.Trial],
    retrying: frozenset[str],
    race: tuple[RaceScheduler, RaceTrialGenerator] | None,
) -> StudyRecorder:
    """The study's Ray callback, having first finished recording the trials that ended
    before (an interruption may have cut their recording short)."""
    recorder = StudyRecorder(
        options.study_dir,
        tracker,
        options.checkpoints,
        options.progress_seconds,
        searched=options.searched,
        keep_checkpoints=options.keep_checkpoints,
        retrying=retrying,
        device=options.device,
        metric=options.space.metric,
        repeats=options.space.repeats,
        splits=len(options.splits),
        dropped_at=race[0].dropped_at if race is not None else None,
        max_epochs=max_epochs(options),
    )
    for trial in listed:
        if trial.end_state is not None:
            recorder.close_recorded(records.trial_dir(options.study_dir, trial.key))
    return recorder


def _run_optuna(
    options: StudyOptions,
    recorder: StudyRecorder,
    listed: list[records.Trial],
    to_run: list[dict[str, Any]],
) -> int:
    """Optuna's trials: those begun before (a resume) first, then the rest of its samples;
    how many trials Ray ran."""
    ran = 0
    if to_run:
        ran += _fit(options, recorder, _explicit_space(options, to_run), None, len(to_run))
    remaining = options.space.num_samples - len(listed)
    begun = records.read_trials(options.study_dir)
    # Not after an interruption (Ray stops gracefully): only once the begun trials ended.
    stopped = recorder.fault is not None or recorder.store_failure is not None
    if remaining > 0 and all(t.end_state is not None for t in begun) and not stopped:
        searcher = make_searcher(options, begun)
        ran += _fit(options, recorder, param_space(options), searcher, remaining)
    return ran


def conclude_race(options: StudyOptions, tracker: StudyTracker) -> None:
    """Once every trial ended: the rungs re-derived from the records, written and logged (a
    resume that decided nothing new still has them whole)."""
    listed = records.read_trials(options.study_dir)
    if not listed or any(trial.end_state is None for trial in listed):
        return
    race = replay(race_rule(options), [course_of(trial, options) for trial in listed])
    records.write_rungs(options.study_dir, race.to_json())
    tracker.log_rungs(race.to_json())


def check_plan(options: StudyOptions) -> list[dict[str, Any]] | None:
    """The study's planned trials (`planned_trials`), drawn once and checked before anything
    is written: the scheduler and every config, the study `reuse` names, and a resume's
    records against the plan. A problem raises ValueError naming it."""
    check_trial_configs(options)
    planned = planned_trials(options)
    check_reuse(options)
    if options.resume:
        check_records(options, planned)
    return planned


def check_records(options: StudyOptions, planned: list[dict[str, Any]] | None) -> None:
    """A resumed study's records must read, and every recorded trial must be one of the
    trials `planned` (grid and random); else RecordError naming the trial's file and the
    space."""
    listed = records.read_trials(options.study_dir)
    if planned is None:
        return
    _, unplanned = records.match_planned(planned, listed)
    for trial in unplanned[:1]:
        recorded = records.planned_identity(trial.config)
        nearest = min(planned, key=lambda c: sum(c.get(k) != v for k, v in recorded.items()))
        differs = ", ".join(
            f"{key} {value!r} (planned: {nearest.get(key)!r})"
            for key, value in recorded.items()
            if nearest.get(key) != value
        )
        path = records.trial_dir(options.study_dir, trial.key) / records.CONFIG_FILE
        raise records.RecordError(
            f"{path}: trial {trial.key}'s recorded config is not one that the study's space "
            f"({options.space.file}, as recorded in study.json) plans: {differs or 'a repeat'}. "
            "The records disagree with the space; restore the file, or start a new study "
            "(another --name)"
        )


def _explicit_space(options: StudyOptions, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Ray's param space of a list of whole trial configs (recorded, or planned with no key);
    this run's resources on top."""
    resources = {k: v for k, v in fixed_values(options).items() if k in records.RESOURCE_FIELDS}
    return {**resources, RECORDED_KEY: tune.grid_search(entries)}


def _fit(
    options: StudyOptions,
    recorder,
    space: dict[str, Any],
    searcher,
    samples: int,
    race: tuple[RaceScheduler, RaceTrialGenerator] | None = None,
) -> int:
    """One Ray Tune run in the study's experiment folder; how many trials it ran. A race
    brings its scheduler and its trial generator, which keeps --max-concurrent."""
    scheduler = race[0] if race is not None else make_scheduler(options)
    if race is not None:
        searcher = race[1]
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            data=options.data.to_dict(),
            checkpoints=options.checkpoints,
            metric=options.space.metric,
            decision_epochs=decision_epochs(options),
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=options.space.metric,
            mode=MODE,
            scheduler=scheduler,
            search_alg=searcher,
            num_samples=samples if searcher is not None and race is None else 1,
            max_concurrent_trials=None if race is not None else options.max_concurrent,
            # A worker runs trial after trial: imports and data once per worker, not per
            # trial; each trial starts clean (study.trainable.WorkerState).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=options.name,
            storage_path=options.ray_storage_path,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=0,
        ),
    )
    with STOP.around_fit():
        return len(tuner.fit())


def _start_ray(options: StudyOptions) -> None:
    if ray.is_initialized():
        return
    if not options.address:
        # Its own cluster, never one a `ray start` left on this node, out of the way of a
        # SIGTERM to the driver's process group.
        start_local_cluster(num_cpus=os.cpu_count())
        return
    join_cluster(options.address)
    nodes = sum(node.get("Alive", False) for node in ray.nodes())
    if nodes > 1 and options.storage == Path.cwd() / "ray_results":
        log.warning(
            "warning: the cluster has %d nodes but --storage is the default %s, a folder "
            "on this machine only: a trial moved to another node cannot find its "
            "checkpoints. Give --storage a folder every node mounts, or a cloud URI "
            "(docs/cluster.md).",
            nodes,
            options.storage,
        )


class StorageFault(RuntimeError):
    """A full or unwritable disk stopped the study; the message names the place and error."""


class StoreFailed(RuntimeError):
    """The MLflow store failed for good while trials trained; `error` is its failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def remove_leftovers(options: StudyOptions) -> None:
    """What killed runs left: half-written files in this study's folder (a local checkpoint
    store included; a trial clears its own store when it starts) and the scratch folders
    on this node that no living trial holds (`study.scratch`)."""
    partials = remove_partials(options.study_dir)  # no writer runs: the study is claimed
    if partials:
        log.info("removed %d half-written file(s) of an interrupted run", len(partials))
    swept = scratch.sweep()
    if swept:
        log.info("removed %d scratch folder(s) that killed trials left on this node", len(swept))


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


def study_record(options: StudyOptions, study_id: str) -> records.StudyRecord:
    """`study.json` of a new study, written at its claim: what a resume continues with
    (space and its text, budget, data, stores, id); its MLflow run is added once made."""
    return records.StudyRecord(
        name=options.name,
        space=str(options.space.file),
        space_yaml=options.space.text,
        budget=options.budget,
        scheduler=options.space.scheduler.type,
        metric=options.space.metric,
        searched=options.searched,
        trials=options.space.trial_count,
        repeats=options.space.repeats,
        splits=options.space.splits,
        data=options.data.to_dict(),
        tracking_uri=options.tracking_uri,
        ray_storage=options.ray_storage,
        study_id=study_id,
    )


def record_tracking(options: StudyOptions, tracker: StudyTracker) -> None:
    """The MLflow experiment and parent run into `study.json` (the analysis commands log
    there), once the tracker found or made them."""
    record = records.read_study(options.study_dir)
    if record is None or (
        record.experiment_id == tracker.experiment_id
        and record.parent_run_id == tracker.parent_run_id
    ):
        return
    records.write_study(
        options.study_dir,
        replace(record, experiment_id=tracker.experiment_id, parent_run_id=tracker.parent_run_id),
    )


class _NoRayTrialNoise(logging.Filter):
    """Ray's messages that the study says better or does not need: its `Tuner.restore(...)`
    hint and its list of the trials that did not complete (the driver prints how many are
    unfinished and the study's resume command), its per-failure tracebacks (a failed trial
    is one paragraph: its cause and the file of its full traceback), and the failures to
    save its experiment state (never read back: the records are the truth)."""

    NOISE = (
        "Tuner.restore(",
        "Trials did not complete",
        "Trial task failed",
        "experiment state",
        "controller checkpointing",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


def study_params(options: StudyOptions) -> dict[str, Any]:
    """What the study's parent MLflow run records."""
    return {
        "space": options.space.name,
        "searcher": options.space.searcher,
        "scheduler": options.space.scheduler.type,
        "num_samples": options.space.num_samples,
        "repeats": options.space.repeats,
        "splits": " ".join(map(str, options.splits)),
        "budget": options.budget,
        "metric": options.space.metric,
        **{f"data.{k}": v for k, v in options.data.to_dict().items()},
        **{f"budget.{k}": v for k, v in BUDGETS[options.budget].items()},
    }


def check_trial_configs(options: StudyOptions) -> None:
    """The scheduler must fit the trials, and every fixed combination must make a valid
    TrainConfig, before Ray starts."""
    spec = options.space.scheduler
    if spec.type == "race" and options.space.searcher == "optuna":  # --scheduler race
        raise ValueError(f"{options.space.file}: --scheduler race: {RACE_WITH_OPTUNA}")
    if spec.type in RUNG_SCHEDULERS:
        epochs = spec.max_epochs or max_epochs(options)
        if spec.type == "race" and not race_rule(options).rungs:
            raise ValueError(
                f"{options.space.file}: scheduler.grace_period {spec.grace_period} is not below "
                f"the {epochs} epochs a trial runs (scheduler.max_epochs, else max_epochs): "
                "the race would have no rung to decide at; lower grace_period"
            )
        if spec.grace_period > epochs:
            raise ValueError(
                f"{options.space.file}: scheduler.grace_period {spec.grace_period} is more than "
                f"the {epochs} epochs a trial runs (scheduler.max_epochs, else max_epochs): "
                "ASHA could never compare trials; lower grace_period or raise max_epochs"
            )
    try:
        if spec.type != "race":
            make_scheduler(options)
    except AssertionError as error:  # Ray's own checks of the scheduler's values
        raise ValueError(f"{options.space.file}: scheduler: {error or 'invalid values'}") from None
    fixed = fixed_values(options)
    fixed.update({k: v for k, v in options.space.parameters.items() if not isinstance(v, dict)})
    for row in options.space.configs or [{}]:
        TrainConfig.from_dict({**fixed, **row}, source=str(options.space.file))
