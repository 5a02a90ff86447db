"""What a running study shows on its console: a live table on a terminal, lines in a log.

On a terminal (stdout a TTY) the progress table is drawn once and updated in
place (rich's live display), under a line with the time elapsed, the trials
ended of the total and an estimate of the time left; a line is printed above
it when a trial ends. Off a terminal (a log file, CI, nohup) nothing is
redrawn: one line per event (a trial starts, a trial ends with its score, the
study stops), the whole table at most every `table_seconds`, and once at the
end. Every line of a log starts with the time elapsed, ``[1:05]``.

The recorder (`study.recorder`) tells the events and builds the table (a
header row, then a row per trial) when `table_due` says it is wanted.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

Table = Sequence[Sequence[str]]  # a header row, then one row per trial

TABLE_SECONDS = 300.0  # off a terminal: the whole table at most every five minutes
REFRESH_SECONDS = 1.0  # on a terminal: the table redrawn at most every second


def table_lines(rows: Table) -> list[str]:
    """The rows as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


class StudyConsole:
    """The console of one study's trials. `live`: draw in place (default: stdout is a TTY)."""

    def __init__(
        self,
        live: bool | None = None,
        file: TextIO | None = None,
        table_seconds: float = TABLE_SECONDS,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.file = file
        self.live = _is_terminal(self._out) if live is None else live
        self.table_seconds = table_seconds
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.total: int | None = None  # trials of this run, once it began
        self.ended = 0
        self.epochs_run = 0  # trial-epochs trained in this run so far
        # At most how many trial-epochs are still to train (None: unknown); asked only when
        # an estimate is shown.
        self.epochs_left: Callable[[], int | None] = lambda: None
        self._started: float | None = None
        self._last_table: float | None = None  # when the table was last shown
        self._rows: Table | None = None
        self._display: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler, TextIO]] = []

    @property
    def _out(self) -> TextIO:
        return self.file if self.file is not None else sys.stdout

    # Events ------------------------------------------------------------------

    def begin(self, total: int | None) -> None:
        """The trials begin: `total` of them (None: not known)."""
        self.total, self.ended = total, 0
        self._started, self._last_table = self.clock(), None
        if self.live and self._display is None:
            self._start_display()

    def trial_started(self, key: str, name: str) -> None:
        if not self.live:  # on a terminal the table shows it
            self._line(f"trial {key} started: {name}")

    def trial_ended(self, text: str) -> None:
        """A trial ended; `text` says which and how (``trial K (name): finished after ...``)."""
        self.ended += 1
        self._line(f"{text}; {self._progress()}")
        if self._display is not None:
            self._display.update(self._render(), refresh=True)

    def note(self, text: str) -> None:
        """A line about the study as a whole (a race's rung decided)."""
        self._line(text)

    def table_due(self) -> bool:
        """Whether a table given now would be shown: on a terminal at most every
        `refresh_seconds`, off one every `table_seconds`."""
        wait = self.refresh_seconds if self.live else self.table_seconds
        return self._last_table is None or self.clock() - self._last_table >= wait

    def table(self, rows: Table) -> None:
        """The trials' table now: redrawn in place, or printed whole (off a terminal, only
        when due)."""
        if not self.table_due():
            return
        self._last_table, self._rows = self.clock(), rows
        if self._display is not None:
            self._display.update(self._render(), refresh=True)
        elif not self.live:
            self._print(self._stamp(self._progress()), *table_lines(rows))

    def end(self, rows: Table) -> None:
        """The trials' run ended (finished or stopped): its table, whole, once."""
        self._rows = rows
        stopped = self.total is not None and self.ended < self.total
        what = "stopped: " + self._progress(estimate=False) if stopped else self._finished()
        if self._display is not None:
            self._display.update(self._render(what), refresh=True)
            self.close()
        else:
            self._print(self._stamp(what), *table_lines(rows))
        self._last_table = self.clock()

    def close(self) -> None:
        """Stop drawing in place (the last drawing stays); logging writes to stdout again."""
        if self._display is None:
            return
        self._display.stop()
        self._display = None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []

    # ----------------------------------------------------------------------

    def _elapsed(self) -> float:
        return 0.0 if self._started is None else self.clock() - self._started

    def _progress(self, estimate: bool = True) -> str:
        """``2 of 6 trials ended, about 3:10 left``: the time left at the rate so far."""
        if self.total is None:
            return f"{self.ended} trial(s) ended"
        text = f"{self.ended} of {self.total} trials ended"
        left = self._time_left() if estimate and self.ended < self.total else None
        if left is not None:
            text += f", about {duration(left)} left"
        return text

    def _time_left(self) -> float | None:
        """The smaller of two estimates at the rates so far: the trials left at the trials'
        rate, and the most trial-epochs left at the epochs' rate. Trials that end together
        (a race's, at its last rungs) make the first far too long, and early stops (ASHA's,
        patience) the second."""
        elapsed, estimates = self._elapsed(), []
        if self.ended > 0:
            estimates.append(elapsed / self.ended * (self.total - self.ended))
        epochs_left = self.epochs_left() if self.epochs_run > 0 else None
        if epochs_left is not None:
            estimates.append(elapsed / self.epochs_run * epochs_left)
        return min(estimates) if estimates else None

    def _finished(self) -> str:
        count = f"{self.total} trials" if self.total is not None else f"{self.ended} trial(s)"
        return f"{count} ended in {duration(self._elapsed())}"

    def _stamp(self, text: str) -> str:
        return f"[{duration(self._elapsed())}] {text}"

    def _line(self, text: str) -> None:
        if self._display is not None:
            self._display.console.print(Text(self._stamp(text)), soft_wrap=True)
        else:
            self._print(self._stamp(text))

    def _print(self, *lines: str) -> None:
        print(*lines, sep="\n", file=self._out, flush=True)

    def _render(self, status: str | None = None) -> Group:
        status = status or f"{duration(self._elapsed())} elapsed, {self._progress()}"
        parts = [Text(status, style="bold")]
        if self._rows:
            lines = table_lines(self._rows)
            parts.append(Text(lines[0], style="bold", no_wrap=True, overflow="ellipsis"))
            parts.extend(Text(line, no_wrap=True, overflow="ellipsis") for line in lines[1:])
        return Group(*parts)

    def _start_display(self) -> None:
        console = Console(file=self._out, force_terminal=True)
        self._display = Live(
            self._render(),
            console=console,
            auto_refresh=False,
            redirect_stdout=True,
            redirect_stderr=_is_terminal(sys.stderr),  # a stderr sent elsewhere stays there
        )
        self._display.start()
        atexit.register(self.close)  # the cursor back, however the driver ends
        # Log records (warnings, the study's messages) print above the table, not through it.
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream is self._out:
                self._handlers.append((handler, handler.setStream(sys.stdout)))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False
