"""Tiny trained runs (real `train` on the small synthetic set), a study made of them, audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mer_models.config import TrainConfig
from mer_models.data.scaling import BandStats
from mer_models.data.windows import PAD_DB
from mer_models.models import build_model
from mer_models.training.trainer import train
from study_folder.records import write_groundtruth
from tests.audio.conftest import chirp_and_tones, write_audio

TINY = TrainConfig(width=8, units=16, window=128, batch_size=16, max_epochs=2, workers=0, threads=1)


@pytest.fixture(scope="session")
def runs(small_synthetic, tmp_path_factory) -> dict[str, Path]:
    """Two training run folders (seeds 0 and 1) of a tiny CRNN, a few seconds each."""
    root = tmp_path_factory.mktemp("tag-runs")
    folders = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MER_MODELS_CACHE", str(root / "cache"))
        for seed in (0, 1):
            folders[f"seed{seed}"] = root / f"seed{seed}"
            train(TINY.replace(seed=seed), small_synthetic, folders[f"seed{seed}"])
    return folders


@pytest.fixture(scope="session")
def study(runs, small_synthetic, tmp_path_factory) -> Path:
    """A study folder in the driver's layout whose trials are the two runs, fused top 2."""
    from analysis.fuse_study import fuse_study

    root = tmp_path_factory.mktemp("tag-study") / "tiny"
    data = {**small_synthetic.to_dict()}
    (root / "trials").mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"name": "tiny", "space": "x", "data": data}))
    for name, folder in runs.items():
        trial = root / "trials" / name
        trial.mkdir()
        for file in (
            "best_model.pt",
            "config.json",
            "history.json",
            "metrics.json",
            "validation_predictions.npy",
            "test_predictions.npy",
        ):
            shutil.copyfile(folder / file, trial / file)
    write_groundtruth(root, small_synthetic)
    fuse_study(root, top_k=2, track=False, resamples=20)
    return root


@pytest.fixture(scope="session")
def songs(tmp_path_factory) -> dict[str, Path]:
    """An 8 s song (three 128-frame windows), a 1 s one, a broken and an empty file."""
    root = tmp_path_factory.mktemp("songs")
    broken = root / "broken.mp3"
    broken.write_bytes(b"ID3 and nothing else")
    (root / "empty.wav").write_bytes(b"")
    return {
        "song": write_audio(root / "song.wav", chirp_and_tones(seconds=8.0)),
        "short": write_audio(root / "short.wav", chirp_and_tones(seconds=1.0)),
        "broken": broken,
        "empty": root / "empty.wav",
    }


def expected_probabilities(run: Path, melspec: np.ndarray, starts: list[int]) -> np.ndarray:
    """Mean sigmoid over the given windows, computed from best_model.pt by hand."""
    saved = torch.load(run / "best_model.pt", weights_only=True)
    config = TrainConfig.from_dict(saved["config"])
    model = build_model(config, n_tags=len(saved["tags"]))
    model.load_state_dict(saved["model"])
    model.eval()
    stats = BandStats.from_dict(saved["band_stats"])
    windows = []
    for start in starts:
        window = np.full((96, config.window), PAD_DB, dtype=np.float32)
        part = melspec[:, start : start + config.window]
        window[:, : part.shape[1]] = part
        windows.append((window - stats.mean[:, None]) / stats.std[:, None])
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack(windows)[:, None]))
    return torch.sigmoid(logits).mean(dim=0).double().numpy()
