"""Studies that survive: drivers killed and resumed, damaged checkpoints, failed trials, races.

Real processes (the driver and its local Ray cluster, killed as a process
group), real Ray Tune and a real SQLite MLflow store, in the manner of Ray's
own `test_experiment_restore.py`. Each study is a few tiny FIFO trials on the
session's small synthetic dataset.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.checkpoint_store import FOLDER, CheckpointStore
from tests.study.processes import environment, session_processes, study_command

pytestmark = pytest.mark.slow
ROWS = (
    "{cbam: true, cell: gru, units: 8, lr: 3.0e-3}",
    "{cbam: false, cell: gru, units: 8, lr: 3.0e-3}",
    "{cbam: false, cell: lstm, units: 8, lr: 1.0e-3}",
    "{cbam: true, cell: lstm, units: 8, lr: 1.0e-3}",
)


def write_space(folder: Path, name: str, epochs: int, rows: int = 4, window: int = 64) -> Path:
    """A FIFO grid of tiny trials that each run every epoch (no early stopping)."""
    path = folder / f"{name}.yaml"
    path.write_text(
        "searcher: grid\nnum_samples: 1\nbudget: quick\nscheduler: {type: fifo}\n"
        f"parameters: {{max_epochs: {epochs}, patience: 0, width: 4, window: {window}, "
        "batch_size: 16, seed: 0, layers: 1}\n"
        "configs:\n" + "".join(f"  - {row}\n" for row in ROWS[:rows])
    )
    return path


class Study:
    """One study's command line, folder and MLflow store, driven as a user would."""

    def __init__(self, tmp_path: Path, data, space: Path, *extra: str) -> None:
        self.tmp_path = tmp_path
        self.name = space.stem
        self.dir = tmp_path / "ray_results" / self.name
        self.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        self.command = study_command(
            data, "--tracking-uri", self.uri, "--cpus-per-trial", "0.5", *extra, space=space
        )
        self.env = environment(tmp_path)
        self.logs = 0

    def start(self, *extra: str) -> subprocess.Popen:
        self.logs += 1
        log = open(self.tmp_path / f"driver-{self.logs}.txt", "w")  # noqa: SIM115
        return subprocess.Popen(
            [*self.command, *extra],
            cwd=self.tmp_path,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the driver and its Ray cluster
        )

    def output(self) -> str:
        return (self.tmp_path / f"driver-{self.logs}.txt").read_text()

    def run(self, *extra: str, expect: int = 0) -> str:
        driver = self.start(*extra)
        assert driver.wait(timeout=600) == expect, self.output()[-4000:]
        return self.output()

    def recorded(self) -> dict[str, dict]:
        trials = self.dir / "trials"
        found = sorted(trials.glob("*/metrics.json")) if trials.is_dir() else []
        return {p.parent.name: json.loads(p.read_text()) for p in found}

    def stored_epochs(self) -> dict[str, list[int]]:
        return stored_epochs(self.dir)

    def all_keep_two_checkpoints(self, trials: int) -> bool:
        """Every one of `trials` trials holds its two newest checkpoints (mid-training)."""
        stored = self.stored_epochs()
        return len(stored) == trials and all(len(e) == 2 for e in stored.values())

    def runs(self) -> tuple[list, list]:
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(self.name)
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("mer.role") == "study"]
        return parents, [r for r in runs if r.data.tags.get("mer.role") == "trial"]


def stored_epochs(study_dir: Path) -> dict[str, list[int]]:
    """Each trial's complete checkpoint epochs in a study's checkpoint store, oldest first."""
    root = study_dir / FOLDER
    if not root.is_dir():
        return {}
    return {
        trial.name: sorted(CheckpointStore(str(root), trial.name).epochs())
        for trial in root.iterdir()
    }


def wait_for(condition, driver: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, "the study ended before the moment to interrupt it"
        assert time.monotonic() < deadline, "timed out waiting for the moment to interrupt"
        time.sleep(0.2)


def interrupt(driver: subprocess.Popen, sig: signal.Signals, group: bool = True) -> int:
    """Send `sig` to the driver's process group (or the driver alone, as `kill PID` and
    `timeout` do); its exit status once everything it started has ended.

    Ray's own processes run in process groups of their own within the driver's
    session: after a SIGKILL its workers go on for a few seconds (and write
    checkpoints) before they notice. The test waits for the whole session.
    """
    if group:
        os.killpg(driver.pid, sig)
    else:
        os.kill(driver.pid, sig)
    status = driver.wait(timeout=120)
    deadline = time.monotonic() + 60
    while session_processes(driver.pid):
        if time.monotonic() > deadline:
            for pid in session_processes(driver.pid):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.5)
    return status


def epoch_values(study: Study) -> dict[str, list[float]]:
    """Per-epoch validation ROC-AUC by configuration (trial ids differ between studies)."""
    values = {}
    for trial_id in study.recorded():
        folder = study.dir / "trials" / trial_id
        config = json.loads((folder / "config.json").read_text())
        key = f"{config['cbam']}-{config['cell']}-{config['lr']}"
        values[key] = [
            row["val_roc_auc"] for row in json.loads((folder / "history.json").read_text())
        ]
    return values


def check_complete(study: Study, trials: int, epochs: int) -> None:
    """Every trial ran every epoch once, on disk and in MLflow; no run RUNNING; no leftovers."""
    recorded = study.recorded()
    assert len(recorded) == trials
    parents, runs = study.runs()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == trials  # one run per trial
    by_trial = {run.data.tags["mer.trial_id"]: run for run in runs}
    client = MlflowClient(study.uri)
    for trial_id, metrics in recorded.items():
        assert metrics["end_state"] == "finished", metrics
        history = json.loads((study.dir / "trials" / trial_id / "history.json").read_text())
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
        run = by_trial[trial_id]
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")]
        assert sorted(steps) == list(range(1, epochs + 1))  # one value per epoch
    assert study.stored_epochs() == {}  # finished trials' checkpoints deleted
    leftovers = [
        p for p in study.dir.rglob("*") if p.name.startswith("restore-") or p.suffix == ".partial"
    ]
    assert leftovers == []


def test_kill_and_resume_loop_matches_a_clean_run(small_synthetic, tmp_path):
    """SIGINT before any trial ends, SIGTERM as one ends, SIGKILL at a seeded point; resumed."""
    # Two trials at a time, so that the kills find trials at different epochs, each trial
    # training long enough that four driver starts are not most of the time.
    epochs, size, two = 20, {"window": 512}, ("--max-concurrent", "2")
    clean_space = write_space(tmp_path, "clean", epochs, **size)
    clean = Study(tmp_path / "clean", small_synthetic, clean_space, *two)
    clean.tmp_path.mkdir()
    started = time.monotonic()
    clean.run()
    clean_seconds = time.monotonic() - started

    work = tmp_path / "killed"
    work.mkdir()
    study = Study(work, small_synthetic, write_space(tmp_path, "killed", epochs, **size), *two)
    rng = random.Random(11)
    resumed_seconds = 0.0  # the drivers' wall time, without the test's checks between them
    started = time.monotonic()

    # 1. Ctrl-C (SIGINT to the group) while trials train, before any has ended.
    driver = study.start()
    wait_for(lambda: any(study.stored_epochs().values()), driver)
    time.sleep(rng.uniform(0.0, 1.0))
    assert not study.recorded()
    assert interrupt(driver, signal.SIGINT) == 130
    resumed_seconds += time.monotonic() - started
    output = study.output()
    assert "4 trial(s) unfinished" in output
    assert f"--name {study.name} --resume" in output
    assert "Tuner.restore" not in output and "Traceback" not in output
    assert "Trials did not complete" not in output  # Ray's list: the line above says it
    parents, runs = study.runs()
    assert all(run.info.status == "KILLED" for run in parents + runs)  # none left RUNNING

    # 2. SIGTERM to the driver (kill PID, timeout) the moment a trial's results appear.
    started = time.monotonic()
    driver = study.start("--resume")
    before = set(study.recorded())
    wait_for(lambda: set(study.recorded()) - before, driver)
    assert interrupt(driver, signal.SIGTERM, group=False) == 130
    resumed_seconds += time.monotonic() - started
    assert "trial(s) unfinished" in study.output()
    assert re.search(
        r"trial \S+ continues after epoch [1-9]\d*, from its checkpoint", study.output()
    )
    finished = {t: m for t, m in study.recorded().items()}
    assert finished
    # A report names the trials not ended and counts those not begun; it leaves none out.
    begun = {p.name for p in (study.dir / "trials").iterdir()}
    unfinished = sorted(begun - set(finished))
    assert unfinished or len(begun) < 4  # two at a time: not all four have ended
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(study.dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 2, report.stderr
    if unfinished:
        assert f"trial(s) {', '.join(unfinished)} have no end state" in report.stderr
    if len(begun) < 4:
        assert f"{4 - len(begun)} of the 4 trials its space runs have not started" in report.stderr
    assert not (study.dir / "report").exists()
    parents, runs = study.runs()
    assert not [run for run in parents + runs if run.info.status == "RUNNING"]

    # 3. SIGKILL at a seeded moment once this driver's trials train: no graceful stop at all.
    before = study.stored_epochs()

    def trained_since() -> bool:
        newest = {trial: max(stored, default=0) for trial, stored in before.items()}
        now = study.stored_epochs().items()
        return any(max(stored, default=0) > newest.get(trial, 0) for trial, stored in now)

    started = time.monotonic()
    driver = study.start("--resume")
    wait_for(trained_since, driver)
    time.sleep(rng.uniform(0.0, 3.0))
    interrupt(driver, signal.SIGKILL)

    output = study.run("--resume")
    resumed_seconds += time.monotonic() - started
    check_complete(study, trials=4, epochs=epochs)
    for trial_id, metrics in finished.items():  # finished before a kill: never run again
        assert study.recorded()[trial_id] == metrics
    resumed, reference = epoch_values(study), epoch_values(clean)
    assert resumed.keys() == reference.keys()
    for key, values in reference.items():  # per-epoch validation identical to the clean run
        assert resumed[key] == pytest.approx(values, abs=1e-6), key
    assert "study folder" in output or "MB)" in output
    print(
        f"kill-and-resume: 3 kills survived (SIGINT, SIGTERM at a trial's end, SIGKILL); "
        f"0 trials rerun; resumed {resumed_seconds:.0f} s vs clean {clean_seconds:.0f} s"
    )
    assert resumed_seconds < 2.5 * clean_seconds


def test_damaged_checkpoints_fall_back_or_fail_with_the_file_named(small_synthetic, tmp_path):
    """Truncated, garbled or deleted newest checkpoint: the trial goes on from the one before;
    every checkpoint damaged: the trial fails naming them, and the rest of the study finishes."""
    epochs = 40  # long enough that all four are mid-training at once, even on a busy machine
    study = Study(tmp_path, small_synthetic, write_space(tmp_path, "damaged", epochs))
    driver = study.start("--max-failures", "0")
    wait_for(lambda: study.all_keep_two_checkpoints(4), driver)
    interrupt(driver, signal.SIGKILL)
    assert not study.recorded()
    stored = study.stored_epochs()
    trials = sorted(stored)
    store = study.dir / "checkpoints"

    def newest(trial: str) -> Path:
        return store / trial / f"epoch-{stored[trial][-1]:04d}"

    state = newest(trials[0]) / "checkpoint.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated
    summary = newest(trials[1]) / "summary.json"
    summary.write_bytes(b"\xff\xfe garbled \x00")  # garbled
    deleted = newest(trials[2])
    for path in deleted.iterdir():
        path.unlink()
    deleted.rmdir()  # deleted
    for folder in (store / trials[3]).iterdir():  # every checkpoint damaged
        (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")

    output = study.run("--resume", expect=0)  # retries allowed: a crash would be retried
    recorded = study.recorded()
    assert len(recorded) == 4
    for trial, damaged in ((trials[0], state), (trials[1], summary)):
        assert recorded[trial]["end_state"] == "finished"
        assert recorded[trial]["epochs_run"] == epochs
        assert str(damaged) in " ".join(recorded[trial]["skipped_checkpoints"])
    assert recorded[trials[2]]["end_state"] == "finished"
    assert recorded[trials[2]]["epochs_run"] == epochs
    failed = recorded[trials[3]]
    assert failed["end_state"] == "error"
    assert "no checkpoint of trial" in failed["error"] and "checkpoint.pt" in failed["error"]
    assert failed["failures"] == 0  # no checkpoint loads: not retried, a retry finds the same
    # One paragraph on the console: the trial, its name, the cause, where its traceback is.
    details = study.dir / "trials" / trials[3] / "error.txt"
    lines = [line for line in output.splitlines() if f"trial {trials[3]} (" in line]
    assert len(lines) == 1 and "failed after" in lines[0] and str(details) in lines[0], lines
    assert "Traceback" in details.read_text()
    assert "Traceback" not in output
    client = MlflowClient(study.uri)
    parents, runs = study.runs()
    for run in runs:
        trial = run.data.tags["mer.trial_id"]
        assert run.info.status == ("FAILED" if trial == trials[3] else "FINISHED")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")]
        assert len(steps) == len(set(steps))  # an epoch trained again is not logged twice
        if trial != trials[3]:
            assert sorted(steps) == list(range(1, epochs + 1))


def test_a_failed_trial_is_retried_only_when_asked(small_synthetic, tmp_path):
    """A trial's worker killed (found by the pid Ray records for it) past --max-failures fails
    for good; --resume keeps it failed; --resume --retry-failed continues it from its
    checkpoint, and its files and MLflow run agree."""
    epochs = 30
    study = Study(tmp_path, small_synthetic, write_space(tmp_path, "retry", epochs, rows=2))
    driver = study.start("--max-failures", "0", "--max-concurrent", "1")

    def first_trial_result() -> dict | None:
        found = sorted(study.dir.glob("run_trial_*/result.json"))
        lines = found[0].read_text().splitlines() if found else []
        return json.loads(lines[-1]) if lines else None

    def training_now() -> str | None:
        """The trial training now, by its own checkpoints (Ray's result files, written by
        the driver, can lag behind a fast trial), while most of its epochs lie ahead."""
        ended = study.recorded()
        for key, stored in study.stored_epochs().items():
            if key not in ended and stored and 2 <= max(stored) <= epochs // 2:
                return key
        return None

    moment: dict = {}

    def ready() -> bool:
        key, result = training_now(), first_trial_result()
        if key is not None and result is not None:
            # One worker runs the trials one after another (reuse_actors): the first's pid.
            moment.update(key=key, pid=result["pid"])
        return bool(moment)

    wait_for(ready, driver)
    os.kill(moment["pid"], signal.SIGKILL)  # the trial's Ray worker, mid-training
    assert driver.wait(timeout=600) == 0, study.output()[-3000:]
    result = {"trial_id": moment["key"]}
    failed = study.recorded()[result["trial_id"]]
    assert failed["end_state"] == "error" and failed["epochs_run"] >= 2
    assert failed["failures"] == 1 and "worker" in failed["error"]  # the crash, recorded
    assert sum(m["end_state"] == "finished" for m in study.recorded().values()) == 1

    study.run("--resume")  # without --retry-failed: the failed trial stays as it was
    assert study.recorded()[result["trial_id"]] == failed

    study.run("--resume", "--retry-failed")
    retried = study.recorded()[result["trial_id"]]
    assert retried["end_state"] == "finished" and retried["epochs_run"] == epochs
    history = json.loads((study.dir / "trials" / result["trial_id"] / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    check_complete(study, trials=2, epochs=epochs)


def test_two_drivers_one_name_and_a_kill_before_rays_state(small_synthetic, tmp_path):
    """The second driver for a name is refused at once; a study killed before Ray saved any
    state resumes by starting its trials afresh."""
    space = write_space(tmp_path, "race", epochs=2, rows=1)
    study = Study(tmp_path, small_synthetic, space)
    first, second = study.start("--name", "race"), study.start("--name", "race")
    outputs = []
    deadline = time.monotonic() + 120
    while first.poll() is None and second.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    loser, winner = (first, second) if first.poll() is not None else (second, first)
    assert loser.wait() == 2
    outputs = [(tmp_path / f"driver-{n}.txt").read_text() for n in (1, 2)]
    assert any("a study named race exists" in text for text in outputs), outputs
    # The winner is killed as soon as its study.json exists, before Ray's tuner.pkl.
    wait_for(lambda: (study.dir / "study.json").is_file(), winner)
    interrupt(winner, signal.SIGKILL)
    if (study.dir / "tuner.pkl").exists():
        pytest.skip("Ray saved its state before the kill landed; the window was missed")
    output = study.run("--resume")
    assert "Traceback" not in output
    check_complete(study, trials=1, epochs=2)


def test_sixteen_trials_on_one_sqlite_store_log_every_epoch_once(small_synthetic, tmp_path):
    """Sixteen trials, eight at a time, all logged by the driver into one SQLite store."""
    rows = [
        f"{{cbam: {cbam}, cell: {cell}, units: {units}, lr: {lr}}}"
        for cbam in ("true", "false")
        for cell in ("gru", "lstm")
        for units in (4, 8)
        for lr in ("1.0e-3", "3.0e-3")
    ]
    space = tmp_path / "sixteen.yaml"
    space.write_text(
        "searcher: grid\nnum_samples: 1\nbudget: quick\nscheduler: {type: fifo}\n"
        "parameters: {max_epochs: 2, patience: 0, width: 4, window: 64, batch_size: 16, "
        "seed: 0, layers: 1}\nconfigs:\n" + "".join(f"  - {row}\n" for row in rows)
    )
    study = Study(tmp_path, small_synthetic, space)
    study.command[study.command.index("--cpus-per-trial") + 1] = "0.25"
    study.run()
    check_complete(study, trials=16, epochs=2)
