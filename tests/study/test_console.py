"""The study's console, both ways: a table drawn in place on a terminal, lines in a log."""

from __future__ import annotations

import io
import re

from study.console import StudyConsole, duration, table_lines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def table(*states: str) -> list[tuple[str, ...]]:
    return [("trial", "status"), *((f"t{i}", state) for i, state in enumerate(states))]


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: lines, with cursor-up and erase-line applied."""
    lines, row = [""], 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", output):
        if token == "\n":
            row += 1
            lines.extend([""] * (row + 1 - len(lines)))
        elif token == "\x1b[1A":
            row -= 1
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token and token != "\r" and not token.startswith("\x1b["):
            lines[row] += token
    return [line for line in lines if line]


def events(console: StudyConsole, clock: Clock) -> None:
    """Four trials: two start, one ends at 0:30; a table at 1:00; the rest end by 2:00."""
    console.begin(4)
    console.table(table("running", "running", "pending", "pending"))
    console.trial_started("t0", "block GRU 8")
    console.trial_started("t1", "no attention GRU 8")
    clock.now = 30
    console.trial_ended("trial t0 (block GRU 8): finished after 4 epochs, best val_roc_auc 60.0")
    clock.now = 60
    console.table(table("finished", "running", "running", "pending"))
    for clock.now, key in ((90, "t1"), (100, "t2"), (120, "t3")):
        console.trial_ended(f"trial {key} (x): asha_stopped after 1 epochs")
    console.end(table("finished", "asha_stopped", "asha_stopped", "asha_stopped"))


def test_off_a_terminal_a_line_per_event_and_the_table_at_most_every_few_minutes():
    clock, out = Clock(), io.StringIO()
    console = StudyConsole(live=False, file=out, table_seconds=300, clock=clock)
    events(console, clock)
    lines = out.getvalue().splitlines()
    assert lines == [
        "[0:00] 0 of 4 trials ended",
        *table_lines(table("running", "running", "pending", "pending")),
        "[0:00] trial t0 started: block GRU 8",
        "[0:00] trial t1 started: no attention GRU 8",
        "[0:30] trial t0 (block GRU 8): finished after 4 epochs, best val_roc_auc 60.0; "
        "1 of 4 trials ended, about 1:30 left",
        # no table at 1:00: the last was shown at 0:00
        "[1:30] trial t1 (x): asha_stopped after 1 epochs; 2 of 4 trials ended, about 1:30 left",
        "[1:40] trial t2 (x): asha_stopped after 1 epochs; 3 of 4 trials ended, about 0:33 left",
        "[2:00] trial t3 (x): asha_stopped after 1 epochs; 4 of 4 trials ended",
        "[2:00] 4 trials ended in 2:00",
        *table_lines(table("finished", "asha_stopped", "asha_stopped", "asha_stopped")),
    ]
    clock.now = 419
    assert not console.table_due()
    clock.now = 420  # five minutes after the last table (the end's): the next one is shown
    assert console.table_due()


def test_off_a_terminal_a_stopped_study_says_so_with_its_table():
    clock, out = Clock(), io.StringIO()
    console = StudyConsole(live=False, file=out, clock=clock)
    console.begin(3)
    clock.now = 75
    console.trial_ended("trial t0 (x): finished after 2 epochs")
    console.end(table("finished", "running", "pending"))
    *_, status, header, first, _, _ = out.getvalue().splitlines()
    assert status == "[1:15] stopped: 1 of 3 trials ended"
    assert header.split() == ["trial", "status"] and first.split() == ["t0", "finished"]


def test_on_a_terminal_one_table_updated_in_place_and_a_line_per_ended_trial():
    clock, out = Clock(), io.StringIO()
    console = StudyConsole(live=True, file=out, refresh_seconds=1, clock=clock)
    events(console, clock)
    shown = screen(out.getvalue())
    assert shown == [
        "[0:30] trial t0 (block GRU 8): finished after 4 epochs, best val_roc_auc 60.0; "
        "1 of 4 trials ended, about 1:30 left",
        "[1:30] trial t1 (x): asha_stopped after 1 epochs; 2 of 4 trials ended, about 1:30 left",
        "[1:40] trial t2 (x): asha_stopped after 1 epochs; 3 of 4 trials ended, about 0:33 left",
        "[2:00] trial t3 (x): asha_stopped after 1 epochs; 4 of 4 trials ended",
        "4 trials ended in 2:00",
        *table_lines(table("finished", "asha_stopped", "asha_stopped", "asha_stopped")),
    ]
    assert out.getvalue().count("trial  status") > 1  # drawn again, over itself


def test_on_a_terminal_the_table_line_shows_elapsed_ended_and_left():
    clock, out = Clock(), io.StringIO()
    console = StudyConsole(live=True, file=out, refresh_seconds=1, clock=clock)
    console.begin(6)
    clock.now = 40
    for key in ("t0", "t1"):
        console.trial_ended(f"trial {key} (x): finished after 4 epochs")
    clock.now = 65
    assert console.table_due()
    console.table(table("finished", "finished", "running"))
    assert not console.table_due()  # redrawn at most every second
    assert screen(out.getvalue())[2] == "1:05 elapsed, 2 of 6 trials ended, about 2:10 left"
    console.close()
    assert out.getvalue().endswith("\x1b[?25h")  # the cursor shown again


def test_durations_read_as_a_clock():
    assert [duration(s) for s in (7, 750, 3723)] == ["0:07", "12:30", "1:02:03"]


def test_the_time_left_is_the_smaller_of_the_trials_and_the_epochs_estimates():
    """A race's trials end together at its end: with one of 18 ended at 5:41, the trials'
    rate says 1:36:37; the 90 trial-epochs left at 108 in 5:41 say 4:44. ASHA's trials
    stop early: there the trials' rate is the smaller."""
    clock, out = Clock(), io.StringIO()
    console = StudyConsole(live=False, file=out, clock=clock)
    console.begin(18)
    console.epochs_run, console.epochs_left = 60, lambda: 156
    clock.now = 150
    assert console._progress() == "0 of 18 trials ended, about 6:30 left"
    clock.now = 341
    console.epochs_run, console.epochs_left = 108, lambda: 90
    console.trial_ended("trial t5 (attention CNN seed=0): race_dropped after 6 epochs")
    assert out.getvalue().endswith("1 of 18 trials ended, about 4:44 left\n")
    console.begin(18)  # ASHA: ten of 18 trials stopped after 2 or 3 epochs by 6:40
    clock.now += 400
    console.epochs_run, console.epochs_left = 30, lambda: 8 * 12
    for key in range(10):
        console.trial_ended(f"trial t{key} (x): asha_stopped after 2 epochs")
    assert out.getvalue().endswith("10 of 18 trials ended, about 5:20 left\n")
