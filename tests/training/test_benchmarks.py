"""The multi-trial trainer benchmarks run at toy size on a CPU (they are meant for a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mer_models.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "MER_MODELS_CACHE": str(cache), "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_gpu_share_trains_several_trials_at_once(tmp_path):
    result = run(
        "gpu_share.py", "--trials", "2", "--size", "toy", "--tracks", "60", "--epochs", "2",
        cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["device"] == "cpu" and figures["trials"] == 2
    trial_rates = [float(line.split(": ")[1].split()[0]) for line in lines if line[:5] == "trial"]
    assert len(trial_rates) == 2 and min(trial_rates) > 0
    assert figures["total_samples_per_second"] == pytest.approx(sum(trial_rates), abs=0.2)
    assert figures["per_trial_samples_per_second"] == pytest.approx(sum(trial_rates) / 2, abs=0.2)
    assert figures["solo_samples_per_second"] > 0


@pytest.mark.slow
def test_table1_projection_shows_its_arithmetic(tmp_path):
    result = run(
        "table1_projection.py", "--scale", "0.005", "--budget", "quick", "--rows", "2",
        "--epochs", "2", cache=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["split_sizes"] == {"train": 50, "validation": 20, "test": 22}
    rows = figures["rows"]
    assert len(rows) == 2 and all(row["epochs_run"] == 2 for row in rows.values())
    for row in rows.values():
        expected = figures["measured_seconds"] + 98 * row["later_epoch_seconds"]
        assert row["projected_seconds"] == pytest.approx(expected, abs=1.0)
    assert figures["projected_study_seconds"] == max(r["projected_seconds"] for r in rows.values())


@pytest.mark.slow
def test_bad_arguments_stop_with_a_one_paragraph_error(tmp_path):
    result = run("gpu_share.py", "--trials", "1", "--size", "toy", "--tracks", "60",
                 "--epochs", "2", "--workers", "-1", cache=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == ("gpu_share.py: config field 'workers' must be >= 0, got -1")
    assert result.stdout.strip().splitlines()[-1].startswith("synthetic dataset")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure is CUDA missing")
def test_a_failing_trial_fails_the_run_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from concurrent_training import run_concurrently

    from mer_models.data.synthetic import synthetic_dataset

    paths = synthetic_dataset(tracks=60)
    config = TrainConfig(width=4, window=64, batch_size=8, cbam=False, units=16, workers=0)
    with pytest.raises(RuntimeError, match="trial a failed") as failure:
        run_concurrently({"a": config, "b": config}, paths, tmp_path / "runs", "cuda")
    assert "trial b failed" in str(failure.value)  # every trial's error is reported
    assert "CUDA" in str(failure.value)
