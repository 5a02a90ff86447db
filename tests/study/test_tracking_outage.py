"""A tracking store that is locked or down while a study logs: nothing lost, nothing twice.

Real MLflow stores throughout. The SQLite store is locked by another
process holding ``BEGIN EXCLUSIVE`` on it (as `sqlite3` or a second tool
would), started and stopped by the test's own events; the server is a real
`mlflow server`, killed and started again on its port.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.study.processes import free_port, kill_session, start_mlflow_server
from tracking.names import EPOCH_METRICS, TRIAL_TAG
from tracking.runs import dataset_input
from tracking.study_tracker import PENDING, StudyTracker

PARAMS = {"lr": 0.001, "units": 8}
EPOCH_KEYS = ("train_loss", "val_roc_auc")
UNREACHABLE = "unreachable ("
BACK = "is back;"

# Holds an exclusive lock on the database until its stdin is closed.
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
db.close()
"""


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process holds `BEGIN EXCLUSIVE` on `database` inside the block."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.close()
        assert locker.wait(timeout=60) == 0


class Said(logging.Handler):
    """Set when the tracker logs a message containing `words`."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


@pytest.fixture
def said_unreachable() -> Iterator[threading.Event]:
    handler = Said(UNREACHABLE)
    logger = logging.getLogger("tracking.writer")
    logger.addHandler(handler)
    yield handler.event
    logger.removeHandler(handler)


def sqlite_tracker(tmp_path: Path) -> StudyTracker:
    return StudyTracker(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "outage",
        artifact_root=tmp_path / "artifacts",
        dataset=dataset_input("synthetic", (tmp_path / "data").as_uri(), {"tracks": 3}),
    )


def log_epochs(tracker: StudyTracker, trial_id: str, epochs: range) -> None:
    """As the recorder does: the trial's run asked for on every result."""
    for epoch in epochs:
        record = {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "val_roc_auc": 0.5 + epoch / 100,
            "timestamp": 1_700_000_000 + epoch,
        }
        tracker.log_epoch(tracker.trial_run(trial_id, f"trial {trial_id}", PARAMS), record)


def trial_runs(client: MlflowClient, tracker: StudyTracker, trial_id: str) -> list:
    return client.search_runs([tracker.experiment_id], f"tags.`{TRIAL_TAG}` = '{trial_id}'")


def assert_logged_once(
    client: MlflowClient, tracker: StudyTracker, trial_id: str, epochs: int
) -> str:
    """The trial has one run, with its params, its dataset and every epoch once; its id."""
    (run,) = trial_runs(client, tracker, trial_id)
    run = client.get_run(run.info.run_id)
    assert run.data.params == {key: str(value) for key, value in PARAMS.items()}
    assert len(run.inputs.dataset_inputs) == int(tracker.dataset is not None)
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, EPOCH_METRICS[key])]
        assert sorted(steps) == list(range(1, epochs + 1)), (trial_id, key, steps)
    return run.info.run_id


def said(caplog, words: str) -> int:
    return sum(words in record.getMessage() for record in caplog.records)


def assert_no_tracebacks(caplog) -> None:
    assert not [record.getMessage() for record in caplog.records if record.exc_info]


@pytest.mark.slow  # SQLite waits 20 s for a lock before MLflow says it is locked
def test_a_locked_sqlite_store_delays_the_writes_and_loses_none(tmp_path, caplog, said_unreachable):
    caplog.set_level(logging.WARNING)
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    log_epochs(tracker, "a", range(1, 3))
    assert tracker.drain(60)
    first = tracker.trial_run("a", "trial a", PARAMS)
    assert not first.startswith(PENDING)

    with locked(tmp_path / "mlflow.db"):
        # Every call returns while the store is locked: nothing waits for it.
        log_epochs(tracker, "a", range(2, 5))  # epoch 2 again: skipped
        assert tracker.trial_run("b", "trial b", PARAMS) == PENDING + "b"
        log_epochs(tracker, "b", range(1, 4))
        assert said_unreachable.wait(timeout=120)
        log_epochs(tracker, "a", range(5, 7))
        tracker.finish_trial(first, {"test_roc_auc": 0.7}, "finished", [])
        tracker.reopen(tracker.trial_run("b", "trial b", PARAMS))
        assert tracker.pending > 0

    assert tracker.drain(60)
    client = MlflowClient(tracker.tracking_uri)
    assert assert_logged_once(client, tracker, "a", epochs=6) == first
    second = assert_logged_once(client, tracker, "b", epochs=3)
    assert tracker.trial_run("b", "trial b", PARAMS) == second
    assert client.get_run(first).info.status == "FINISHED"
    assert said(caplog, UNREACHABLE) == 1 and said(caplog, BACK) == 1
    assert "database is locked" in caplog.text
    assert_no_tracebacks(caplog)


def test_the_drain_is_bounded_and_says_a_resume_logs_the_rest(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    log_epochs(tracker, "a", range(1, 2))
    assert tracker.drain(60)
    with locked(tmp_path / "mlflow.db"):
        log_epochs(tracker, "a", range(2, 5))
        assert not tracker.drain(0.2)
        assert tracker.pending == 3
        assert not tracker.drain(0.1)  # said once
    assert said(caplog, "3 write(s) not sent") == 1 and "--resume" in caplog.text
    assert tracker.drain(60)
    assert_logged_once(MlflowClient(tracker.tracking_uri), tracker, "a", epochs=4)
    assert_no_tracebacks(caplog)


def test_a_bad_write_fails_loudly_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    tracker.log_epoch("0" * 32, {"epoch": 1, "val_roc_auc": 0.5})  # no such run
    with pytest.raises(MlflowException, match="0" * 32):
        tracker.drain(60)
    log_epochs(tracker, "a", range(1, 3))  # the failure was raised; the tracker goes on
    assert tracker.drain(60)
    assert_logged_once(MlflowClient(tracker.tracking_uri), tracker, "a", epochs=2)
    assert said(caplog, UNREACHABLE) == 0


def test_a_resumed_study_finds_its_runs_and_handles(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    log_epochs(tracker, "a", range(1, 4))
    tracker.finish_study("KILLED")
    # A later driver: the handle an earlier one wrote for "a" (its run made by then), and
    # one for a trial whose run never was; epochs logged before are not logged again.
    resumed = sqlite_tracker(tmp_path)
    resumed.start({"space": "outage"})
    assert resumed.parent_run_id == tracker.parent_run_id
    history = [{"epoch": epoch, "val_roc_auc": 0.6, "train_loss": 0.1} for epoch in range(1, 6)]
    resumed.log_missing_epochs(PENDING + "a", history)
    resumed.log_missing_epochs(PENDING + "never", history)
    log_epochs(resumed, "a", range(2, 7))
    resumed.finish_study()
    assert resumed.pending == 0
    client = MlflowClient(resumed.tracking_uri)
    assert_logged_once(client, resumed, "a", epochs=6)
    assert client.get_run(resumed.parent_run_id).info.status == "FINISHED"
    assert said(caplog, "trial never: no MLflow run") == 1
    assert said(caplog, UNREACHABLE) == 0


# A real server, killed and started again ---------------------------------------------------


@pytest.mark.slow
def test_a_killed_and_restarted_server_loses_nothing(
    tmp_path, caplog, said_unreachable, monkeypatch
):
    # MLflow's own retries would hide a short outage (and block for minutes on a long one):
    # without them the tracker's own queue and backoff are what is tested.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    caplog.set_level(logging.WARNING)
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        tracker = StudyTracker(f"http://127.0.0.1:{port}", "outage")
        tracker.start({"space": "outage"})
        log_epochs(tracker, "a", range(1, 3))
        assert tracker.drain(60)
        first = tracker.trial_run("a", "trial a", PARAMS)

        kill_session(server)
        log_epochs(tracker, "a", range(3, 6))
        log_epochs(tracker, "b", range(1, 3))
        assert said_unreachable.wait(timeout=60)
        artifact = tmp_path / "config.json"
        artifact.write_text("{}")
        tracker.finish_trial(first, {"test_roc_auc": 0.7}, "finished", [artifact])
        server = start_mlflow_server(tmp_path, port)

        assert tracker.drain(60)
        client = MlflowClient(tracker.tracking_uri)
        assert_logged_once(client, tracker, "a", epochs=5)
        assert_logged_once(client, tracker, "b", epochs=2)
        assert [a.path for a in client.list_artifacts(first)] == ["config.json"]
        assert client.get_run(first).info.status == "FINISHED"
        assert said(caplog, UNREACHABLE) == 1 and said(caplog, BACK) == 1
        assert_no_tracebacks(caplog)
    finally:
        kill_session(server)


def test_the_tracker_pickles_without_its_writer(tmp_path):
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    log_epochs(tracker, "a", range(1, 2))
    copy = pickle.loads(pickle.dumps(tracker))
    assert tracker.drain(60)
    assert copy.pending == 0 and copy.parent_run_id == tracker.parent_run_id


def test_a_stop_drops_the_ends_writes_not_the_trials(tmp_path):
    """A stop signal in the end: the end's writes not yet begun are dropped (a resume does
    them, once); the trials' writes still go, in order."""
    tracker = sqlite_tracker(tmp_path)
    tracker.start({"space": "outage"})
    done = []
    with locked(tmp_path / "mlflow.db"):
        log_epochs(tracker, "a", range(1, 3))
        tracker.queue("an end write", lambda again: done.append("end"))
        log_epochs(tracker, "b", range(1, 2))
        tracker.queue("another end write", lambda again: done.append("end"))
        assert tracker.drop_end_writes() == 2
    assert tracker.drain(60)
    assert done == []
    assert_logged_once(MlflowClient(tracker.tracking_uri), tracker, "a", epochs=2)
    assert_logged_once(MlflowClient(tracker.tracking_uri), tracker, "b", epochs=1)
