"""A real multi-node Ray cluster on this machine, as the README sets one up: `ray start
--head` with a token, a second node joined with `ray start --address`, an `mlflow server`
over HTTP and a storage folder both nodes use. A node is lost while its trial trains; a
driver without the token is refused; default local storage on several nodes is warned of."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.trial_reports import RESTORED_KEY
from tests.study.processes import free_port, kill_at_line, kill_session, mlflow_server
from tests.study.test_survival import stored_epochs

pytestmark = pytest.mark.slow
RUN = Path(__file__).resolve().parents[2] / "study" / "run.py"
# Long enough that both trials train at once for many seconds: the lost node is killed
# then (at 12 epochs a trial took 7 s on a fast sitting, and the two overlapped for 2 s).
EPOCHS = 30
SPACE = f"""searcher: grid
budget: quick
scheduler: {{type: fifo}}
parameters: {{max_epochs: {EPOCHS}, patience: 0, width: 4, window: 64, batch_size: 16, seed: 0}}
configs:
  - {{cbam: true, cell: gru, units: 8}}
  - {{cbam: false, cell: gru, units: 8}}
"""


class Cluster:
    """`ray start` nodes of one cluster, each its own process session, sharing a home (and
    so the head's token)."""

    def __init__(self, home: Path) -> None:
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            # A lost node is noticed in seconds rather than the default half minute.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        subprocess.run(
            [self.ray, "get-auth-token", "--generate"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.nodes: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        node = subprocess.Popen(
            [self.ray, "start", *args, "--num-cpus", "1", "--block"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        status = subprocess.run(
            [self.ray, "status", "--address", self.address],
            env=self.env,
            capture_output=True,
            text=True,
        )
        active = status.stdout.split("Active:")[-1].split("Pending:")[0]
        return active.count("node_") if status.returncode == 0 else 0

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while self.alive_nodes() != count:
            assert time.monotonic() < deadline, f"the cluster never had {count} node(s)"
            time.sleep(1)

    def stop(self) -> None:
        for node in self.nodes:
            kill_session(node)
        # `ray start` records its address for later `ray.init()` calls on this machine;
        # a record of this dead test cluster must not stay behind.
        record = Path("/tmp/ray/ray_current_cluster")
        if record.is_file() and record.read_text().strip().endswith(f":{self.port}"):
            record.unlink()


def trial_rows(study_dir: Path) -> dict[str, list[dict]]:
    """Each trial's results as Ray Tune recorded them (result.json), by trial id."""
    rows = {}
    for path in study_dir.glob("run_trial_*/result.json"):
        lines = path.read_text().splitlines()
        if lines:
            parsed = [json.loads(line) for line in lines]
            rows[parsed[0]["trial_id"]] = parsed
    return rows


def test_a_lost_node_s_trial_resumes_on_the_other_and_the_study_finishes(small_synthetic, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cluster = Cluster(home)
    space = tmp_path / "lost.yaml"
    space.write_text(SPACE)
    data = [
        "--metadata",
        str(small_synthetic.metadata),
        "--melspecs",
        str(small_synthetic.melspecs),
    ]
    driver_env = {**cluster.env}
    driver_env.pop("RAY_AUTH_MODE")  # the driver turns token mode on from the token itself
    try:
        cluster.start("--head", "--port", str(cluster.port), "--include-dashboard=false")
        cluster.wait_for_nodes(1)
        worker = cluster.start("--address", cluster.address)
        cluster.wait_for_nodes(2)

        # Default storage (./ray_results, on the driver's machine only) on two nodes: warned.
        warned = subprocess.Popen(
            [
                sys.executable,
                str(RUN),
                "--space",
                str(space),
                "--name",
                "warned",
                *data,
                "--address",
                cluster.address,
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'w.db'}",
            ],
            env=driver_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        # Killed as soon as it warns: whether a Ctrl-C then would land before Ray Tune's
        # own handler (a graceful stop) or the study finishes first is a matter of load.
        output = kill_at_line(warned, "warning: the cluster has 2 nodes", timeout=300)
        warning = output.splitlines()[-1] if output else ""
        assert "warning: the cluster has 2 nodes" in warning, output[-3000:]
        assert "--storage is the default" in warning and "ray_results" in warning
        assert "a folder every node mounts" in warning

        with mlflow_server(tmp_path) as uri:
            study = subprocess.Popen(
                [
                    sys.executable,
                    str(RUN),
                    "--space",
                    str(space),
                    "--name",
                    "lost",
                    *data,
                    "--address",
                    cluster.address,
                    "--storage",
                    str(tmp_path / "shared"),
                    "--tracking-uri",
                    uri,
                    "--cpus-per-trial",
                    "1",
                    "--max-failures",
                    "2",
                ],
                env=driver_env,
                cwd=tmp_path,
                stdout=open(tmp_path / "lost.txt", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            study_dir = tmp_path / "shared" / "lost"

            def both_training() -> bool:
                """A trial on each node (one CPU each), both past their third epoch."""
                stored = stored_epochs(study_dir)
                return len(stored) == 2 and all(max(e, default=0) >= 3 for e in stored.values())

            deadline = time.monotonic() + 300
            while not both_training():
                assert study.poll() is None, (tmp_path / "lost.txt").read_text()[-3000:]
                assert time.monotonic() < deadline, "the two trials never trained at once"
                time.sleep(0.2)
            kill_session(worker)  # the second node: its raylet and the trial it trains

            assert study.wait(timeout=600) == 0, (tmp_path / "lost.txt").read_text()[-3000:]
            # The second node is gone (the head trained both): `ray status` says so once the
            # head's health checks have missed it, which a fast study may end before.
            cluster.wait_for_nodes(1)
            recorded = {
                trial.name: json.loads((trial / "metrics.json").read_text())
                for trial in (study_dir / "trials").iterdir()
            }
            assert sorted(m["failures"] for m in recorded.values()) == [0, 1]
            lost = next(trial for trial, m in recorded.items() if m["failures"] == 1)
            rows = trial_rows(study_dir)[lost]
            # Two processes, one per node; from the last checkpoint, never back to the start:
            # the new process reports the epoch it restored (with its scores so far), then
            # trains the next; no epoch is trained twice.
            assert len({row["pid"] for row in rows}) == 2
            (at,) = [i for i, row in enumerate(rows) if RESTORED_KEY in row]
            epochs = [row["epoch"] for row in rows]
            assert epochs[at] >= epochs[at - 1] and epochs[at + 1] == epochs[at] + 1
            trained = epochs[:at] + epochs[at + 1 :]
            assert trained == sorted(set(trained))

            metrics = recorded[lost]
            assert metrics["end_state"] == "finished"
            history = json.loads((study_dir / "trials" / lost / "history.json").read_text())
            assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
            client = MlflowClient(uri)
            run = client.get_run(metrics["mlflow_run_id"])
            assert run.info.status == "FINISHED"
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")]
            assert sorted(steps) == list(range(1, EPOCHS + 1))  # each epoch logged once
            output = (tmp_path / "lost.txt").read_text()
            assert f"open the MLflow UI at: {uri}" in output

        # A machine without the cluster's token is refused at once, saying what to copy.
        other_home = tmp_path / "no-token-home"
        other_home.mkdir()
        refused = subprocess.run(
            [
                sys.executable,
                str(RUN),
                "--space",
                str(space),
                "--name",
                "refused",
                *data,
                "--address",
                cluster.address,
            ],
            env={**driver_env, "HOME": str(other_home)},
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
        cluster.stop()
