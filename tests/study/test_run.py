"""The driver's flags that shape a study before Ray starts: --scheduler and the console."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from mer_models.data.splits import DatasetPaths
from study.driver import (
    StudyOptions,
    check_trial_configs,
    decision_epochs,
    make_scheduler,
    race_rule,
)
from study.run import LIBRARY_LOGGERS, configure_console, parse_args
from study_folder.search_space import load_space


def options_for(space) -> StudyOptions:
    return StudyOptions(
        space=space,
        name="t",
        storage=None,
        data=DatasetPaths("metadata", "melspecs"),
        tracking_uri="",
        budget="quick",
    )


def test_scheduler_flag_overrides_the_space():
    space = load_space("table1")
    assert space.scheduler.type == "race"
    fifo = space.with_scheduler(parse_args(["--scheduler", "fifo"])[0].scheduler)
    assert fifo.scheduler.type == "fifo" and fifo.parameters == space.parameters
    assert isinstance(make_scheduler(options_for(fifo)), FIFOScheduler)
    assert space.with_scheduler(None) is space
    asha = fifo.with_scheduler("asha")
    assert isinstance(make_scheduler(options_for(asha)), ASHAScheduler)
    race = fifo.with_scheduler(parse_args(["--scheduler", "race"])[0].scheduler)
    assert race.scheduler == space.scheduler  # grace, reduction and alpha kept through fifo


@pytest.mark.parametrize(
    "grace, reduction, epochs", [(1, 2, 12), (2, 2, 12), (2, 3, 18), (6, 2, 12), (4, 4, 100)]
)
def test_trials_predict_the_test_set_at_every_epoch_the_scheduler_may_stop_them(
    grace, reduction, epochs
):
    """A trial's test predictions wait for its decision epochs: each epoch at which ASHA
    may stop it (its milestones, read from Ray's scheduler) is one, or is its last epoch;
    a race decides at its own rungs, and FIFO never stops a trial."""
    space = load_space("table1").with_scheduler("asha")
    spec = dataclasses.replace(
        space.scheduler, grace_period=grace, reduction_factor=reduction, max_epochs=epochs
    )
    asha = dataclasses.replace(space, scheduler=spec)
    milestones = {m for m, _ in make_scheduler(options_for(asha))._brackets[0]._rungs}
    assert milestones - {epochs} <= set(decision_epochs(options_for(asha)))
    race = dataclasses.replace(asha, scheduler=dataclasses.replace(spec, type="race"))
    assert decision_epochs(options_for(race)) == race_rule(options_for(race)).rungs
    assert decision_epochs(options_for(asha.with_scheduler("fifo"))) == ()


def test_race_over_an_optuna_space_is_refused_before_anything_is_written(tmp_path):
    race = load_space("wide").with_scheduler("race")
    with pytest.raises(ValueError, match="wide.yaml: --scheduler race: race compares whole rows"):
        check_trial_configs(options_for(race))


def test_the_console_keeps_library_loggers_quiet_unless_verbose(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    saved = {name: logging.getLogger(name).level for name in (*LIBRARY_LOGGERS, "study")}
    try:
        configure_console(verbose=False)
        assert all(logging.getLogger(n).level == logging.ERROR for n in LIBRARY_LOGGERS)
        assert logging.getLogger("study").level == logging.INFO
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # Ray's box and TensorBoard hint off
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def options_of_run(monkeypatch, tmp_path):
    """`run(flags)` in process, stopped before Ray: the StudyOptions each call built."""
    import study.driver
    import study.run

    seen = []

    def stop_before_ray(options):
        seen.append(options)
        raise ValueError("stopped before Ray")

    monkeypatch.setattr(study.driver, "check_trial_configs", stop_before_ray)
    monkeypatch.setattr(study.run, "configure_console", lambda verbose: None)

    def run(*flags):
        assert study.run.run(["--space", "smoke", "--storage", str(tmp_path), *flags]) == 2
        return seen[-1]

    return run


def test_no_cuda_graphs_turns_the_graph_off_for_every_trial(options_of_run):
    """The flag is a fixed value over the study's space, so every trial's config has it."""
    from study.driver import param_space

    with_graphs = param_space(options_of_run("--gpus-per-trial", "0.5"))
    without = param_space(options_of_run("--gpus-per-trial", "0.5", "--no-cuda-graphs"))
    assert "cuda_graphs" not in with_graphs  # the config's default: on
    assert without["cuda_graphs"] is False
    assert set(without) == {*with_graphs, "cuda_graphs"}
    # On a CPU the CUDA-only switches are recorded as they act: off.
    on_cpu = param_space(options_of_run())
    assert [on_cpu[name] for name in ("bf16", "cuda_graphs")] == [False] * 2
    assert "channels_last" not in on_cpu  # the config's default, on every device: on


def test_a_resume_may_turn_the_graph_off_for_the_trials_it_continues(options_of_run):
    """After a capture failed, `--resume --no-cuda-graphs` continues the recorded trials
    eagerly: cuda_graphs follows the run, like threads and workers, not the record."""
    from mer_models.config import TrainConfig
    from study.driver import _explicit_space
    from study.trainable import RECORDED_KEY, trial_config
    from study_folder.records import identity

    recorded = {"key": "k1", "config": TrainConfig(cuda_graphs=True).to_dict()}
    space = _explicit_space(options_of_run("--no-cuda-graphs"), [recorded])
    ray_config = {**{k: v for k, v in space.items() if k != RECORDED_KEY}, RECORDED_KEY: recorded}
    assert trial_config(ray_config).cuda_graphs is False
    assert identity(TrainConfig(cuda_graphs=False).to_dict()) == identity(recorded["config"])


def test_a_space_is_checked_without_importing_ray():
    """Ray reads its auth mode once, on import: the driver sets it (--address) after the space
    is read, so reading a space must not import Ray (it also keeps a bad space a fast error)."""
    import subprocess
    import sys

    code = (
        "import sys, study.run; from study_folder.search_space import load_space; "
        "load_space('smoke'); load_space('wide'); print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_refusal_before_the_study_imports_no_heavy_library(tmp_path):
    """A bad flag or space is refused without Ray, MLflow, PyTorch or scikit-learn (each costs
    seconds to import: a refusal took 1.5 s when the metrics' names imported scikit-learn)."""
    import subprocess
    import sys

    code = (
        "import sys, study.run; "
        f"status = study.run.run(['--space', 'no_such.yaml', '--storage', {str(tmp_path)!r}]); "
        "print(status, sorted(m for m in ('ray', 'mlflow', 'torch', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert "no_such.yaml: no such search space file" in done.stderr


def test_a_study_is_named_after_its_space_and_a_confirmation_after_its_study(tmp_path):
    from study.run import space_study_name, study_name
    from study_folder.records import CONFIRM_FILE, STUDY_FILE

    results = tmp_path / "ray_results"
    (results / "table1").mkdir(parents=True)
    (results / "table1" / STUDY_FILE).write_text("{}")
    (results / "table1" / CONFIRM_FILE).write_text("")
    args, _ = parse_args(["--space", "table1.yaml"])
    assert study_name(args, results, space_study_name("table1.yaml")) == "table1-2"
    confirm = results / "table1" / CONFIRM_FILE
    assert space_study_name(str(confirm)) == "table1-confirm"
    assert study_name(args, results, space_study_name(str(confirm))) == "table1-confirm"
    # A file of that name outside a study folder is a space like any other.
    (tmp_path / CONFIRM_FILE).write_text("")
    assert space_study_name(str(tmp_path / CONFIRM_FILE)) == "confirm"
    args, _ = parse_args(["--space", "table1.yaml", "--name", "mine"])
    assert study_name(args, results, space_study_name("table1.yaml")) == "mine"
