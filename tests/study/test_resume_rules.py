"""What a driver refuses before it writes anything: bad schedulers, taken names, a resume
with flags that contradict the study's record. Real driver processes; no Ray is started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mer_models.data.splits import DatasetPaths
from study.claim import StudyClaimed, claim_new_study, claim_study

# Where no trial reads: the options only plan trials.
DATA = DatasetPaths("metadata", "melspecs")

RUN = Path(__file__).resolve().parents[2] / "study" / "run.py"
SPACE = """searcher: grid
budget: quick
scheduler: {type: asha, grace_period: 5}
parameters: {max_epochs: 3, width: 4}
"""


def driver(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_grace_period_beyond_the_epochs_is_refused_before_anything_is_written(tmp_path):
    space = tmp_path / "late.yaml"
    space.write_text(SPACE)
    done = driver(tmp_path, "--space", str(space))
    assert done.returncode == 2
    assert "grace_period 5" in done.stderr and "3 epochs" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.yaml"]  # no study, no store


def recorded_study(tmp_path: Path) -> Path:
    """A study folder as a driver leaves it (study.json), without running it."""
    study = tmp_path / "ray_results" / "ek1"
    study.mkdir(parents=True)
    smoke = RUN.parents[1] / "search_spaces" / "smoke.yaml"
    (study / "study.json").write_text(
        json.dumps(
            {
                "name": "ek1",
                "space": str(smoke),
                "space_yaml": smoke.read_text(),
                "budget": "quick",
                "scheduler": "asha",
                "searched": ["cbam", "cell", "units", "layers", "lr"],
                "trials": 4,
                "data": {
                    "metadata": "/data/m",
                    "melspecs": "/data/s",
                    "split": 0,
                    "subset": "moodtheme",
                    "store": None,
                },
                "tracking_uri": f"sqlite:///{tmp_path / 'first.db'}",
                "ray_storage": None,
            }
        )
    )
    return study


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--budget", "paper"], "--budget paper: it began with budget quick"),
        (["--space", "table1"], "--space table1: it began with"),
        (["--scheduler", "fifo"], "--scheduler fifo: it began with asha"),
        (["--tracking-uri", "sqlite:///other.db"], "--tracking-uri sqlite:///other.db"),
        (["--metadata", "/elsewhere", "--melspecs", "/data/s"], "--metadata/--melspecs"),
    ],
)
def test_a_resume_refuses_flags_that_contradict_the_study(tmp_path, flags, named):
    study = recorded_study(tmp_path)
    before = sorted(p.name for p in study.iterdir())
    done = driver(tmp_path, "--name", "ek1", "--resume", *flags)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "study.json" in done.stderr
    assert sorted(p.name for p in study.iterdir()) == before
    assert not (tmp_path / "first.db").exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{}", "missing key(s) name, space, data"),
        ("[1, 2]", "expected a JSON object"),
        ('{"name": "ek1"', "not readable JSON"),
        (None, "'trials' should be int"),
    ],
)
def test_a_damaged_study_record_is_refused_naming_the_file(tmp_path, text, named):
    study = recorded_study(tmp_path)
    record = study / "study.json"
    if text is None:  # a value of the wrong type
        text = json.dumps({**json.loads(record.read_text()), "trials": "four"})
    record.write_text(text)
    done = driver(tmp_path, "--name", "ek1", "--resume")
    assert done.returncode == 2, done.stderr
    assert str(record) in done.stderr and named in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one paragraph
    assert sorted(p.name for p in study.iterdir()) == ["study.json"]


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ("description: '{}'\nparameters: {{width: 4}}\n".format("x" * 20_001), "description"),
        (
            "searcher: grid\nparameters:\n"
            f"  lr: {{grid: [{', '.join(f'{i + 1}.0e-4' for i in range(200))}]}}\n"
            f"  width: {{grid: [{', '.join(map(str, range(4, 64)))}]}}\n",
            "plans 12,000 trials",
        ),
        ("# padding\n" * 120_000 + "parameters: {width: 4}\n", "1,048,576"),
    ],
    ids=["description", "trials", "size"],
)
def test_a_space_over_the_limits_is_refused_before_anything_is_claimed(tmp_path, space, named):
    path = tmp_path / "big.yaml"
    path.write_text(space)
    done = driver(tmp_path, "--space", str(path))
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and str(path) in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]  # nothing claimed


def _record(folder):
    (folder / "study.json").write_text("{}")


def test_a_name_is_claimed_once_with_its_record(tmp_path):
    study = tmp_path / "ray_results" / "ek1"
    lock = claim_new_study(study, _record)
    assert sorted(p.name for p in study.iterdir()) == [".lock", "study.json"]
    with pytest.raises(StudyClaimed, match="a study named ek1 exists"):
        claim_new_study(study, _record)
    assert [p.name for p in study.parent.iterdir()] == ["ek1"]  # no half-built folder left
    other = subprocess.run(  # another process resuming it while this one holds it
        [
            sys.executable,
            "-c",
            f"from study.claim import claim_study; from pathlib import Path;"
            f" claim_study(Path({str(study)!r}))",
        ],
        capture_output=True,
        text=True,
        cwd=RUN.parents[1],
    )
    assert other.returncode == 1
    assert "is running in another driver" in other.stderr
    lock.close()
    claim_study(study).close()  # free again once the holder let go


@pytest.mark.slow
def test_bad_places_are_refused_in_seconds_with_nothing_created(tiny_dataset, tmp_path):
    import socket
    import time

    data = ["--metadata", str(tiny_dataset.metadata), "--melspecs", str(tiny_dataset.melspecs)]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = driver(tmp_path, "--space", "smoke", *data, "--storage", str(blocker / "results"))
    assert done.returncode == 2
    assert f"--storage: {blocker / 'results'} cannot be a folder: {blocker} is a file" in (
        done.stderr
    )
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = driver(tmp_path, "--space", "smoke", *data, "--tracking-uri", f"http://127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"--tracking-uri http://127.0.0.1:{port}: no MLflow tracking server" in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_recorded_trial_the_space_does_not_plan_is_refused_naming_both(tmp_path):
    from study.driver import StudyOptions, planned_trials
    from study_folder.search_space import load_space

    study = recorded_study(tmp_path)
    space = load_space("smoke")
    planned = planned_trials(StudyOptions(space, "ek1", tmp_path, DATA, "sqlite:///x", "quick"))
    (study / "trials" / "ek1_00000").mkdir(parents=True)
    (study / "trials" / "ek1_00000" / "config.json").write_text(json.dumps(planned[0]))
    edited = study / "trials" / "ek1_00001" / "config.json"
    edited.parent.mkdir()
    edited.write_text(json.dumps({**planned[1], "lr": 0.5}))
    done = driver(tmp_path, "--name", "ek1", "--resume")
    assert done.returncode == 2, done.stderr
    assert str(edited) in done.stderr and "smoke.yaml" in done.stderr
    assert "lr 0.5 (planned: 0.003)" in done.stderr
    assert "Traceback" not in done.stderr
