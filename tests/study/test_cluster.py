"""The README's cluster commands with Ray's token authentication: a real `ray start --head`
with a token, a study joined with --address, and a driver without the token refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study.test_survival import session_processes

pytestmark = pytest.mark.slow
RUN = Path(__file__).resolve().parents[2] / "study" / "run.py"
SPACE = """searcher: grid
budget: quick
scheduler: {type: fifo}
parameters: {max_epochs: 2, width: 4, window: 64, batch_size: 16, seed: 0}
configs:
  - {cbam: true, cell: gru, units: 8}
  - {cbam: false, cell: gru, units: 8}
"""


def test_address_joins_a_token_cluster_and_a_missing_token_is_named(small_synthetic, tmp_path):
    head_home, other_home = tmp_path / "head-home", tmp_path / "no-token-home"
    head_home.mkdir()
    other_home.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOME": str(head_home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_MODE", None)
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard=false",
            "--block",
        ],
        env={**env, "RAY_AUTH_MODE": "token"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(15)
        space = tmp_path / "joined.yaml"
        space.write_text(SPACE)
        command = [
            sys.executable,
            str(RUN),
            "--space",
            str(space),
            "--address",
            f"127.0.0.1:{port}",
            "--storage",
            str(tmp_path / "shared"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--metadata",
            str(small_synthetic.metadata),
            "--melspecs",
            str(small_synthetic.melspecs),
        ]
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert len(list((tmp_path / "shared" / "joined" / "trials").iterdir())) == 2
        refused = subprocess.run(
            [*command, "--name", "refused"],
            env={**env, "HOME": str(other_home)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert refused.returncode == 2
        assert "could not join the Ray cluster" in refused.stderr
        assert "~/.ray/auth_token" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head, then whatever else its session holds
        head.wait()
        for pid in session_processes(head.pid):
            os.kill(pid, signal.SIGKILL)
        # `ray start` records its address for later `ray.init()` calls on this machine;
        # a record of this dead test cluster must not stay behind.
        record = Path("/tmp/ray/ray_current_cluster")
        if record.is_file() and record.read_text().strip().endswith(f":{port}"):
            record.unlink()
