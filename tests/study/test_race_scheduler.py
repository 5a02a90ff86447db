"""The race scheduler in a real Ray Tune run: synchronous rungs whatever the concurrency.

The trainable here is a stand-in for training (`tests.study.race_toy`) so
that the test is about the scheduler: pausing or holding at a rung, releasing
and stopping, and decisions that equal `study.race.replay` of the same
histories with 1, 3 or all 12 trials at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from study.race import DROPPED, Course, RaceRule, replay
from study.race_scheduler import RaceScheduler, RaceTrialGenerator
from tests.study.processes import local_ray
from tests.study.race_toy import EPOCHS, ROWS, SEEDS, score, toy_trial

RULE = RaceRule(rungs=(2, 4), reduction_factor=2, alpha=0.05)


def identify(trial) -> tuple[str, str, tuple]:
    config = trial.config
    return f"{config['row']}-{config['seed']}", config["row"], (config["seed"],)


def run_race(
    tmp_path: Path, concurrent: int, cpus_per_trial: float = 1.0
) -> tuple[RaceScheduler, list, list[int], list[str]]:
    """The scheduler after the run, Ray's results, the furthest epoch any trial had
    reached when each rung was decided, and the trials restored from their state (once a
    restart). Every start runs in one of `concurrent` worker processes, kept by Ray for
    the next trial or restart."""
    state = tmp_path / f"state-{concurrent}"
    state.mkdir()
    generator = RaceTrialGenerator(max_concurrent=concurrent)
    furthest: list[int] = []
    scheduler = RaceScheduler(
        RULE,
        expected=len(ROWS) * len(SEEDS),
        identify=identify,
        metric="val",
        generator=generator,
        on_rung=lambda _: furthest.append(max(c.epochs for c in scheduler.race.courses.values())),
    )
    with local_ray(cpus=3):
        results = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(
                    toy_trial, state_dir=str(state), start_together=cpus_per_trial < 1
                ),
                {"cpu": cpus_per_trial},
            ),
            param_space={
                "row": tune.grid_search(list(ROWS)),
                "seed": tune.grid_search(list(SEEDS)),
            },
            tune_config=tune.TuneConfig(
                metric="val",
                mode="max",
                scheduler=scheduler,
                search_alg=generator,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / f"ray-{concurrent}"), verbose=0),
        ).fit()
    restores = state / "restores.txt"
    workers = set((state / "workers.txt").read_text().split())
    assert len(workers) <= concurrent  # a paused trial restarts in a kept worker process
    return scheduler, results, furthest, restores.read_text().split() if restores.is_file() else []


@pytest.mark.slow  # a Ray Tune run of 12 short trials: ~20 s on the 2-core VM
@pytest.mark.parametrize("concurrent", [1, 3, 12])
def test_rungs_are_synchronous_and_equal_the_replay(tmp_path, concurrent):
    """One or three trials at a time: those that reach a rung while others need their slot
    are paused and restart (in the worker kept for them); all twelve at once: every trial
    waits at its rungs in its own process, and none restarts."""
    scheduler, results, furthest, restores = run_race(
        tmp_path, concurrent=concurrent, cpus_per_trial=3 / concurrent
    )
    assert furthest == list(RULE.rungs)  # no trial trained past a rung before its decision
    assert not scheduler._held
    if concurrent < len(ROWS) * len(SEEDS):
        assert len(restores) >= 6  # at each rung, more trials waited than slots
    else:
        assert restores == []
    decided = scheduler.race.to_json()
    courses = [
        Course(f"{row}-{seed}", row, (seed,), [score(row, seed, e) for e in range(1, EPOCHS + 1)])
        for row in ROWS
        for seed in SEEDS
    ]
    # The replay of whole curves: a dropped row's later epochs never enter its rungs.
    expected = replay(RULE, [_ended(c) for c in courses]).to_json()
    assert decided == expected
    dropped = {d["row"] for d in decided if d["decision"] == DROPPED}
    assert "bad" in dropped and "good" not in dropped
    epochs = {(r.config["row"], r.config["seed"]): r.metrics["epoch"] for r in results}
    for (row, _), ran in epochs.items():
        if row in dropped:
            rung = next(d["epoch"] for d in decided if d["row"] == row and d["decision"] == DROPPED)
            assert ran == rung  # stopped at the rung that dropped it, not an epoch later
        else:
            assert ran == EPOCHS


def _ended(course: Course) -> Course:
    course.ended = True
    return course
