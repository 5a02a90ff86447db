"""A study's records: what it is and what each of its trials is, ran and ended as.

The one module that writes and reads a study folder: the driver and the
recorder write through it, a resume continues from it, and the summary,
analysis and tagging read it (`load_study`). The records are the truth a
resume continues from; Ray's saved state is never read back (it is pickled:
loading it would run whatever a file holds). Layout in the study folder::

    study.json                  the study: space (path and text), budget, scheduler,
                                selection metric, data, stores, planned trial count,
                                seeds per row (repeats) (StudyRecord)
    trials/<key>/config.json    a trial's whole TrainConfig, written when Ray creates it
    trials/<key>/metrics.json   its end: best-epoch metrics, epochs_run, end_state, ...
    trials/<key>/history.json   its epochs
    trials/<key>/{validation,test}_predictions.npy   float32, split rows x tags
    trials/<key>/best_model.pt  the best epoch's weights, config, tags, band_stats
    trials/<key>.partial/       a trial's results being written (replaced whole)
    {validation,test}_groundtruth.npy, tags.txt   the labels the trials were scored on
                                (bool, split rows x tag columns), and the tags
    split-<N>/                  the same for each other split of a space's `splits`
                                (the files above: the study's first split, its data's)
    fusions/<name>/             a fusion (analysis.fusion.FUSION_FILES)

A trial's key is the Ray trial id it was first created with; a resumed trial
keeps it (it travels in the trial's config), so its folder, checkpoint store
and MLflow run stay its own. Every file is written whole or not at all
(`mer_models.files`), with the umask's permissions.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from mer_models.config import TrainConfig
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

STUDY_FILE = "study.json"
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
# What a reader needs of study.json (a resume needs all of StudyRecord).
STUDY_KEYS = ("name", "space", "data")
# MLflow coordinates: absent or null in a study run without tracking (or, for the study id,
# in a study.json older than it); read as "".
TRACKING_KEYS = ("tracking_uri", "experiment_id", "parent_run_id", "study_id")
DATA_KEYS = ("metadata", "melspecs", "split", "subset")


class RecordError(ValueError):
    """A record that cannot be read as written; the message names the file and key."""


@dataclass(frozen=True)
class StudyRecord:
    """`study.json`: what a resume continues with, whatever flags it is given."""

    name: str
    space: str  # the space file the study began with
    space_yaml: str  # its text then (the file may change later)
    budget: str
    scheduler: str
    searched: tuple[str, ...]  # the fields the space varies
    trials: int  # how many trials the space plans
    data: dict[str, Any]  # DatasetPaths.to_dict()
    tracking_uri: str
    ray_storage: str | None = None  # a cloud URI for the checkpoints; None: the study folder
    metric: str = DEFAULT_SELECTION  # what chose trials, best epochs and the registered model
    experiment_id: str | None = None
    parent_run_id: str | None = None
    repeats: int = 1  # seeds per row (0..repeats-1); a study.json without it: one
    splits: tuple[int, ...] = ()  # the splits each row runs on; (): the data's split alone
    # Made at the claim: its MLflow runs are found by it, never by the name alone (a name may
    # be used again in one store). "": a study.json older than it (its runs found by name).
    study_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "searched": list(self.searched), "splits": list(self.splits)}


_STUDY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "space": (str,),
    "space_yaml": (str,),
    "budget": (str,),
    "scheduler": (str,),
    "searched": (list,),
    "trials": (int,),
    "data": (dict,),
    "tracking_uri": (str,),
    "ray_storage": (str, type(None)),
    "metric": (str,),
    "experiment_id": (str, type(None)),
    "parent_run_id": (str, type(None)),
    "repeats": (int,),
    "splits": (list,),
    "study_id": (str,),
}
_OPTIONAL = {
    "ray_storage",
    "experiment_id",
    "parent_run_id",
    "metric",
    "repeats",
    "splits",
    "study_id",
}


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
    for key, types in _STUDY_TYPES.items():
        if key not in values and key in _OPTIONAL:
            continue
        if key not in values:
            raise RecordError(f"{path}: no '{key}'; the file is damaged or not a study record")
        value = values[key]
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecordError(f"{path}: '{key}' should be {expected}, got {value!r:.80}")
    known = {f.name for f in fields(StudyRecord)}
    record = {key: value for key, value in values.items() if key in known}
    record["searched"] = tuple(record["searched"])
    record["splits"] = tuple(record.get("splits") or ())
    return StudyRecord(**record)


def write_study(study_dir: Path, record: StudyRecord) -> None:
    atomic_write_text(Path(study_dir) / STUDY_FILE, json.dumps(record.to_dict(), indent=2))


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
class TrialRecord:
    """One trial as the study recorded it: its config, and once it ended, its results."""

    key: str
    config: dict[str, Any]  # the whole TrainConfig, as it trains
    metrics: dict[str, Any] | None = None  # None: not ended
    history: list[dict[str, Any]] | None = None

    @property
    def end_state(self) -> str | None:
        return None if self.metrics is None else self.metrics.get("end_state")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a trial is, whatever resources it runs with."""
    return {key: value for key, value in config.items() if key not in RESOURCE_FIELDS}


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


def read_trials(study_dir: Path) -> list[TrialRecord]:
    """Every trial the study listed, in the order Ray created them (their keys' order).

    A config that is not a valid TrainConfig is a RecordError (a resume would
    otherwise train something the study never planned). Results that do not
    read are treated as not written: the trial is recorded again when it ends.
    """
    root = Path(study_dir) / TRIALS
    if not root.is_dir():
        return []
    study = read_study(study_dir)
    # A config written before trials recorded their split trained on the study's.
    split = int(study.data.get("split", 0)) if study is not None else 0
    found = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or PARTIAL in folder.name:
            continue
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            continue  # listed, then killed before its config landed: never trained
        config = _read_json(config_path)
        if not isinstance(config, dict):
            raise RecordError(f"{config_path}: expected a JSON object of config fields")
        config.setdefault("split", split)
        try:
            config = TrainConfig.from_dict(config, source=str(config_path)).to_dict()
        except ValueError as error:
            raise RecordError(str(error)) from None
        metrics = history = None
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
            history = json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8"))
            if not isinstance(metrics, dict) or "end_state" not in metrics:
                raise ValueError("no end_state")
            if not isinstance(history, list):
                raise ValueError("history is not a list")
        except (OSError, ValueError, UnicodeDecodeError):
            metrics = history = None
        found.append(TrialRecord(folder.name, config, metrics, history))
    return found


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


# Reading a study for the summary, analysis and tagging -------------------------------------


def finite_number(value: Any) -> float | None:
    """A JSON value as a finite float; None for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Trial:
    """One trial's folder, read."""

    id: str
    dir: Path
    config: dict[str, Any]
    history: tuple[dict[str, Any], ...]
    metrics: dict[str, Any]
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
            raise ValueError(f"trial {self.id} has no {part} predictions in {self.dir}")
        return load_npy(path, f"{part} predictions of trial {self.id}")


@dataclass(frozen=True)
class Study:
    """A study folder: its description and its trials (sorted by id)."""

    name: str
    dir: Path
    space: str
    data: DatasetPaths
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: tuple[Trial, ...]
    study_id: str = ""  # "": a study.json older than study ids
    searched: tuple[str, ...] = ()  # the config fields the search space varied
    planned: int | None = None  # the trials the space runs; None in a study.json that does not say
    scheduler: str = ""  # asha or fifo; "" in a study.json that does not say
    metric: str = DEFAULT_SELECTION  # the selection metric: ranks trials, chose best epochs
    repeats: int = 1  # seeds per row; 1 in a study.json that does not say
    splits: tuple[int, ...] = ()  # the splits its rows ran on; () in a study.json without them

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


def _read_json_as(path: Path, expected: type) -> Any:
    value = _read_json(path)
    if not isinstance(value, expected):
        kind = {dict: "object", list: "array"}[expected]
        raise RecordError(f"{path}: expected a JSON {kind}, got {type(value).__name__}")
    return value


def _read_trial(folder: Path, split: int) -> Trial:
    """`split`: the study's, for a config written before trials recorded their own."""
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ValueError(f"trial folder {folder} has no {CONFIG_FILE}")
    history_file, metrics_file = folder / HISTORY_FILE, folder / METRICS_FILE
    history = _read_json_as(history_file, list) if history_file.is_file() else []
    for number, entry in enumerate(history, start=1):
        if not isinstance(entry, dict):
            raise ValueError(f"{history_file}: entry {number} is not an object")
    predictions = {
        part: folder / name if (folder / name).is_file() else None
        for part, name in PREDICTION_FILES.items()
    }
    return Trial(
        id=folder.name,
        dir=folder,
        config={"split": split, **_read_json_as(config_file, dict)},
        history=tuple(history),
        metrics=_read_json_as(metrics_file, dict) if metrics_file.is_file() else {},
        validation_predictions=predictions["validation"],
        test_predictions=predictions["test"],
    )


def _read_description(study_file: Path) -> dict[str, Any]:
    description = _read_json_as(study_file, dict)
    missing = [key for key in STUDY_KEYS if key not in description]
    if missing:
        raise ValueError(f"{study_file}: missing key(s) {', '.join(missing)}")
    data = description["data"]
    if not isinstance(data, dict) or any(key not in data for key in DATA_KEYS):
        raise ValueError(f"{study_file}: 'data' must be an object with keys {', '.join(DATA_KEYS)}")
    return description


def _optional_text(value: Any) -> str:
    return "" if value is None else str(value)


def _repeats(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _splits(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) < 2:
        return ()  # one split: the data's
    return tuple(int(n) for n in value if isinstance(n, int) and not isinstance(n, bool))


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
    study_file = folder / STUDY_FILE
    if not folder.is_dir() or not study_file.is_file():
        raise ValueError(f"{folder} is not a study folder (no {STUDY_FILE} in it)")
    description = _read_description(study_file)
    data = description["data"]
    try:
        paths = DatasetPaths(
            data["metadata"],
            data["melspecs"],
            int(data["split"]),
            data["subset"],
            store=data.get("store"),  # None: windows read from the melspec files
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{study_file}: bad 'data': {error}") from None
    trials_dir = folder / TRIALS
    trial_dirs = (
        sorted(p for p in trials_dir.iterdir() if p.is_dir() and PARTIAL not in p.name)
        if trials_dir.is_dir()
        else []
    )
    if not trial_dirs:
        raise ValueError(f"study {folder} has no trials yet ({trials_dir} is empty or absent)")
    trials = tuple(_read_trial(p, paths.split) for p in trial_dirs)
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
    return Study(
        name=str(description["name"]),
        dir=folder,
        space=str(description["space"]),
        data=paths,
        **{key: _optional_text(description.get(key)) for key in TRACKING_KEYS},
        trials=trials,
        searched=tuple(str(key) for key in description.get("searched") or ()),
        planned=description["trials"] if isinstance(description.get("trials"), int) else None,
        scheduler=_optional_text(description.get("scheduler")),
        metric=str(description.get("metric") or DEFAULT_SELECTION),
        repeats=_repeats(description.get("repeats")),
        splits=_splits(description.get("splits")),
    )


def ranked_trials(study: Study) -> list[Trial]:
    """Trials with predictions and a validation score of the study's selection metric, best
    first (ties: by id)."""
    key = study.selection.validation

    def score(trial: Trial) -> float | None:
        return finite_number(trial.metrics.get(key))

    ranked = [t for t in study.trials if t.has_predictions and score(t) is not None]
    if not ranked:
        raise ValueError(
            f"study {study.dir}: no trial has predictions and a finite {key} to rank by"
        )
    return sorted(ranked, key=lambda t: (-score(t), t.id))


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
    running = [trial.id for trial in study.trials if trial.end_state is None]
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
