"""Shared fixtures: a tiny dataset in the MTG-Jamendo layout, written per test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_models.data import DatasetPaths

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
    from mer_models.synthetic import dataset_paths, write_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "small"
    write_synthetic(root, tracks=150, seed=0)
    return dataset_paths(root)
