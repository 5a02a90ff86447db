"""The "After a study" commands (README.md or docs/), run as written on a study just made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.evaluate import evaluate_files
from mer_models.data.splits import load_split
from study_folder.records import GROUNDTRUTH_FILES, TAGS_FILE, load_study
from tests.analysis.conftest import copy_study

REPO = Path(__file__).resolve().parents[1]
HEADING = "\n## After a study\n"


def after_a_study_section() -> str:
    """The one "After a study" section of README.md and docs/*.md, wherever it lives."""
    found = [
        path
        for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        if HEADING in "\n" + path.read_text()
    ]
    assert len(found) == 1, f"one '## After a study' section expected, found in {found}"
    text = "\n" + found[0].read_text()
    return text.split(HEADING, 1)[1].split("\n## ", 1)[0]


def after_a_study_commands() -> list[str]:
    """The commands of the "After a study" bash block, continuation lines joined."""
    block = re.search(r"```bash\n(.*?)```", after_a_study_section(), re.DOTALL).group(1)
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_the_after_a_study_commands_are_found():
    commands = after_a_study_commands()
    assert len(commands) == 5 and all(c.startswith("python -m analysis ") for c in commands)


@pytest.mark.slow
def test_the_study_folder_holds_its_groundtruth(smoke_study):
    study = load_study(smoke_study.dir)
    for part, name in GROUNDTRUTH_FILES.items():
        saved = np.load(smoke_study.dir / name)
        assert saved.dtype == bool
        assert np.array_equal(saved, load_split(study.data, part).labels)
    tags = (smoke_study.dir / TAGS_FILE).read_text().splitlines()
    assert tags == list(load_split(study.data, "test").tags)
    # A trial's predictions evaluate against it to the scores the trial logged.
    trial = study.trials[0]
    metrics = evaluate_files(
        smoke_study.dir / GROUNDTRUTH_FILES["test"], trial.test_predictions, None
    )
    assert metrics["ROC-AUC-macro"] == pytest.approx(trial.metrics["test_roc_auc"], abs=1e-6)


@pytest.mark.slow
def test_the_readme_commands_run_as_written(smoke_study, tmp_path):
    commands = after_a_study_commands()
    assert len(commands) == 5 and all(c.startswith("python -m analysis ") for c in commands)
    copy_study(smoke_study.dir, tmp_path / "ray_results" / "table1")
    python = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{python}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    study = tmp_path / "ray_results" / "table1"
    # `fuse` redid the report: it lists every fusion made so far.
    report = (study / "report" / "report.md").read_text()
    for name in ("top2", "top3", "greedy"):
        assert f"| fusion {name} (" in report
    # `evaluate` printed the metrics of the top-3 fusion, and fuse-files tested its fusion
    # against the best single trial, as `fuse` does.
    top3 = json.loads((study / "fusions" / "top3" / "metrics.json").read_text())
    assert "fusion - best single ROC-AUC-macro\t" in outputs[1]  # fuse prints the paired test
    assert f"ROC-AUC-macro\t{top3['ROC-AUC-macro']:.6f}" in outputs[3]
    fused = json.loads((tmp_path / "fused" / "metrics.json").read_text())
    trial_ids = {p.name for p in (study / "trials").iterdir()}
    assert fused["best_single_member"]["name"] in trial_ids
    assert set(fused["members"]) <= trial_ids
    assert set(fused["paired_bootstrap_vs_best_single"]) == set(
        top3["paired_bootstrap_vs_best_single"]
    )
