"""Real processes for the study tests: the study driver run to its end, free ports, an
`mlflow server`, a local Ray cluster, whole sessions killed (at once, or as soon as they
print a line)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

RUN = Path(__file__).resolve().parents[2] / "study" / "run.py"


def study_command(data, *extra: str, space: str | Path = "smoke") -> list[str]:
    """The study driver's command line on a dataset (its `metadata` and `melspecs`)."""
    return [
        sys.executable,
        str(RUN),
        "--space",
        str(space),
        "--metadata",
        str(data.metadata),
        "--melspecs",
        str(data.melspecs),
        *extra,
    ]


def environment(tmp_path: Path) -> dict[str, str]:
    """The driver's environment: its caches under `tmp_path`, no Ray usage reports."""
    return {
        **os.environ,
        "MER_MODELS_CACHE": str(tmp_path / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def run_driver(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the study driver's `command` in `tmp_path` to its end; it must succeed."""
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@contextlib.contextmanager
def local_ray(cpus: int = 1) -> Iterator[None]:
    """A Ray cluster of the test's own with `cpus` CPUs ("local": never one a `ray start`
    left on this node), shut down after the block."""
    import ray

    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(session: int) -> list[int]:
    """The processes of a session (a process started with start_new_session=True and
    everything it started, Ray's processes included)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session and everything in that session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pid in session_processes(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_at_line(process: subprocess.Popen, text: str, timeout: float) -> str:
    """Read a session's text output until a line holds `text`, then SIGKILL the session at
    once (whatever it would do next: a step that waits on the line, not on how fast the
    process is). Returns the output read; a process that never prints it is killed after
    `timeout` s and its output returned all the same."""
    watchdog = threading.Timer(timeout, _kill_group, [process.pid])
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if text in line:
                break
    finally:
        watchdog.cancel()
        kill_session(process)
    return "".join(lines)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on `port` (SQLite store and artifacts in `folder`), in its own
    session, once it answers; the same folder and port start it again with its data."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "server-artifacts"),
            "--workers",
            "1",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
            return server
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                kill_session(server)
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real `mlflow server` (SQLite store, artifacts served from `folder`); its URL."""
    port = free_port()
    server = start_mlflow_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
