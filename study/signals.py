"""SIGINT and SIGTERM stop a study the way Ctrl-C does, in every phase of the driver.

The driver sets both handlers itself on its first line, whatever it
inherited: a process started with `&` from a script or under `nohup`
inherits SIGINT ignored, and Ray's `ray.init` puts its own SIGTERM handler
(an abrupt exit) in place. Outside Ray Tune's `fit` a signal raises
KeyboardInterrupt where the driver is, which ends the study with its table
so far, its MLflow runs KILLED and the resume command. Inside `fit` a
signal asks Tune to stop after its trials' last checkpoints (through Tune's
SIGUSR1 handler; Tune's own SIGINT handler, which outlives `fit` and only
sets a flag nothing reads afterwards, is never installed), and the driver
stops once `fit` returns. A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StudyStop:
    """The driver's stop signals: which arrived first (None: none yet)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._in_fit = False

    def install(self) -> None:
        """Our handlers for SIGINT and SIGTERM, replacing whatever is there (inherited,
        Ray's); call again after anything that may have replaced them."""
        # Tune installs a SIGINT handler for `fit` unless told not to, and leaves it there.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop signal arrived (a phase that only noted it)."""
        if self.received is not None:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def around_fit(self) -> Iterator[None]:
        """Signals during Ray Tune's `fit` stop it gracefully; KeyboardInterrupt once it
        returned if one arrived, and our handlers back in place either way."""
        self.check()
        usr1 = signal.getsignal(signal.SIGUSR1)
        self._in_fit = True
        try:
            yield
        finally:
            self._in_fit = False
            signal.signal(signal.SIGUSR1, usr1)
            self.install()
        self.check()

    def stop_fit(self) -> None:
        """Ask a running `fit` to stop gracefully, as a signal would, for a fault the driver
        reports itself (a full disk, a failed MLflow store)."""
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if self._in_fit and callable(tune_stop):
            tune_stop(signal.SIGUSR1, None)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None:
            os.write(2, f"\n{signal.Signals(number).name} again: stopping at once\n".encode())
            os._exit(128 + number)
        self.received = number
        name = signal.Signals(number).name
        os.write(2, f"\n{name}: stopping the study; a second signal stops at once\n".encode())
        if self._in_fit:
            self.stop_fit()  # Tune's handler, while `fit` runs; the driver stops after it
            return
        raise KeyboardInterrupt


STOP = StudyStop()  # the driver's one: study.run installs it, study.driver wraps `fit` in it
