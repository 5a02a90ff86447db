"""Shared fixtures: a tiny dataset in the MTG-Jamendo layout, and one real smoke study.

The smoke study runs `study/run.py --space smoke` once per session (a local
Ray cluster, MLflow in SQLite); its driver ends by fusing the top two
trials, writing the report and registering the best model. Tests that
write into it work on a copy (`tests.analysis.conftest.copy_study`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mer_models.data import DatasetPaths

RUN = Path(__file__).resolve().parents[1] / "study" / "run.py"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "mtg-jamendo"
TAGS = ("mood/theme---calm", "mood/theme---happy", "mood/theme---sad", "mood/theme---epic")
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def write_dataset(
    root: Path, frames: dict[str, list[int]], seed: int = 0, tags: tuple[str, ...] = TAGS
) -> DatasetPaths:
    """Write split-0 files and random (96, n) float32 dB arrays; `frames` per part."""
    rng = np.random.default_rng(seed)
    metadata, melspecs = root / "metadata", root / "melspecs"
    (metadata / "data" / "tags").mkdir(parents=True)
    (metadata / "data" / "tags" / "moodtheme_split.txt").write_text("\n".join(tags) + "\n")
    splits = metadata / "data" / "splits" / "split-0"
    splits.mkdir(parents=True)
    track = 100
    for part, lengths in frames.items():
        rows = [HEADER]
        for n in lengths:
            track += 1
            chosen = rng.choice(len(tags), size=rng.integers(1, 3), replace=False)
            relative = f"{track % 100:02d}/{track}"
            (melspecs / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(melspecs / f"{relative}.npy", rng.normal(-40, 10, (96, n)).astype(np.float32))
            row = [
                f"track_{track:07d}",
                "artist_000001",
                "album_000001",
                f"{relative}.mp3",
                f"{n / 46.875:.1f}",
                *(tags[i] for i in sorted(chosen)),
            ]
            rows.append("\t".join(row))
        (splits / f"autotagging_moodtheme-{part}.tsv").write_text("\n".join(rows) + "\n")
    return DatasetPaths(metadata, melspecs)


def write_swapped_split(paths: DatasetPaths, split: int) -> DatasetPaths:
    """Split `split` of the dataset: split-0's train part, its validation and test parts
    swapped (other tracks to validate and test on, as another official split has)."""
    source = paths.metadata / "data" / "splits" / "split-0"
    target = paths.metadata / "data" / "splits" / f"split-{split}"
    target.mkdir()
    names = {"train": "train", "validation": "test", "test": "validation"}
    for part, taken in names.items():
        text = (source / f"autotagging_{paths.subset}-{taken}.tsv").read_text()
        (target / f"autotagging_{paths.subset}-{part}.tsv").write_text(text)
    return dataclasses.replace(paths, split=split)


def run_data_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m mer_models.data check ARGS` as a user runs it, its cache under tmp_path."""
    return subprocess.run(
        [sys.executable, "-m", "mer_models.data", "check", *args],
        capture_output=True,
        text=True,
        env={"MER_MODELS_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> DatasetPaths:
    return write_dataset(
        tmp_path,
        {
            "train": [600, 700, 300, 1200, 800, 650],
            "validation": [550, 900, 400],
            "test": [700, 480, 1000],
        },
    )


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> DatasetPaths:
    """A 150-track synthetic dataset, generated once per test session."""
    from mer_models.data.synthetic import synthetic_paths, write_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "small"
    write_synthetic(root, tracks=150, seed=0)
    return synthetic_paths(root)


@dataclass(frozen=True)
class SmokeStudy:
    """A study run by the real driver: its folder, MLflow store and console output."""

    dir: Path
    tracking_uri: str
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def smoke_study(small_synthetic, tmp_path_factory) -> SmokeStudy:
    root = tmp_path_factory.mktemp("smoke-study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--space",
            "smoke",
            "--metadata",
            str(small_synthetic.metadata),
            "--melspecs",
            str(small_synthetic.melspecs),
            "--tracking-uri",
            uri,
            "--storage",
            str(root / "ray"),
        ],
        cwd=root,
        env={
            **os.environ,
            "MER_MODELS_CACHE": str(root / "cache"),
            "RAY_USAGE_STATS_ENABLED": "0",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SmokeStudy(root / "ray" / "smoke", uri, done.stdout, done.stderr)
