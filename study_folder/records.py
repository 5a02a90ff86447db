"""A study's records: what it is and what each of its trials is, ran and ended as.

The one module that writes and reads a study folder: the driver and the
recorder write through it, a resume continues from it, and the summary,
analysis and tagging read it (`load_study`). The records are the truth a
resume continues from; Ray's saved state is never read back (it is pickled:
loading it would run whatever a file holds). Layout in the study folder::

    study.json                  the study: space (path and text), budget, scheduler,
                                selection metric, data, stores, planned trial count,
                                seeds per row (repeats) (StudyRecord; read: Study)
    trials/<key>/config.json    a trial's whole TrainConfig, written when Ray creates it (Trial)
    trials/<key>/metrics.json   its end: best-epoch metrics, epochs_run, end_state, ...
    trials/<key>/history.json   its epochs
    trials/<key>/{validation,test}_predictions.npy   float32, split rows x tags
    trials/<key>/best_model.pt  the best epoch's weights, config, tags, band_stats
    trials/<key>.partial/       a trial's results being written (replaced whole)
    {validation,test}_groundtruth.npy, tags.txt   the labels the trials were scored on
                                (bool, split rows x tag columns), and the tags
    split-<N>/                  the same for each other split of a space's `splits`
                                (the files above: the study's first split, its data's)
    rungs.json                  a race's decided rungs and their rows' decisions
    fusions/<name>/             a fusion (analysis.fusion.FUSION_FILES)

A trial's key is the Ray trial id it was first created with; a resumed trial
keeps it (it travels in the trial's config), so its folder, checkpoint store
and MLflow run stay its own. Every file is written whole or not at all
(`mer_models.files`), with the umask's permissions.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mer_models.config import EXECUTION_FIELDS, TrainConfig
from mer_models.data.splits import DatasetPaths, load_split
from mer_models.files import PARTIAL, atomic_write_bytes, atomic_write_text
from mer_models.npy import load_npy
from mer_models.training.metrics import DEFAULT_SELECTION, Metric, selection_metric
from tracking.names import (  # noqa: F401 - the race's names are the folder's too
    BEST,
    DROPPED,
    DROPPED_KEY,
    KEPT,
    RUNGS_FILE,
    SEED_FIELD,
    SPLIT_FIELD,
    varied_draws,
)

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
CONFIRM_FILE = "confirm.yaml"  # the confirmation space a study writes at its end
TRIALS = "trials"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
# Config fields that follow the resources a run is given, not what the trial is: a resume
# may change them (cuda_graphs: --no-cuda-graphs after a capture failed on this GPU).
RESOURCE_FIELDS = ("threads", "workers", "cuda_graphs")
# The evaluated parts of a split: a trial's predictions and the study's labels.
EVALUATED_PARTS = ("validation", "test")
PREDICTION_FILES = {part: f"{part}_predictions.npy" for part in EVALUATED_PARTS}
GROUNDTRUTH_FILES = {part: f"{part}_groundtruth.npy" for part in EVALUATED_PARTS}
TAGS_FILE = "tags.txt"
# A trial stopped because a race dropped its row at a rung; metrics.json says which rung.
DROPPED_STATE = "race_dropped"
# End states of a trial that trained to a best epoch (stopped ones included): fusable models.
FINISHED_STATES = ("finished", "early_stopped", "asha_stopped", DROPPED_STATE)
# What the study's data must name for a reader that loads it (DatasetPaths).
DATA_KEYS = ("metadata", "melspecs", "split", "subset")


class RecordError(ValueError):
    """A record that cannot be read as written; the message names the file and key."""


@dataclass(frozen=True)
class StudyRecord:
    """`study.json`: what the study is, and what a resume continues with whatever flags it
    is given. A key without a default is in every study.json; one with a default may be
    absent (or null) in an older one and reads as it: None for what only a resume needs
    (`require_resumable`)."""

    name: str
    space: str  # the space file the study began with
    data: dict[str, Any]  # DatasetPaths.to_dict()
    space_yaml: str | None = None  # its text then (the file may change later)
    budget: str | None = None
    scheduler: str | None = None  # asha, fifo or race
    searched: tuple[str, ...] | None = None  # the fields the space varies
    trials: int | None = None  # how many trials the space plans
    tracking_uri: str | None = None
    ray_storage: str | None = None  # a cloud URI for the checkpoints; None: the study folder
    metric: str = DEFAULT_SELECTION  # what chose trials, best epochs and the registered model
    experiment_id: str | None = None  # None until the study's MLflow run is made
    parent_run_id: str | None = None
    repeats: int = 1  # seeds per row (0..repeats-1)
    splits: tuple[int, ...] = ()  # the splits each row runs on; (): the data's split alone
    # Made at the claim: its MLflow runs are found by it, never by the name alone (a name may
    # be used again in one store). "": a study.json older than it (its runs found by name).
    study_id: str = ""


# The JSON type of each key of study.json (StudyRecord's fields).
_STUDY_TYPES: dict[str, type] = {
    "name": str,
    "space": str,
    "data": dict,
    "space_yaml": str,
    "budget": str,
    "scheduler": str,
    "searched": list,
    "trials": int,
    "tracking_uri": str,
    "ray_storage": str,
    "metric": str,
    "experiment_id": str,
    "parent_run_id": str,
    "repeats": int,
    "splits": list,
    "study_id": str,
}
# What a resume needs that an older study.json may lack (read as None).
RESUME_KEYS = ("space_yaml", "budget", "scheduler", "searched", "trials", "tracking_uri")


def read_study(study_dir: Path) -> StudyRecord | None:
    """The study's record; None when it was stopped before writing one; RecordError if bad."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        return None
    values = _read_json(path)
    if not isinstance(values, dict):
        raise RecordError(
            f"{path}: expected a JSON object with the keys {', '.join(_STUDY_TYPES)}, "
            f"got {type(values).__name__}; the file is damaged: restore it, or start a new study"
        )
    present = {key: values[key] for key in _STUDY_TYPES if values.get(key) is not None}
    required = [f.name for f in fields(StudyRecord) if f.default is MISSING]
    _refuse_missing(path, [key for key in required if key not in present])
    for key, value in present.items():
        expected = _STUDY_TYPES[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise RecordError(f"{path}: '{key}' should be {expected.__name__}, got {value!r:.80}")
    for key in ("searched", "splits"):
        if key in present:
            present[key] = tuple(present[key])
    return StudyRecord(**present)


def require_resumable(study_dir: Path, record: StudyRecord) -> None:
    """A RecordError unless `record` holds all a resume continues with (RESUME_KEYS)."""
    missing = [key for key in RESUME_KEYS if getattr(record, key) is None]
    _refuse_missing(Path(study_dir) / STUDY_FILE, missing)


def _refuse_missing(path: Path, missing: list[str]) -> None:
    if missing:
        raise RecordError(
            f"{path}: missing key(s) {', '.join(missing)}; the file is damaged or not a study "
            "record"
        )


def write_study(study_dir: Path, record: StudyRecord) -> None:
    atomic_write_text(Path(study_dir) / STUDY_FILE, json.dumps(asdict(record), indent=2))


def write_rungs(study_dir: Path, rungs: dict[str, Any]) -> None:
    """`rungs.json`: a race's decided rungs, their rows and decisions (`Race.to_json`)."""
    atomic_write_text(Path(study_dir) / RUNGS_FILE, json.dumps(rungs, indent=2) + "\n")


def labels_dir(study_dir: Path, split: int | None = None) -> Path:
    """Where the labels of `split` lie: the study folder for its first split (None), else
    its `split-<N>` folder."""
    return Path(study_dir) if split is None else Path(study_dir) / f"split-{split}"


def write_groundtruth(study_dir: Path, data: DatasetPaths, own_folder: bool = False) -> None:
    """Save the validation and test label matrices (bool) and the tag list of `data`'s split
    into the study folder (`own_folder`: into its `split-<N>` folder).

    With them a study's prediction files are evaluated, fused and reported
    (`python -m analysis ...`) without the dataset's split files.
    """
    folder = labels_dir(study_dir, data.split if own_folder else None)
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in GROUNDTRUTH_FILES.items():
        split = load_split(data, part)
        buffer = io.BytesIO()
        np.save(buffer, split.labels.astype(bool))
        atomic_write_bytes(folder / name, buffer.getvalue())
    atomic_write_text(folder / TAGS_FILE, "\n".join(split.tags) + "\n")


def read_labels(
    study_dir: Path, part: str, split: int | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The labels a study's trials were scored on for `part` (bool, rows x tags), and the tags;
    `split`: of that other split of a space's `splits` (see `Study.labels`)."""
    if part not in GROUNDTRUTH_FILES:
        raise ValueError(f"unknown part {part!r}; expected one of {', '.join(EVALUATED_PARTS)}")
    folder = labels_dir(study_dir, split)
    path, tags_path = folder / GROUNDTRUTH_FILES[part], folder / TAGS_FILE
    for needed in (path, tags_path):
        if not needed.is_file():
            raise ValueError(
                f"study {study_dir} has no {needed.name}: the labels its trials were scored on "
                "are written when the study starts; start the study again"
            )
    labels = load_npy(path, f"the study's {part} labels", "start the study again (it writes them)")
    tags = tuple(line for line in tags_path.read_text(encoding="utf-8").splitlines() if line)
    if labels.ndim != 2 or labels.shape[1] != len(tags):
        raise ValueError(
            f"{path} has shape {labels.shape}; {tags_path} lists {len(tags)} tags: the study's "
            "labels are damaged"
        )
    return labels.astype(bool), tags


@dataclass(frozen=True)
class Trial:
    """One trial's folder, read: its config, and once it ended, its results."""

    key: str  # the Ray trial id it was first created with: its folder's name
    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]  # best-epoch metrics, epochs_run, end_state, ...; {}: not ended
    history: tuple[dict[str, Any], ...]  # its epochs
    validation_predictions: Path | None  # None when the file is absent
    test_predictions: Path | None

    @property
    def has_predictions(self) -> bool:
        return self.validation_predictions is not None and self.test_predictions is not None

    @property
    def end_state(self) -> str | None:
        """finished, early_stopped, asha_stopped, race_dropped or error; None while running."""
        return self.metrics.get("end_state")

    def train_config(self) -> TrainConfig:
        """The config as the typed TrainConfig (errors name the config file)."""
        return TrainConfig.from_dict(self.config, source=str(self.dir / CONFIG_FILE))

    def load_predictions(self, part: str) -> np.ndarray:
        """float32 (tracks, tags) scores of ``part``: validation or test."""
        if part not in PREDICTION_FILES:
            raise ValueError(f"unknown part {part!r}; expected one of {', '.join(EVALUATED_PARTS)}")
        path = self.validation_predictions if part == "validation" else self.test_predictions
        if path is None:
            raise ValueError(f"trial {self.key} has no {part} predictions in {self.dir}")
        return load_npy(path, f"{part} predictions of trial {self.key}")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a trial is, whatever resources it runs with."""
    return {key: value for key, value in config.items() if key not in RESOURCE_FIELDS}


def planned_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a listed trial is, to match it with a planned one: its identity without the
    switches of how it executes, which studies on other devices and versions recorded
    otherwise (`EXECUTION_FIELDS`)."""
    return {k: v for k, v in identity(config).items() if k not in EXECUTION_FIELDS}


def planned_key(config: dict[str, Any]) -> str:
    """`planned_identity` as one string: a listed trial and its planned config share it."""
    return json.dumps(planned_identity(config), sort_keys=True)


def match_planned(
    planned: list[dict[str, Any]], listed: list[Trial]
) -> tuple[list[dict[str, Any]], list[Trial]]:
    """The listed trials matched with the planned configs they are, each config as many
    times as it is planned: the configs no trial is (not begun), and the trials no config
    is (not planned), each in its own order."""
    available = Counter(planned_key(config) for config in planned)
    matched: Counter[str] = Counter()
    unplanned = []
    for trial in listed:
        key = planned_key(trial.config)
        if matched[key] < available[key]:
            matched[key] += 1
        else:
            unplanned.append(trial)
    not_begun = []
    for config in planned:
        key = planned_key(config)
        if matched[key] > 0:
            matched[key] -= 1
        else:
            not_begun.append(config)
    return not_begun, unplanned


# Config fields that make a trial one draw of its row (a configuration the study compares):
# two rows' trials are paired on them; a row's name (tracking.names.row_name) leaves them out.
DRAW_FIELDS = (SEED_FIELD, SPLIT_FIELD)


def draw_of(config: dict[str, Any]) -> tuple[Any, ...]:
    """Which draw of its row a trial is: its values of DRAW_FIELDS (seed, split); trials of
    two rows are paired on it."""
    return tuple(config.get(name) for name in DRAW_FIELDS)


def row_of(config: dict[str, Any]) -> dict[str, Any]:
    """The row a trial is a draw of: what it is, without its seed and split."""
    return {key: value for key, value in identity(config).items() if key not in DRAW_FIELDS}


def row_key(config: dict[str, Any]) -> str:
    """A row as one string: trials of the same row, and only they, share it."""
    return json.dumps(row_of(config), sort_keys=True)


def trial_dir(study_dir: Path, key: str) -> Path:
    return Path(study_dir) / TRIALS / key


def read_trial(folder: Path, split: int) -> Trial:
    """A trial's folder. `split`: the study's, for a config written before trials recorded
    their own. A config that is not a JSON object is a RecordError naming it; results that
    do not read as written are not written (the trial has not ended: a resume records it
    again when it ends)."""
    config_path = folder / CONFIG_FILE
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise RecordError(f"{config_path}: expected a JSON object of config fields")
    predictions = {
        part: folder / name if (folder / name).is_file() else None
        for part, name in PREDICTION_FILES.items()
    }
    return Trial(
        folder.name,
        folder,
        {"split": split, **config},
        *_read_results(folder),
        validation_predictions=predictions["validation"],
        test_predictions=predictions["test"],
    )


def _read_results(folder: Path) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """A trial's metrics and history; none while metrics.json (written last) is absent or
    they do not read."""
    metrics_path, history_path = folder / METRICS_FILE, folder / HISTORY_FILE
    if not metrics_path.is_file():
        return {}, ()
    try:
        metrics = _read_json_as(metrics_path, dict)
        history = _read_json_as(history_path, list) if history_path.is_file() else []
        for number, entry in enumerate(history, start=1):
            if not isinstance(entry, dict):
                raise RecordError(f"{history_path}: entry {number} is not an object")
    except RecordError as error:
        log.warning("%s: trial %s read as not ended", error, folder.name)
        return {}, ()
    return metrics, tuple(history)


def _read_listed(study_dir: Path, split: int) -> list[Trial]:
    """Every trial the study listed, in the order Ray created them (their keys' order); a
    folder without its config.json was listed, then killed before it landed: never trained."""
    root = Path(study_dir) / TRIALS
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and PARTIAL not in p.name)
    return [read_trial(p, split) for p in folders if (p / CONFIG_FILE).is_file()]


def read_trials(study_dir: Path) -> list[Trial]:
    """Every trial the study listed, its config as the TrainConfig it trains (fields added
    since filled in), for a resume to continue from.

    A config that is not a valid TrainConfig is a RecordError (a resume would
    otherwise train something the study never planned).
    """
    record = read_study(study_dir)
    split = int(record.data.get("split", 0)) if record is not None else 0
    listed = []
    for trial in _read_listed(study_dir, split):
        try:
            listed.append(replace(trial, config=trial.train_config().to_dict()))
        except ValueError as error:
            raise RecordError(str(error)) from None
    return listed


def list_trial(study_dir: Path, key: str, config: dict[str, Any]) -> bool:
    """Write a new trial's config.json; False (nothing written) if it is listed already."""
    folder = trial_dir(study_dir, key)
    if (folder / CONFIG_FILE).is_file():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2))
    return True


def write_trial_results(study_dir: Path, key: str, build) -> Path:
    """Replace a trial's folder with its results, whole. `build(staging)` adds the files
    that come from its checkpoint (weights, predictions) and returns its config, metrics
    and history, which are written last (metrics.json last of all). Returns the folder."""
    target = trial_dir(study_dir, key)
    staging = target.with_name(target.name + PARTIAL)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        config, metrics, history = build(staging)
        atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2))
        atomic_write_text(staging / HISTORY_FILE, json.dumps(history, indent=2))
        atomic_write_text(staging / METRICS_FILE, json.dumps(metrics, indent=2))
        retired = target.with_name(target.name + ".old" + PARTIAL)
        shutil.rmtree(retired, ignore_errors=True)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def recover_trials(study_dir: Path) -> None:
    """Finish or undo the trial writes a kill interrupted (see `write_trial_results`).

    Complete results (their metrics.json is written last) replace a folder
    without results; an incomplete write is removed; a folder moved aside
    for its results comes back if they never landed.
    """
    root = Path(study_dir) / TRIALS
    if not root.is_dir():
        return
    for staging in sorted(root.glob(f"*{PARTIAL}")):
        if staging.name.endswith(".old" + PARTIAL):
            continue
        target = staging.with_name(staging.name.removesuffix(PARTIAL))
        complete = (staging / METRICS_FILE).is_file()
        if complete and not (target / METRICS_FILE).is_file():
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    for retired in sorted(root.glob(f"*.old{PARTIAL}")):
        target = retired.with_name(retired.name.removesuffix(".old" + PARTIAL))
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.rename(target)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not readable JSON ({error})") from None
    except OSError as error:
        raise RecordError(f"{path}: cannot be read ({error.strerror or error})") from None


def _read_json_as(path: Path, expected: type) -> Any:
    value = _read_json(path)
    if not isinstance(value, expected):
        kind = {dict: "object", list: "array"}[expected]
        raise RecordError(f"{path}: expected a JSON {kind}, got {type(value).__name__}")
    return value


# Reading a study for the summary, analysis and tagging -------------------------------------


def finite_number(value: Any) -> float | None:
    """A JSON value as a finite float; None for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _recorded(field: str, absent: Any = None) -> property:
    """A field of the study's record, as `absent` where an older study.json lacks it."""

    def value(study: Study) -> Any:
        found = getattr(study.record, field)
        return absent if found is None else found

    return property(value)


@dataclass(frozen=True)
class Study:
    """A study folder, read: its record, its data and its trials (in key order)."""

    record: StudyRecord
    dir: Path
    data: DatasetPaths
    trials: tuple[Trial, ...]

    name = _recorded("name")
    space = _recorded("space")
    metric = _recorded("metric")  # the selection metric: ranks trials, chose best epochs
    repeats = _recorded("repeats")
    study_id = _recorded("study_id")  # "": a study.json older than study ids
    tracking_uri = _recorded("tracking_uri", "")  # "": tracked nowhere
    experiment_id = _recorded("experiment_id", "")
    parent_run_id = _recorded("parent_run_id", "")
    searched = _recorded("searched", ())  # the config fields the search space varied
    scheduler = _recorded("scheduler", "")  # "": a study.json that does not say
    planned = _recorded("trials")  # the trials the space runs; None: a study.json that does not say

    @property
    def splits(self) -> tuple[int, ...]:
        """The splits its rows ran on; () for one split (the data's)."""
        return self.record.splits if len(self.record.splits) > 1 else ()

    @property
    def runs_on_splits(self) -> tuple[int, ...]:
        """The splits its trials ran on: its `splits`, else its data's split alone."""
        return self.splits or (self.data.split,)

    @property
    def draws(self) -> tuple[str, ...]:
        """The draw fields its trials vary: seed (repeats > 1), split (several splits)."""
        return varied_draws(self.repeats, len(self.runs_on_splits))

    def labels(self, part: str, split: int | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """The labels of `part` that the trials on `split` (default: the data's) were scored
        on, and the tags."""
        other = split is not None and split != self.data.split
        return read_labels(self.dir, part, split if other else None)

    @property
    def selection(self) -> Metric:
        """The metric that ranks the trials (and chose their best epochs)."""
        return selection_metric(self.metric, str(self.dir / STUDY_FILE))


def _dataset(study_file: Path, data: dict[str, Any]) -> DatasetPaths:
    """The study's data as paths to read (an analysis reads its labels and tracks)."""
    if any(key not in data for key in DATA_KEYS):
        raise ValueError(f"{study_file}: 'data' must be an object with keys {', '.join(DATA_KEYS)}")
    try:
        return DatasetPaths(
            data["metadata"],
            data["melspecs"],
            int(data["split"]),
            data["subset"],
            store=data.get("store"),  # None: windows read from the melspec files
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{study_file}: bad 'data': {error}") from None


def resolve_study(study: str | Path, results_root: str | Path) -> Path:
    """The folder of ``study``: a study folder as given, else ``results_root/study`` by name.

    A name is looked up under the results root (the study driver's storage);
    neither existing is a ValueError naming both places.
    """
    given = Path(study)
    if (given / STUDY_FILE).is_file():
        return given
    by_name = Path(results_root) / str(study)
    if (by_name / STUDY_FILE).is_file():
        return by_name
    raise ValueError(
        f"study {str(study)!r} not found: neither {given} nor {by_name} is a study folder "
        f"(a folder with a study.json); give a study folder or a study name under --results"
    )


def load_study(study_dir: str | Path, require_results: bool = True) -> Study:
    """Read a study folder; refuses a folder that is not a study or has no usable trial yet.

    `require_results=False` accepts a study none of whose trials left predictions
    (all failed, say), for a driver that lists what happened.
    """
    folder = Path(study_dir)
    record = read_study(folder)
    if record is None:
        raise ValueError(f"{folder} is not a study folder (no {STUDY_FILE} in it)")
    data = _dataset(folder / STUDY_FILE, record.data)
    trials = tuple(_read_listed(folder, data.split))
    if not trials:
        raise ValueError(f"study {folder} has no trials yet ({folder / TRIALS} is empty or absent)")
    if require_results and not any(trial.has_predictions for trial in trials):
        ended = all(trial.end_state is not None for trial in trials)
        raise ValueError(
            f"study {folder}: none of its {len(trials)} trial(s) has validation and test "
            + (
                "predictions: every one ended without results (see each trial's end state)"
                if ended
                else "predictions yet (unfinished)"
            )
        )
    return Study(record, folder, data, trials)


def ranked_trials(study: Study) -> list[Trial]:
    """Trials with predictions and a validation score of the study's selection metric, best
    first (ties: by key)."""
    key = study.selection.validation

    def score(trial: Trial) -> float | None:
        return finite_number(trial.metrics.get(key))

    ranked = [t for t in study.trials if t.has_predictions and score(t) is not None]
    if not ranked:
        raise ValueError(
            f"study {study.dir}: no trial has predictions and a finite {key} to rank by"
        )
    return sorted(ranked, key=lambda t: (-score(t), t.key))


def finished_trials(study: Study) -> list[Trial]:
    """Ranked trials (best first) that ended in one of FINISHED_STATES, on the study's own
    split (its data's: the first of a space's `splits`).

    These are the models a fusion may use and the pool the best single model
    comes from: a trial still running or ended in error is left out even if
    it saved predictions, and so is one on another split, whose validation
    and test tracks are others (its row's results count it).
    """
    return [
        trial
        for trial in ranked_trials(study)
        if trial.end_state in FINISHED_STATES and trial.config["split"] == study.data.split
    ]


def check_finished(study: Study) -> None:
    """Refuse a study some of whose trials have not ended (no end state in metrics.json) or
    not begun (fewer trial folders than the space runs)."""
    running = [trial.key for trial in study.trials if trial.end_state is None]
    unstarted = (study.planned or 0) - len(study.trials)
    if running or unstarted > 0:
        problems = [f"trial(s) {', '.join(running)} have no end state"] if running else []
        if unstarted > 0:
            problems.append(
                f"{unstarted} of the {study.planned} trials its space runs have not started"
            )
        raise ValueError(
            f"study {study.dir} is unfinished: {'; '.join(problems)} (no metrics.json with an "
            f"end_state in {study.dir / 'trials'}/<id>); let the study finish, or resume it "
            f"with study/run.py --resume"
        )
