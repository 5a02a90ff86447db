"""Read a study's results folder, as the study driver writes it (for analysis and tagging).

Layout (the contract with the driver)::

    STUDY_DIR/study.json                      name, space, data, scheduler, metric (the
                                              selection metric), searched (the
                                              fields the space varies), trials (how many the
                                              space runs), and (absent or null without
                                              MLflow) tracking_uri, experiment_id,
                                              parent_run_id
    STUDY_DIR/{validation,test}_groundtruth.npy, tags.txt   the labels the trials were scored
                                              on (bool, split rows x tag columns), the tags
    STUDY_DIR/trials/<id>/config.json         flat TrainConfig fields
    STUDY_DIR/trials/<id>/history.json        per-epoch dicts (epoch, train_loss, val_roc_auc, ...)
    STUDY_DIR/trials/<id>/metrics.json        validation_/test_ roc_auc, pr_auc (macro), ...,
                                              best_epoch, epochs_run, end_state
    STUDY_DIR/trials/<id>/{validation,test}_predictions.npy   float32, split and tag order
    STUDY_DIR/trials/<id>/best_model.pt       the best epoch's weights, config, tags, band_stats
    STUDY_DIR/fusions/<name>/                 a fusion (analysis.fusion.FUSION_FILES)

A trial folder without metrics.json (or history.json) is read with empty
metrics or history, and one that errored before its first validation has
no predictions; both are read so a report can name them. A
``trials/<id>.partial`` folder is the driver's write in progress and is
skipped. Only trials with predictions and a validation score of the study's
selection metric are ranked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer_models.config import TrainConfig
from mer_models.data.splits import DatasetPaths, load_split
from mer_models.training.metrics import DEFAULT_SELECTION, Metric, selection_metric

STUDY_KEYS = ("name", "space", "data")
# MLflow coordinates: absent or null in a study run without tracking; read as "".
TRACKING_KEYS = ("tracking_uri", "experiment_id", "parent_run_id")
DATA_KEYS = ("metadata", "melspecs", "split", "subset")
PARTS = ("validation", "test")
# End states of a trial that trained to a best epoch (ASHA-stopped ones included): fusable models.
FINISHED_STATES = ("finished", "early_stopped", "asha_stopped")
# The driver writes a trial into trials/<id>.partial, then renames it: not a trial (yet).
STAGING_SUFFIX = ".partial"
# The labels a study was scored on, in split row and tag column order, beside study.json.
GROUNDTRUTH_FILES = {part: f"{part}_groundtruth.npy" for part in PARTS}
TAGS_FILE = "tags.txt"


def write_groundtruth(study_dir: Path, data: DatasetPaths) -> None:
    """Save the validation and test label matrices (bool) and the tag list into the study folder.

    With them a study's prediction files can be evaluated and fused
    (`python -m analysis evaluate`, `fuse-files`) without the dataset's split files.
    """
    for part, name in GROUNDTRUTH_FILES.items():
        split = load_split(data, part)
        staging = study_dir / f".{name}"
        with staging.open("wb") as handle:
            np.save(handle, split.labels.astype(bool))
        staging.replace(study_dir / name)
    (study_dir / TAGS_FILE).write_text("\n".join(split.tags) + "\n")


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
        """finished, early_stopped, asha_stopped or error; None while running."""
        return self.metrics.get("end_state")

    def train_config(self) -> TrainConfig:
        """The config as the typed TrainConfig (errors name the config file)."""
        return TrainConfig.from_dict(self.config, source=str(self.dir / "config.json"))

    def load_predictions(self, part: str) -> np.ndarray:
        """float32 (tracks, tags) scores of ``part``: validation or test."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
        path = self.validation_predictions if part == "validation" else self.test_predictions
        if path is None:
            raise ValueError(f"trial {self.id} has no {part} predictions in {self.dir}")
        return np.load(path, allow_pickle=False)


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
    searched: tuple[str, ...] = ()  # the config fields the search space varied
    planned: int | None = None  # the trials the space runs; None in a study.json that does not say
    scheduler: str = ""  # asha or fifo; "" in a study.json that does not say
    metric: str = DEFAULT_SELECTION  # the selection metric: ranks trials, chose best epochs

    @property
    def selection(self) -> Metric:
        """The metric that ranks the trials (and chose their best epochs)."""
        return selection_metric(self.metric, str(self.dir / "study.json"))


def _read_json(path: Path, expected: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, expected):
        raise ValueError(f"{path}: expected a JSON {expected.__name__}, got {type(value).__name__}")
    return value


def _read_trial(folder: Path) -> Trial:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"trial folder {folder} has no config.json")
    history_file, metrics_file = folder / "history.json", folder / "metrics.json"
    history = _read_json(history_file, list) if history_file.is_file() else []
    for number, entry in enumerate(history, start=1):
        if not isinstance(entry, dict):
            raise ValueError(f"{history_file}: entry {number} is not an object")
    predictions = {
        part: (folder / f"{part}_predictions.npy")
        if (folder / f"{part}_predictions.npy").is_file()
        else None
        for part in PARTS
    }
    return Trial(
        id=folder.name,
        dir=folder,
        config=_read_json(config_file, dict),
        history=tuple(history),
        metrics=_read_json(metrics_file, dict) if metrics_file.is_file() else {},
        validation_predictions=predictions["validation"],
        test_predictions=predictions["test"],
    )


def _read_description(study_file: Path) -> dict[str, Any]:
    description = _read_json(study_file, dict)
    missing = [key for key in STUDY_KEYS if key not in description]
    if missing:
        raise ValueError(f"{study_file}: missing key(s) {', '.join(missing)}")
    data = description["data"]
    if not isinstance(data, dict) or any(key not in data for key in DATA_KEYS):
        raise ValueError(f"{study_file}: 'data' must be an object with keys {', '.join(DATA_KEYS)}")
    return description


def _optional_text(value: Any) -> str:
    return "" if value is None else str(value)


def resolve_study(study: str | Path, results_root: str | Path) -> Path:
    """The folder of ``study``: a study folder as given, else ``results_root/study`` by name.

    A name is looked up under the results root (the study driver's storage);
    neither existing is a ValueError naming both places.
    """
    given = Path(study)
    if (given / "study.json").is_file():
        return given
    by_name = Path(results_root) / str(study)
    if (by_name / "study.json").is_file():
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
    study_file = folder / "study.json"
    if not folder.is_dir() or not study_file.is_file():
        raise ValueError(f"{folder} is not a study folder (no study.json in it)")
    description = _read_description(study_file)
    data = description["data"]
    try:
        paths = DatasetPaths(
            data["metadata"],
            data["melspecs"],
            int(data["split"]),
            data["subset"],
            store=data.get("store"),  # absent from studies that predate packed stores
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{study_file}: bad 'data': {error}") from None
    trials_dir = folder / "trials"
    trial_dirs = (
        sorted(p for p in trials_dir.iterdir() if p.is_dir() and p.suffix != STAGING_SUFFIX)
        if trials_dir.is_dir()
        else []
    )
    if not trial_dirs:
        raise ValueError(f"study {folder} has no trials yet ({trials_dir} is empty or absent)")
    trials = tuple(_read_trial(p) for p in trial_dirs)
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
    """Ranked trials (best first) that ended in one of FINISHED_STATES.

    These are the models a fusion may use and the pool the best single model
    comes from: a trial still running or ended in error is left out even if
    it saved predictions.
    """
    return [trial for trial in ranked_trials(study) if trial.end_state in FINISHED_STATES]


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
