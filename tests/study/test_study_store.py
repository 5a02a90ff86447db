"""A smoke study (real Ray, real MLflow store) reading its windows from a packed store."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from mer_models.data.store import pack
from mer_models.data.synthetic import MARKER
from tests.study.processes import RUN, run_driver

pytestmark = pytest.mark.slow


def test_a_study_trains_from_a_packed_store(small_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    pack(small_synthetic, store, progress=False)
    # Metadata only: without a melspec folder the trials can read nothing but the store.
    data = tmp_path / "data"
    shutil.copytree(small_synthetic.metadata, data / "metadata")
    shutil.copy(small_synthetic.metadata.parent / MARKER, data / MARKER)
    space = tmp_path / "stored.yaml"  # two short trials: enough for a report and a fusion
    space.write_text(
        "searcher: grid\nbudget: quick\nscheduler: {type: fifo}\n"
        "parameters: {max_epochs: 2, width: 4, window: 64, batch_size: 16, seed: 0}\n"
        "configs:\n  - {cbam: true, cell: gru, units: 8}\n  - {cbam: false, cell: lstm, units: 8}\n"
    )
    command = [
        sys.executable,
        str(RUN),
        "--space",
        str(space),
        "--metadata",
        str(data / "metadata"),
        "--store",
        str(store),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    done = run_driver(command, tmp_path)
    assert f"windows from the packed store {store}" in done.stdout
    study_dir = tmp_path / "ray_results" / "stored"
    recorded = json.loads((study_dir / "study.json").read_text())["data"]
    assert recorded["store"] == str(store) and recorded["melspecs"] is None
    trials = sorted((study_dir / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["epochs_run"] >= 1 and 0 <= metrics["test_roc_auc"] <= 1
        assert np.load(trial / "test_predictions.npy").shape[1] == 56
    assert (study_dir / "report" / "report.md").is_file()
    assert "packed window store" in (study_dir / "report" / "report.md").read_text()
