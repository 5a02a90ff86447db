"""`benchmarks/gpu_check.py` on a CPU: its help, its one-line refusal, and its guarded parts.

The check itself is for a machine with a GPU; here what does not need one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    return gpu_check


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_help_names_the_options():
    done = run_script("--help")
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--json" in done.stdout and "--max-seconds" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is CUDA missing")
def test_without_cuda_it_stops_with_one_line():
    done = run_script("--quick")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check.py: no CUDA GPU is visible")


def test_the_peak_is_looked_up_by_gpu_name(gpu_check):
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA GeForce RTX 4090") is None


def test_pytest_counts_read_the_summary_line(gpu_check):
    counts = gpu_check.pytest_counts(
        "F.s\nFAILED x\n1 failed, 12 passed, 2 skipped, 36 deselected in 40.12s"
    )
    assert counts == {"passed": 12, "failed": 1, "skipped": 2, "errors": 0}
    assert gpu_check.pytest_counts("=== 3 passed, 2 errors in 0.50s ===")["errors"] == 2
    with pytest.raises(ValueError, match="no pytest summary"):
        gpu_check.pytest_counts("ImportError: no module named torch")


def test_a_failing_part_is_a_null_figure_and_an_error_and_the_rest_runs(gpu_check, tmp_path):
    check = gpu_check.Check("NVIDIA H100 80GB HBM3", max_seconds=60, json_path=tmp_path / "f.json")
    assert check.figures["peak_bf16_tflops"] == 989.0

    def broken():
        raise RuntimeError("CUDA error: operation not permitted\nmore lines")

    assert check.run("broken", broken) is None
    assert check.run("fine", lambda: 3) == 3
    assert check.figures["errors"] == ["broken: RuntimeError: CUDA error: operation not permitted"]
    saved = json.loads((tmp_path / "f.json").read_text())
    assert set(saved["seconds"]) == {"broken", "fine"}
    assert set(saved["samples_per_second"]) == set(gpu_check.SPEEDS)
    late = gpu_check.Check("cpu", max_seconds=-1, json_path=None)
    assert late.run("late", lambda: 3) is None
    assert late.figures["errors"][0].startswith("late: not run:")


def test_without_pytest_the_tests_are_reported_not_run(gpu_check, monkeypatch):
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    check = gpu_check.Check("cpu", max_seconds=60, json_path=None)
    assert check.run("tests", lambda: gpu_check.run_cuda_tests(gpu_check.Settings(True))) is None
    assert (
        "pytest is not installed here, so the CUDA tests did not run" in check.figures["errors"][0]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="here the CUDA tests are all skipped")
def test_the_cuda_tests_are_found_and_skipped_here(gpu_check):
    """The real pytest run over `CUDA_TEST_FILES`: without a GPU every selected test skips,
    which the check reports as an error (on a GPU machine its pytest would see no GPU)."""
    with pytest.raises(RuntimeError, match=r"no CUDA test ran \(\d+ skipped\)") as failure:
        gpu_check.run_cuda_tests(gpu_check.Settings(True))
    skipped = int(str(failure.value).split("(")[1].split()[0])
    assert skipped >= 14
