"""Signals to a driver's whole process group, as GNU `timeout` and batch schedulers send them.

The driver's local Ray cluster (study.local_cluster) runs outside the driver's
process group: a SIGTERM to the group reaches the driver alone, which stops
the study as Ctrl-C does; a SIGKILL, to the driver or its group, leaves no Ray
process behind. Real processes, started in sessions of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study.processes import kill_session, session_processes
from tests.study.test_survival import Study, check_complete, write_space

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# A driver of its own: the cluster, one task whose worker starts a child of its
# own, then it waits to be killed.
DRIVER = f"""
import json, os, subprocess, sys, time
sys.path.insert(0, {str(ROOT)!r})
import ray
from study.local_cluster import start_local_cluster

started = time.monotonic()
start_local_cluster(num_cpus=1)
seconds = time.monotonic() - started

@ray.remote
def worker_child():
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid(), os.getpgrp())"],
        capture_output=True, text=True, check=True,
    )
    return os.getpid(), os.getpgrp(), [int(n) for n in child.stdout.split()]

worker, worker_group, (child, child_group) = ray.get(worker_child.remote(), timeout=120)
print(json.dumps({{"seconds": seconds, "worker": worker, "worker_group": worker_group,
                  "child": child, "child_group": child_group}}), flush=True)
time.sleep(600)
"""


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def wait_until_gone(session: int, timeout: float) -> list[int]:
    """The session's processes still alive after `timeout` seconds (none, ideally)."""
    deadline = time.monotonic() + timeout
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize("group", [False, True], ids=["driver", "group"])
def test_the_cluster_runs_outside_the_drivers_group_and_dies_with_it(tmp_path, group):
    """Ray's processes are in a group of their own (the workers in theirs, with their own
    children), and a SIGKILL to the driver, or to its group, leaves none of them running."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        ready = json.loads(driver.stdout.readline() or "{}")
        assert ready, "the driver ended before its task ran"
        cluster = [pid for pid in session_processes(driver.pid) if pid != driver.pid]
        names = {command_name(pid) for pid in cluster}
        assert {"gcs_server", "raylet"} <= names, names
        in_drivers_group = [
            (pid, command_name(pid)) for pid in cluster if process_group(pid) == driver.pid
        ]
        assert in_drivers_group == []
        assert ready["worker_group"] == ready["worker"]  # Ray's own group per worker
        assert ready["child_group"] == ready["worker"]  # a worker's child stays in it
        print(f"driver started its cluster in {ready['seconds']:.1f} s")

        killed = time.monotonic()
        if group:
            os.killpg(driver.pid, signal.SIGKILL)
        else:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        left = wait_until_gone(driver.pid, timeout=20)
        assert [(pid, command_name(pid)) for pid in left] == []  # no orphaned cluster
        print(f"every Ray process ended {time.monotonic() - killed:.1f} s after the SIGKILL")
    finally:
        kill_session(driver)


def test_a_group_sigterm_stops_the_study_as_ctrl_c_does(small_synthetic, tmp_path):
    """`timeout -s TERM`, Slurm: SIGTERM to the driver and everything in its group while
    trials train. The study stops within seconds with its table and resume hint, its MLflow
    runs KILLED, and `--resume` finishes it."""
    epochs = 12
    study = Study(tmp_path, small_synthetic, write_space(tmp_path, "grouped", epochs, rows=2))
    driver = study.start()
    deadline = time.monotonic() + 300
    while not any(study.stored_epochs().values()):  # a trial's first epoch is stored
        assert driver.poll() is None, study.output()[-3000:]
        assert time.monotonic() < deadline, "no trial stored an epoch"
        time.sleep(0.2)

    signalled = time.monotonic()
    os.killpg(driver.pid, signal.SIGTERM)
    try:
        status = driver.wait(timeout=120)
    finally:
        seconds = time.monotonic() - signalled
        left = wait_until_gone(driver.pid, timeout=60)
        kill_session(driver)
    output = study.output()
    print(f"group SIGTERM: the driver ended {seconds:.1f} s after the signal, its cluster too")
    assert status != 0, output[-3000:]
    # About 5 s here (the figure is printed); the bound leaves room for a loaded machine
    # and still fails the old way, a driver that waits 60 s for a GCS that is gone.
    assert seconds < 45, output[-3000:]
    assert "trial(s) unfinished" in output, output[-3000:]
    assert f"--name {study.name} --resume" in output
    assert "Failed to connect to GCS" not in output and "Traceback" not in output
    assert [(pid, command_name(pid)) for pid in left] == []
    parents, runs = study.runs()
    assert parents and runs
    assert all(run.info.status == "KILLED" for run in parents + runs)  # none left RUNNING

    study.run("--resume")
    check_complete(study, trials=2, epochs=epochs)
