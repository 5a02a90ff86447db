"""A study's own local Ray cluster, its processes outside the driver's process group."""

from __future__ import annotations

import os
import subprocess
import sys

import ray
from ray._private import services

# The cluster's reaper: it reads its stdin, a pipe only the driver writes to,
# until the driver is gone (EOF, however the driver ended), then ends its own
# process group, the cluster's, itself included.
_REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.buffer.read()
os.killpg(0, signal.SIGTERM)
time.sleep(1)
os.killpg(0, signal.SIGKILL)
"""
_reaper: subprocess.Popen | None = None  # held: its pipe closes with the driver


def start_local_cluster(num_cpus: int) -> None:
    """Start this driver's own Ray cluster (never one a `ray start` left on this node),
    in a process group of its own.

    `ray.init(address="local")` starts the GCS server, the raylet and its helper
    processes as children of the driver, in the driver's process group. They
    block SIGINT but die on SIGTERM, so a SIGTERM to the whole group (GNU
    `timeout`, Slurm ending a job, `kill -TERM -PGID`) took the cluster down
    under the driver while it was stopping Tune cleanly: it hung on "Failed to
    connect to GCS" and ended without its summary or resume hint, its MLflow
    runs left RUNNING.

    Here the driver first starts a reaper in a new process group, and Ray's
    processes join that group (`setpgid` before exec, in the driver's session;
    the raylet's agents inherit it, and Ray gives each worker a group of its
    own, so a worker's own children are as before). A signal to the driver's
    group reaches the driver alone, which stops as on Ctrl-C and shuts the
    cluster down itself. Nothing outlives the driver, SIGKILL included: Ray
    starts its processes with PR_SET_PDEATHSIG (SIGKILL), the workers end once
    their raylet is gone, and the reaper ends the raylet's agents (which wait a
    minute for a GCS that is gone before they exit) when the driver's end of
    its pipe closes. Their standard input is /dev/null: a process of a
    background group that read the terminal would be stopped.

    Ray starts its processes through `ray._private.services.ConsolePopen` (a
    `subprocess.Popen`); that name is replaced for the duration of `ray.init`
    only. tests/study/test_group_signals.py checks the groups, should a Ray
    upgrade start its processes another way.
    """
    global _reaper
    if _reaper is None or _reaper.poll() is not None:  # one per driver, kept across inits
        _reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            **_in_group(0),
        )
    ray_popen = services.ConsolePopen

    class InClusterGroup(ray_popen):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.update(_in_group(_reaper.pid, kwargs.pop("preexec_fn", None)))
            if kwargs.get("stdin") is None:
                kwargs["stdin"] = subprocess.DEVNULL
            super().__init__(*args, **kwargs)

    services.ConsolePopen = InClusterGroup
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        services.ConsolePopen = ray_popen


def _in_group(group: int, then=None) -> dict:
    """Popen arguments that start a process in process group `group` (0: a new one that
    it leads), before `then` (a preexec_fn Ray passes, e.g. its parent-death signal)."""
    if sys.version_info >= (3, 11) and then is None:
        return {"process_group": group}

    def join() -> None:
        os.setpgid(0, group)
        if then is not None:
            then()

    return {"preexec_fn": join}
