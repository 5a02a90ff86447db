"""The console scripts of pyproject.toml: each names a command's `main` and answers --help."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_is_installed_as_declared(name):
    (installed,) = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    assert installed.value == SCRIPTS[name]


@pytest.mark.slow  # imports every command (Ray, MLflow, torch): seconds each
def test_each_script_names_a_main():
    for installed in entry_points(group="console_scripts"):
        if installed.name in SCRIPTS:
            assert callable(installed.load()), installed.name


@pytest.mark.slow
def test_a_script_runs_like_its_python_form():
    script = Path(sys.executable).parent / "mer-analysis"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "evaluate" in done.stdout
