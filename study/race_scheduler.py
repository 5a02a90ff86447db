"""The `race` scheduler: Ray Tune's extension point driving `study.race`'s rule.

A trial that reaches the next undecided rung waits there until every live
trial of the study has reached that rung or ended; the rung is then decided
(`study.race.Race.advance`), the dropped rows' trials stop and the kept ones
train on. A waiting trial is paused (its process ends and its slot goes to
another trial; it continues later from its checkpoint) while other trials
need a slot, and held otherwise: its process keeps its state and slot and
trains on from memory once the rung is decided, without the cost of a
restart. Pausing or holding changes when a trial trains, never what it
computes, so the decisions are the same either way.

Results are read as the trials report them; a trial that restores from a
checkpoint first reports the epoch it restored with its scores so far
(`study.trial_reports.RESTORED_KEY`), so a resumed study knows every trial's
history before any trains on, and re-derives the same decisions.

Ray starts every PENDING trial its resources allow, whatever the scheduler
says; a study's `--max-concurrent` is therefore kept by the trial generator
(`RaceTrialGenerator`), which does not count the trials paused at a rung as
running, and by `choose_trial_to_run`, which releases paused trials only
into free slots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import BasicVariantGenerator

from study.race import Course, Race, RaceRule, RowDecision, score_of
from study.trial_reports import ENDED_KEY, FAILED_KEY, RESTORED_KEY, STORAGE_KEY

FAILED_KEYS = (FAILED_KEY, STORAGE_KEY)  # a trial's last result when it failed for good


class RaceTrialGenerator(BasicVariantGenerator):
    """Ray's variant generator whose `max_concurrent` leaves out the trials paused at a rung:
    with them counted, a paused trial would hold its slot and the rung it waits at would
    wait for trials that are never created.

    Its search is not over while trials wait paused at a rung: once the search is over Ray
    ends a stopped trial's worker process instead of keeping it for the next trial, and
    every paused trial would restart in a new process (its imports again, seconds a trial)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._parked: set[str] = set()  # paused at a rung: they will run again

    def park(self, trial_id: str) -> None:
        self._live_trials.discard(trial_id)
        self._parked.add(trial_id)

    def unpark(self, trial_id: str) -> None:
        self._parked.discard(trial_id)
        self._live_trials.add(trial_id)

    def forget(self, trial_id: str) -> None:
        """The trial ended (stopped with its row, or failed): it will not run again."""
        self._parked.discard(trial_id)

    def is_finished(self) -> bool:
        return super().is_finished() and not self._parked


class RaceScheduler(TrialScheduler):
    """Synchronous rungs over rows of seeded trials (see `study.race`)."""

    _supports_buffered_results = False  # a trial must stop at its rung's result, not after

    def __init__(
        self,
        rule: RaceRule,
        expected: int,
        identify: Callable[[Trial], tuple[str, str, tuple[Any, ...]]],
        metric: str,
        recorded: list[Course] = (),
        generator: RaceTrialGenerator | None = None,
        on_rung: Callable[[list[RowDecision]], None] | None = None,
    ) -> None:
        """`identify(trial)`: its study key, row name and draw. `recorded`: the trials that
        ended before this run (a resume), with their whole histories. `expected`: every
        trial of the study, recorded ones included. `generator`: the run's trial generator,
        whose `max_concurrent` (0: none) the scheduler keeps when it releases trials."""
        super().__init__()
        self.race = Race(rule, expected)
        for course in recorded:
            self.race.courses[course.key] = course
        self.identify = identify
        self.selection = metric
        self.generator = generator
        self.on_rung = on_rung
        self._trials: dict[str, Trial] = {}  # key -> Ray's trial
        self._keys: dict[str, str] = {}  # Ray's trial id -> key
        self._released: set[str] = set()  # paused at a decided rung: may run on
        self._held: set[str] = set()  # waiting at the rung in their running process

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the metric is the study's, given at construction

    # Ray Tune hooks -------------------------------------------------------

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._trials[self._course(trial).key] = trial
        self._advance(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        course = self._course(trial)
        self._released.discard(course.key)
        if any(result.get(key) for key in FAILED_KEYS):
            course.failed = True  # its end follows; it no longer holds a rung up
        elif RESTORED_KEY in result:
            course.scores = [score_of(v) for v in json.loads(result[RESTORED_KEY])]
        elif not result.get(ENDED_KEY) and "epoch" in result:
            epoch = int(result["epoch"])
            course.scores = course.scores[: epoch - 1]
            course.scores += [math.nan] * (epoch - 1 - len(course.scores))
            course.scores.append(score_of(result.get(self.selection)))
        self._advance(tune_controller, trial)
        if not self.race.live(course.row):
            return TrialScheduler.STOP
        waiting_at = self.race.next_rung
        if waiting_at is not None and course.epochs >= waiting_at and not course.failed:
            if self._may_hold(tune_controller, trial):
                self._held.add(course.key)
                return TrialScheduler.NOOP
            if self.generator is not None:
                self.generator.park(trial.trial_id)
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._end(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._course(trial).failed = True
        self._end(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._end(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        limit = self.generator.max_concurrent if self.generator is not None else 0
        busy = sum(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials)
        if limit and busy >= limit:
            return None
        for trial in trials:
            if trial.status == Trial.PAUSED and self._course(trial).key in self._released:
                if self.generator is not None:
                    self.generator.unpark(trial.trial_id)
                return trial
        return None

    def debug_string(self) -> str:
        rung = self.race.next_rung
        return f"race: {len(self.race.decided)} rung(s) decided, next at epoch {rung}"

    # ----------------------------------------------------------------------

    def dropped_at(self, key: str) -> int | None:
        """The rung that dropped this trial's row; None if it was not dropped."""
        course = self.race.courses.get(key)
        return None if course is None else self.race.dropped.get(course.row)

    def _course(self, trial: Trial) -> Course:
        key = self._keys.get(trial.trial_id)
        if key is None:
            key, row, draw = self.identify(trial)
            self._keys[trial.trial_id] = key
            if key not in self.race.courses:
                self.race.courses[key] = Course(key, row, draw)
        return self.race.courses[key]

    def _may_hold(self, tune_controller, current: Trial) -> bool:
        """Whether a trial at its rung may wait in its process: no other trial needs a slot
        (none is pending, none released from a rung, none left to create)."""
        if _controller(tune_controller, "_schedule_trial_train") is None:
            return False
        if len(self.race.courses) < self.race.expected:
            return False  # trials not yet created wait for slots
        for trial in tune_controller.get_trials():
            if trial is current:
                continue
            if trial.status == Trial.PENDING:
                return False
            if trial.status == Trial.PAUSED and self._keys.get(trial.trial_id) in self._released:
                return False
        return True

    def _end(self, tune_controller, trial: Trial) -> None:
        course = self._course(trial)
        if not course.failed and trial.status == Trial.ERROR:
            course.failed = True
        course.ended = True
        self._released.discard(course.key)
        self._held.discard(course.key)
        if self.generator is not None:
            self.generator.forget(trial.trial_id)
        self._advance(tune_controller, trial)

    def _advance(self, tune_controller, current: Trial) -> None:
        """Decide the rungs that are ready; stop the dropped rows' waiting trials, let the
        kept held ones train on and release the kept paused ones."""
        decided = self.race.advance()
        if not decided:
            return
        for decisions in decided:
            if self.on_rung is not None:
                self.on_rung(decisions)
        waiting_at = self.race.next_rung
        for key, trial in self._trials.items():
            course = self.race.courses[key]
            if key in self._held and trial is not current:
                self._release_held(tune_controller, trial, course, waiting_at)
                continue
            if trial is current or trial.status != Trial.PAUSED:
                continue
            if not self.race.live(course.row):
                self._released.discard(key)
                tune_controller.stop_trial(trial)
            elif not (course.ended or course.failed) and (
                waiting_at is None or course.epochs < waiting_at
            ):
                self._released.add(key)

    def _release_held(
        self, tune_controller, trial: Trial, course: Course, waiting_at: int | None
    ) -> None:
        """A held trial after its rung's decision: stopped with its row, or training on."""
        if not self.race.live(course.row):
            self._held.discard(course.key)
            tune_controller.stop_trial(trial)
        elif waiting_at is None or course.epochs < waiting_at:
            self._held.discard(course.key)
            _controller(tune_controller, "_schedule_trial_train")(trial)


def _controller(tune_controller, name: str) -> Callable | None:
    """The controller's own `name`, past the wrapper Ray hands schedulers. A trial that
    answered NOOP is held: Ray has no public call that lets it train on, and
    `_schedule_trial_train` is what Ray itself runs for CONTINUE. Without it (another Ray)
    trials at a rung are paused instead."""
    inner = getattr(tune_controller, "_tune_controller", tune_controller)
    return getattr(inner, name, None)
