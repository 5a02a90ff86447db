"""A study's own records: what it is and what each of its trials is, ran and ended as.

The records are the truth a resume continues from; Ray's saved state is never
read back (it is pickled: loading it would run whatever a file holds). Layout
in the study folder::

    study.json                  the study: space (path and text), budget, scheduler,
                                selection metric, data, stores, planned trial count
                                (StudyRecord)
    trials/<key>/config.json    a trial's whole TrainConfig, written when Ray creates it
    trials/<key>/metrics.json   its end: best-epoch metrics, epochs_run, end_state, ...
    trials/<key>/history.json   its epochs
    trials/<key>.partial/       a trial's results being written (replaced whole)

A trial's key is the Ray trial id it was first created with; a resumed trial
keeps it (it travels in the trial's config), so its folder, checkpoint store
and MLflow run stay its own. Every file is written whole or not at all
(`mer_models.files`), with the umask's permissions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mer_models.config import TrainConfig
from mer_models.files import PARTIAL, atomic_write_text
from mer_models.training.metrics import DEFAULT_SELECTION

STUDY_FILE = "study.json"
TRIALS = "trials"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
# Config fields that follow the resources a run is given, not what the trial is.
RESOURCE_FIELDS = ("threads", "workers")


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "searched": list(self.searched)}


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
}
_OPTIONAL = {"ray_storage", "experiment_id", "parent_run_id", "metric"}


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
    return StudyRecord(**record)


def write_study(study_dir: Path, record: StudyRecord) -> None:
    atomic_write_text(Path(study_dir) / STUDY_FILE, json.dumps(record.to_dict(), indent=2))


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
