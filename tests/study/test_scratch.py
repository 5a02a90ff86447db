"""Scratch folders: a killed trial's is swept from the node, a living trial's never."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from study import scratch

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from study.scratch import Scratch
folder = Scratch("killed_00000")
print(folder.path, flush=True)
time.sleep(600)
"""


@pytest.fixture
def node_tmp(tmp_path, monkeypatch) -> Path:
    """This test's own temporary folder as the node's, so no real trial's folder is touched."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_killed_trial_s_folder_is_swept_and_a_living_one_s_is_not(node_tmp):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(node_tmp), "PYTHONPATH": str(REPO)},
    )
    try:
        killed = Path(holder.stdout.readline().strip())
        assert killed.parent == node_tmp and (killed / scratch.LOCK_FILE).is_file()
        (killed / "run").mkdir()
        living = scratch.Scratch("living_00001")  # held by this process, on its own file
        assert scratch.sweep() == []  # both trials live
        holder.send_signal(signal.SIGKILL)  # no finally, no cleanup: the kernel drops its lock
        holder.wait(timeout=30)
        assert scratch.sweep() == [killed]
        assert not killed.exists() and living.path.is_dir()
        living.remove()
        assert not living.path.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_folder_without_a_lock_is_left_over_once_quiet_for_an_hour(node_tmp):
    old, fresh = node_tmp / f"{scratch.PREFIX}old-x", node_tmp / f"{scratch.PREFIX}fresh-y"
    for folder in (old, fresh):
        (folder / "run").mkdir(parents=True)
    for path in (old / "run", old):
        os.utime(path, (0, 0))
    other = node_tmp / "not-a-trial"
    other.mkdir()
    os.utime(other, (0, 0))
    assert scratch.sweep() == [old]
    assert fresh.is_dir() and other.is_dir()
