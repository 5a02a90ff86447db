"""Study folders for the fuse and report tests: copies of the real smoke study, and small
hand-built ones.

The real study is the session's `smoke_study` (tests/conftest.py). Tests that
write into a study work on a copy (`copy_study`). Hand-built studies are for
unit checks of fusion arithmetic and bad input only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.__main__ import main
from mer_models.data import DatasetPaths
from mer_models.data.splits import load_split
from study_folder.records import GROUNDTRUTH_FILES, TAGS_FILE, write_groundtruth
from tests.conftest import write_dataset

TRACKING_KEYS = ("tracking_uri", "experiment_id", "parent_run_id")
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` as a real subprocess, from the repository root."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(capsys, *args: str | Path) -> tuple[int, str, str]:
    """The command line in this process (fast): exit code, stdout and stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:  # argparse usage errors
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def copy_study(source: Path, target: Path, tracking: bool = False) -> Path:
    """Copy a study's own files (not Ray's); without ``tracking``, study.json loses its MLflow
    coordinates so that nothing the copy does reaches the original study's MLflow runs."""
    target.mkdir(parents=True)
    for name in ("study.json", *GROUNDTRUTH_FILES.values(), TAGS_FILE):
        shutil.copy2(source / name, target / name)
    for name in ("trials", "fusions", "report"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
    if not tracking:
        description = json.loads((target / "study.json").read_text())
        for key in TRACKING_KEYS:
            description.pop(key, None)
        (target / "study.json").write_text(json.dumps(description))
    return target


def read_json(path: Path):
    return json.loads(path.read_text())


# Hand-built studies -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def labelled_dataset(tmp_path_factory) -> DatasetPaths:
    """40 validation and 40 test tracks over 4 tags, every tag with both classes in both."""
    root = tmp_path_factory.mktemp("labelled")
    paths = write_dataset(root, {"train": [20] * 4, "validation": [20] * 40, "test": [20] * 40})
    for part in ("validation", "test"):
        positives = load_split(paths, part).labels.sum(axis=0)
        assert (positives > 0).all() and (positives < 40).all()
    return paths


def member_scores(labels: np.ndarray, seed: int, signal: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(labels.shape) + signal * labels).astype(np.float32)


def write_hand_trial(
    study: Path,
    trial_id: str,
    data: DatasetPaths,
    signal: float,
    seed: int,
    end_state: str = "finished",
) -> None:
    """A trial folder as the driver writes it, with scores that separate the labels by ``signal``."""
    folder = study / "trials" / trial_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"model": "crnn", "cbam": seed % 2 == 0, "cell": "gru", "units": 16})
    )
    metrics = {"end_state": end_state, "epochs_run": 2, "best_epoch": 2}
    for part in ("validation", "test"):
        labels = load_split(data, part).labels
        scores = member_scores(labels, seed * 7 + len(part), signal)
        np.save(folder / f"{part}_predictions.npy", scores)
        metrics[f"{part}_roc_auc"] = float(roc_auc_score(labels, scores, average="macro"))
    (folder / "history.json").write_text(
        json.dumps([{"epoch": 1, "val_roc_auc": 0.5}, {"epoch": 2, "val_roc_auc": 0.6}])
    )
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def hand_study(tmp_path, labelled_dataset) -> Path:
    """A finished study of four hand-built trials (signals 0.1 to 0.7), without MLflow."""
    folder = tmp_path / "hand"
    folder.mkdir()
    description = {"name": "hand", "space": "hand.yaml", "data": labelled_dataset.to_dict()}
    (folder / "study.json").write_text(json.dumps(description))
    write_groundtruth(folder, labelled_dataset)  # as the driver does when a study starts
    for i, signal in enumerate([0.3, 0.7, 0.1, 0.5]):
        write_hand_trial(folder, f"t{i}", labelled_dataset, signal, seed=i)
    return folder
