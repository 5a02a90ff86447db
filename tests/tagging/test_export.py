"""The exported program loads with PyTorch alone and gives the PyTorch model's probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from mer_models.config import TrainConfig
from mer_models.data.scaling import BandStats
from mer_models.models import build_model
from mer_models.training.thresholds import read_thresholds
from tagging.export import Probabilities, export_model, main
from tagging.tagger import ModelSourceError, Tagger, TrainedModel, load_tagger

pytestmark = pytest.mark.slow
TOLERANCE = 1e-6  # absolute, on probabilities; the runs here agree exactly

# Loads the program in a fresh interpreter in which importing the project fails.
LOADER = """
import json, sys
import numpy as np, torch
sys.modules["mer_models"] = None
extra = {"metadata.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra).module()
windows = torch.from_numpy(np.load(sys.argv[2]))
np.save(sys.argv[3], program(windows).detach().numpy())
print(json.dumps(json.loads(extra["metadata.json"])["tags"]))
"""


def _windows(window: int, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-60, 20, (batch, 1, 96, window)).astype(np.float32)


def test_exported_run_gives_the_same_probabilities_without_the_project(runs, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    assert main([str(runs["seed0"]), "--out", str(out)]) == 0
    assert f"{out}: run {runs['seed0']}, 56 tags" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:  # its root folder is named after the file
        assert {name.split("/")[0] for name in archive.namelist()} == {"model"}
    assert list(tmp_path.glob("*.partial*")) == []
    tagger = load_tagger(runs["seed0"])
    reference = Probabilities(tagger.members[0]).eval()
    windows = _windows(tagger.members[0].config.window, 5)
    np.save(tmp_path / "windows.npy", windows)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADER,
            str(out),
            *(str(tmp_path / n) for n in ("windows.npy", "p.npy")),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == list(tagger.tags)
    with torch.no_grad():
        expected = reference(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=TOLERANCE, rtol=0)
    extra = {"metadata.json": ""}
    program = torch.export.load(out, extra_files=extra).module()
    one = torch.from_numpy(windows[:1])
    with torch.no_grad():
        np.testing.assert_allclose(program(one), reference(one), atol=TOLERANCE, rtol=0)
    metadata = json.loads(extra["metadata.json"])
    assert metadata["thresholds"] == read_thresholds(runs["seed0"] / "thresholds.txt")[1].tolist()
    assert metadata["window"] == 128


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(width=4, units=8, layers=2, cell="lstm", window=64),
        TrainConfig(model="attention_cnn", width=4, window=64),
    ],
    ids=["lstm-2x8", "attention-cnn"],
)
def test_other_heads_export_exactly(config, tmp_path):
    torch.manual_seed(0)
    network = build_model(config, n_tags=5).eval()
    stats = BandStats(np.full(96, -50, np.float32), np.full(96, 15, np.float32))
    model = TrainedModel("m", network, config, tuple(f"t{i}" for i in range(5)), stats)
    tagger = Tagger("test model", (model,), (1.0,), model.tags, np.full(5, 0.5))
    program = torch.export.load(export_model(tagger, tmp_path / "m.pt2")).module()
    windows = torch.from_numpy(_windows(64, 3))
    with torch.no_grad():
        expected = Probabilities(model).eval()(windows)
        np.testing.assert_allclose(program(windows), expected, atol=TOLERANCE, rtol=0)


def test_fusions_and_onnx_are_refused(study, tmp_path, capsys):
    with pytest.raises(ModelSourceError, match="a fusion of 2 models"):
        export_model(load_tagger(study, fusion="top2"), tmp_path / "f.pt2")
    with pytest.raises(SystemExit):
        main([str(study), "--out", str(tmp_path / "m.onnx")])
    assert "not ONNX" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
