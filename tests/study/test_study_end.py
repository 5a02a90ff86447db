"""A study's end, name and signals are as safe as its trials.

Names are checked before anything is written; a resume never meets a claimed
folder without its record; SIGINT and SIGTERM stop the study in every phase
(whatever the process inherited), a second one at once; the end (fusion run,
report, result, registered model) is done once however often it is cut short
and resumed, bounded when the MLflow store freezes, and a name used again in
one store gets a study of its own. Real drivers, real signals, a real SQLite
store and a real `mlflow server` frozen with SIGSTOP; every wait is on an
event (a line printed, a file written), never on a timer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.claim import MAX_NAME
from tests.study.processes import (
    environment,
    free_port,
    kill_session,
    start_mlflow_server,
    study_command,
)
from tests.study.test_survival import stored_epochs, write_space

ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN_S = 10.0  # what the issue promises between a signal and the driver's exit


@pytest.fixture
def in_process_run(monkeypatch, tmp_path):
    """`study.run.run(flags)` in this process, in `tmp_path` (run() sets no signal handler;
    the MLflow HTTP defaults it sets are put back)."""
    import study.run

    monkeypatch.chdir(tmp_path)
    for key in study.run.MLFLOW_HTTP:
        monkeypatch.setenv(key, os.environ.get(key, study.run.MLFLOW_HTTP[key]))
    return study.run.run


@pytest.mark.parametrize(
    "name",
    ["bob's study", "exp:1", "../x", "/abs/x", "a/b", ".hidden", " padded", "x" * (MAX_NAME + 200)],
)
def test_a_bad_name_is_refused_before_anything_is_written(in_process_run, tmp_path, capsys, name):
    assert in_process_run(["--name", name]) == 2
    error = capsys.readouterr().err
    assert "A study name may hold letters A-Z and a-z, digits" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no folder, no store, no lock
    assert not Path("/abs/x").exists()


def test_a_resume_never_meets_a_folder_without_its_record(in_process_run, tmp_path, capsys):
    """A folder an older version claimed without writing study.json: refused, named; no
    default space is run in its place."""
    folder = tmp_path / "ray_results" / "old"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("1")
    assert in_process_run(["--name", "old", "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"{folder} has no study.json" in error and "Remove the folder" in error
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    assert not (tmp_path / "mlflow.db").exists()


SLEEPER = """
import sys, time
from study.signals import STOP
STOP.install()
try:
    print("ready", flush=True)  # inside the try: a signal may come the moment it is read
    time.sleep(120)
except KeyboardInterrupt:
    print("stopping", flush=True)
    if "--slow-stop" in sys.argv:
        time.sleep(120)  # a stop that takes long: a second signal ends it at once
    sys.exit(130)
"""


def _sleeper(*flags: str, ignore_sigint: bool) -> subprocess.Popen:
    def inherit_ignored() -> None:  # as `cmd &` in a script and `nohup cmd` start it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=inherit_ignored if ignore_sigint else None,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_heard_whatever_was_inherited(number):
    process = _sleeper(ignore_sigint=True)
    process.send_signal(number)
    assert process.wait(timeout=30) == 130
    assert process.stdout.read().strip() == "stopping"
    assert f"{signal.Signals(number).name}: stopping the study" in process.stderr.read()


def test_a_second_signal_stops_at_once():
    process = _sleeper("--slow-stop", ignore_sigint=False)
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline().strip() == "stopping"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 128 + signal.SIGINT
    assert "SIGINT again: stopping at once" in process.stderr.read()


# Real studies -------------------------------------------------------------------------------


class Driver:
    """A study driver started as a user would (`cmd &` from a script: SIGINT inherited
    ignored), read line by line."""

    def __init__(self, tmp_path: Path, data, space: Path, *flags: str, uri: str) -> None:
        self.tmp_path, self.uri, self.name = tmp_path, uri, space.stem
        self.command = study_command(
            data, "--tracking-uri", uri, "--cpus-per-trial", "0.5", *flags, space=space
        )
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []

    def start(self, *flags: str) -> Driver:
        """Start it; a resume (`--resume` in `flags`) without `--space`, as its hint says."""

        def inherit_ignored() -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        command = list(self.command)
        if "--resume" in flags:
            at = command.index("--space")
            del command[at : at + 2]
        self.lines = []
        self.process = subprocess.Popen(
            [*command, *flags],
            cwd=self.tmp_path,
            env=environment(self.tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=inherit_ignored,
        )
        return self

    def until(self, text: str) -> None:
        """Read the output until a line holds `text`."""
        for line in self.process.stdout:
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"the driver ended without printing {text!r}:\n{self.output}")

    def wait(self, timeout: float = 600) -> int:
        try:
            self.lines += self.process.stdout.readlines()
            return self.process.wait(timeout=timeout)
        finally:
            kill_session(self.process)

    def signal_and_wait(self, number: int) -> tuple[int, float]:
        """Send `number` to the driver alone; its exit status and the seconds it took."""
        sent = time.monotonic()
        self.process.send_signal(number)
        status = self.process.wait(timeout=120)
        seconds = time.monotonic() - sent
        self.wait()
        return status, seconds

    def run(self, *flags: str, expect: int = 0) -> str:
        status = self.start(*flags).wait()
        assert status == expect, self.output[-4000:]
        return self.output

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _runs(uri: str, experiment: str, role: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    return [run for run in runs if run.data.tags.get("mer.role") == role]


def _versions(uri: str) -> dict[str, list[str]]:
    client = MlflowClient(uri)
    return {
        model.name: sorted(v.run_id for v in client.search_model_versions(f"name = '{model.name}'"))
        for model in client.search_registered_models()
    }


def _check_ended_once(uri: str, name: str) -> None:
    """One parent run FINISHED with its best model tag, one fusion run, one model version of
    that parent run; nothing left RUNNING."""
    client = MlflowClient(uri)
    (parent,) = _runs(uri, name, "study")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mer.best_model"] == f"models:/{name}-best/1"
    fusions = _runs(uri, name, "fusion")
    assert [run.info.status for run in fusions] == ["FINISHED"]
    assert _versions(uri)[f"{name}-best"] == [parent.info.run_id]
    running = client.search_runs(
        [parent.info.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    )
    assert running == []


@pytest.mark.slow
def test_a_signal_in_the_end_stops_it_and_resumes_finish_it_once(small_synthetic, tmp_path):
    """SIGINT (inherited ignored) as the trials end, during summary, fusion and report:
    stopped within seconds, runs KILLED, resume hint. The space file edited, then deleted:
    resumes finish the end once from the recorded space. The name used again in the store,
    after the study folder is deleted: a study of its own."""
    space = write_space(tmp_path, "ending", epochs=3, rows=2)
    original = space.read_text()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver = Driver(tmp_path, small_synthetic, space, uri=uri).start()
    driver.until("trials ended in")  # the end begins: summary, fusion, report, registration
    status, seconds = driver.signal_and_wait(signal.SIGINT)
    output = driver.output
    print(f"SIGINT in the end: the driver stopped {seconds:.1f} s after it")
    assert status == 130, output[-3000:]
    assert seconds < STOP_WITHIN_S, output[-3000:]
    assert "SIGINT: stopping the study" in output
    assert "study ending stopped (SIGINT); continue with: python study/run.py --name ending" in (
        output
    )
    assert "conv. attention" in output and "Traceback" not in output
    (parent,) = _runs(uri, "ending", "study")
    assert parent.info.status == "KILLED"

    space.write_text(original.replace("max_epochs: 3", "max_epochs: 9") + "# edited\n")
    output = driver.run("--name", "ending", "--resume")
    assert "every trial of study ending has ended: nothing to train" in output
    assert "trials ended in" not in output  # no trial ran: Ray was not started
    _check_ended_once(uri, "ending")
    client = MlflowClient(uri)
    (parent,) = _runs(uri, "ending", "study")
    logged = client.download_artifacts(parent.info.run_id, "study/ending.yaml", str(tmp_path))
    assert Path(logged).read_text() == original  # what the trials ran, not the edited file

    space.unlink()
    driver.run("--name", "ending", "--resume")
    _check_ended_once(uri, "ending")  # nothing twice

    shutil.rmtree(tmp_path / "ray_results" / "ending")
    space.write_text(original)
    output = driver.run("--name", "ending")
    assert "the name ending was used before in MLflow store" in output
    parents = _runs(uri, "ending", "study")
    assert len(parents) == 2 and len({p.data.tags["mer.study_id"] for p in parents}) == 2
    assert all(p.info.status == "FINISHED" for p in parents)
    newer = next(p for p in parents if p.info.run_id != parent.info.run_id)
    model = newer.data.tags["mer.registered_model"]
    assert model == f"ending-{newer.data.tags['mer.study_id'][:8]}-best"
    assert _versions(uri) == {"ending-best": [parent.info.run_id], model: [newer.info.run_id]}
    assert len(_runs(uri, "ending", "fusion")) == 2  # one each
    trials = _runs(uri, "ending", "trial")
    assert sorted(run.data.tags["mer.study_id"] for run in trials) == sorted(
        [p.data.tags["mer.study_id"] for p in parents] * 2
    )


@pytest.mark.slow
def test_a_frozen_store_delays_the_end_by_its_timeout_and_signals_still_stop(
    small_synthetic, tmp_path
):
    """A real `mlflow server` frozen (SIGSTOP) as the trials end: the end waits its
    --mlflow-timeout, then one paragraph and the resume; frozen again during a resumed
    end, SIGTERM stops it within seconds; thawed, a resume records everything once."""
    space = write_space(tmp_path, "frozen", epochs=2, rows=2)
    port = free_port()
    (tmp_path / "server").mkdir()
    server = start_mlflow_server(tmp_path / "server", port)  # its own session: SIGSTOP it all
    uri = f"http://127.0.0.1:{port}"
    try:
        driver = Driver(tmp_path, small_synthetic, space, "--mlflow-timeout", "6", uri=uri)
        driver.start().until("trials ended in")
        os.killpg(server.pid, signal.SIGSTOP)
        try:
            frozen = time.monotonic()
            status = driver.wait(timeout=300)
            seconds = time.monotonic() - frozen
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        output = driver.output
        print(f"frozen store: the end gave up {seconds:.1f} s after the freeze (timeout 6 s)")
        assert status == 1, output[-3000:]
        assert "did not take them within 6 s (--mlflow-timeout)" in output
        assert "python study/run.py --name frozen --resume" in output
        assert "Traceback" not in output and seconds < 6 + 30

        driver.start("--name", "frozen", "--resume").until("report:")  # the end's records
        os.killpg(server.pid, signal.SIGSTOP)
        try:
            status, seconds = driver.signal_and_wait(signal.SIGTERM)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        print(f"SIGTERM with the store frozen: the driver stopped {seconds:.1f} s after it")
        assert status == 130, driver.output[-3000:]
        assert seconds < STOP_WITHIN_S and "Traceback" not in driver.output

        driver.run("--name", "frozen", "--resume")
        _check_ended_once(uri, "frozen")
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        kill_session(server)


@pytest.mark.slow
def test_a_deleted_store_stops_the_study_with_its_resume(small_synthetic, tmp_path):
    """mlflow.db deleted while trials train: one paragraph naming the file, no traceback,
    exit 1; a resume (into the store made anew) finishes the study."""
    space = write_space(tmp_path, "deleted", epochs=30, rows=2)
    database = tmp_path / "mlflow.db"
    driver = Driver(tmp_path, small_synthetic, space, uri=f"sqlite:///{database}").start()
    driver.until("started")
    while not any(stored_epochs(tmp_path / "ray_results" / "deleted").values()):
        assert driver.process.poll() is None, driver.output
        time.sleep(0.2)
    database.unlink()
    status = driver.wait(timeout=300)
    output = driver.output
    assert status == 1, output[-3000:]
    assert f"its file {database} no longer exists" in output
    assert "python study/run.py --name deleted --resume" in output
    assert "Traceback" not in output, output[-3000:]
    driver.run("--name", "deleted", "--resume")
    _check_ended_once(f"sqlite:///{database}", "deleted")


@pytest.mark.slow
def test_a_sigterm_at_start_up_stops_the_driver_launched_in_the_background(
    small_synthetic, tmp_path
):
    """`cmd &` from a script (SIGINT inherited ignored) and SIGTERM as the driver checks
    its data: it stops within seconds, and a folder it claimed holds its record."""
    space = write_space(tmp_path, "startup", epochs=2, rows=2)
    driver = Driver(tmp_path, small_synthetic, space, uri=f"sqlite:///{tmp_path / 'm.db'}")
    driver.start().until("checking the dataset")
    status, seconds = driver.signal_and_wait(signal.SIGTERM)
    output = driver.output
    assert status == 130 and seconds < STOP_WITHIN_S, output[-3000:]
    assert "SIGTERM: stopping the study" in output and "Traceback" not in output
    claimed = tmp_path / "ray_results" / "startup"
    assert not claimed.exists() or (claimed / "study.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_in_the_end_stops_it_and_a_resume_finishes_it(small_synthetic, tmp_path):
    """Storage on a small tmpfs, filled as the trials end: the end stops with one paragraph
    (the place, the error, the resume), its runs KILLED; with room again, a resume
    finishes the end once."""
    from tests.study.test_records_resume import _tmpfs

    storage = tmp_path / "small-disk"
    _tmpfs(storage, 64)
    try:
        space = write_space(tmp_path, "fullend", epochs=2, rows=2)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        driver = Driver(tmp_path, small_synthetic, space, "--storage", str(storage), uri=uri)
        driver.start().until("trials ended in")
        filler = storage / "filler"
        with open(filler, "wb") as handle:  # another job fills the disk
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
        status = driver.wait(timeout=300)
        output = driver.output
        assert status == 1, output[-3000:]
        assert "storage failed" in output and "No space left on device" in output
        assert f"--name fullend --resume --storage {storage}" in output
        assert "Traceback" not in output, output[-3000:]
        (parent,) = _runs(uri, "fullend", "study")
        assert parent.info.status == "KILLED"
        filler.unlink()
        driver.run("--name", "fullend", "--resume", "--storage", str(storage))
        _check_ended_once(uri, "fullend")
        assert [p for p in storage.rglob("*") if ".partial" in p.name] == []
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)
