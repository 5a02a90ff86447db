"""MLflow writes in order, on one thread, retried while the store is away, bounded at the end.

A study's driver must never stall on its tracking store: a locked SQLite
file, a server that is down or frozen. Its writes (a function of the store
each) are queued here, in order, for one writer thread. A write that fails
for a transient reason (SQLite locked or busy, a server refusing
connections or timing out) stays first in the queue and is tried again
after 1, 2, 4 ... 30 s; any other failure is raised by the next call. A
write raising `SkippedWrite` is dropped with its message, told once per
key. The store's outage is told once, and its return once. `drain` waits
for the queue up to a time; the writes of a study's end share one deadline
(`drain_at_end`), and a stop may drop those not begun (`drop_end_writes`).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

WRITER = "mlflow-writer"  # the name of the thread that sends the queued writes
FIRST_RETRY_S, LAST_RETRY_S = 1.0, 30.0  # the backoff between attempts at a waiting write
_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
_NETWORK_ERRORS = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    requests.exceptions.ChunkedEncodingError,
)
# SQLite's words for a database another connection holds, or cannot open for now.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


class SkippedWrite(Exception):
    """A write that cannot be done and need not be (say, for a run never made): dropped,
    its message told once per `key`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class _Write:
    what: str  # named when it fails for good
    function: Callable[..., None]
    args: tuple[Any, ...]
    attempts: int = 0
    end: bool = False  # a write of the study's end, which a stop may drop (a resume redoes it)


class OrderedWriter:
    """The queue of one store's writes and the thread that sends them (see the module)."""

    def __init__(self, tracking_uri: str, end_timeout_s: float = 120.0) -> None:
        self.tracking_uri = tracking_uri
        self.end_timeout_s = end_timeout_s  # what the end of a study waits for its writes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[_Write] = deque()
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None  # a write that failed for good, raised next
        self._retry_now = False
        self._unreachable = False
        self._sent_since = 0  # writes sent since the store became unreachable
        self._end_deadline: float | None = None
        self._told_unsent = False
        self._skipped: set[str] = set()  # keys whose skipped write was told

    def submit(self, what: str, write: Callable[..., None], *args: Any, end: bool = False) -> None:
        """Queue ``write(*args, again=...)`` (``again``: an earlier attempt may have landed);
        a write that failed for good before is raised here first."""
        self.raise_failure()
        with self._lock:
            self._queue.append(_Write(what, write, args, end=end))
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_all, name=WRITER, daemon=True)
                _quiet_store_errors()
                self._thread.start()

    def raise_failure(self) -> None:
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the queued writes, retrying a waiting one at once.

        True when all were sent. Else False, and a warning (once) that says how
        many were not and that a resume of the study logs what MLflow lacks.
        A write that failed for good is raised here.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._retry_now = True
            self._changed.notify_all()
            while self._queue and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            unsent = len(self._queue)
        self.raise_failure()
        if unsent and not self._told_unsent:
            self._told_unsent = True
            log.warning(
                "MLflow store %s: %d write(s) not sent; the study's records on disk are "
                "complete, and resuming the study (--resume) logs what MLflow lacks",
                self.tracking_uri,
                unsent,
            )
        return not unsent

    def drain_at_end(self) -> bool:
        """`drain` within the end's one deadline: `end_timeout_s` from its first call."""
        if self._end_deadline is None:
            self._end_deadline = time.monotonic() + self.end_timeout_s
        return self.drain(max(self._end_deadline - time.monotonic(), 0.0))

    def end_within(self, seconds: float) -> None:
        """Wait at most `seconds` from now for the writes of the end (a stop signal leaves
        no time for a slow store)."""
        deadline = time.monotonic() + seconds
        if self._end_deadline is None or deadline < self._end_deadline:
            self._end_deadline = deadline

    def drop_end_writes(self) -> int:
        """Forget the end's writes not yet begun (a stop signal: a resume does them, each
        once); how many were dropped."""
        with self._lock:
            first = list(self._queue)[:1] if self._thread is not None else []
            kept = [w for w in list(self._queue)[len(first) :] if not w.end]
            dropped = len(self._queue) - len(first) - len(kept)
            self._queue = deque([*first, *kept])
        return dropped

    @property
    def pending(self) -> int:
        """Writes queued and not yet sent."""
        with self._lock:
            return len(self._queue)

    def _write_all(self) -> None:
        """The writer thread: the queue in order; it ends when the queue is empty."""
        delay = FIRST_RETRY_S
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                write = self._queue[0]
            failure = None
            try:
                write.function(*write.args, again=write.attempts > 0)
            except SkippedWrite as skipped:
                self._tell_skipped(skipped)
            except Exception as error:  # noqa: BLE001 - sorted below, raised by the next call
                write.attempts += 1
                if transient(error):
                    self._tell_unreachable(error)
                    with self._lock:  # `drain` cuts the wait short once
                        self._changed.wait_for(lambda: self._retry_now, timeout=delay)
                        self._retry_now = False
                    delay = min(2 * delay, LAST_RETRY_S)
                    continue
                failure = error
            delay = FIRST_RETRY_S
            with self._lock:
                self._queue.popleft()
                if failure is not None and self._failure is None:
                    if hasattr(failure, "add_note"):  # Python 3.11+
                        failure.add_note(f"(while sending {write.what} to {self.tracking_uri})")
                    self._failure = failure
                back = self._unreachable and not self._queue
                if self._unreachable:
                    self._sent_since += 1
                if back:
                    self._unreachable, sent = False, self._sent_since
                self._changed.notify_all()
            if back:
                log.warning(
                    "MLflow store %s is back; %d queued writes sent", self.tracking_uri, sent
                )

    def _tell_unreachable(self, error: Exception) -> None:
        with self._lock:
            told, self._unreachable = self._unreachable, True
            if not told:
                self._sent_since = 0
        if not told:
            log.warning(
                "MLflow store %s unreachable (%s); training goes on, its records are kept and "
                "sent when it is back",
                self.tracking_uri,
                reason_of(error),
            )

    def _tell_skipped(self, skipped: SkippedWrite) -> None:
        if skipped.key not in self._skipped:
            self._skipped.add(skipped.key)
            log.warning("%s", skipped)


def transient(error: BaseException) -> bool:
    """Whether a failed write may succeed later as it is: the store locked, down or slow.

    A bad request (an unknown run, an invalid value, a schema error) is not.
    """
    for cause in _chain(error):
        if isinstance(cause, sqlite3.OperationalError):
            return any(word in str(cause).lower() for word in _SQLITE_TRANSIENT)
    for cause in _chain(error):
        if isinstance(cause, MlflowException) and cause.error_code in _TRANSIENT_CODES:
            return True
        if isinstance(cause, _NETWORK_ERRORS):
            return True
    return False


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it, outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def reason_of(error: BaseException) -> str:
    """The innermost cause in a few words: 'database is locked', 'Connection refused'."""
    text = str(_chain(error)[-1]).strip().splitlines()
    reason = re.sub(r"^(\(\w+(\.\w+)*\)|\[Errno \d+\])\s*", "", text[0] if text else "")
    reason = reason or type(_chain(error)[-1]).__name__
    return reason if len(reason) <= 100 else reason[:97] + "..."


def _quiet_store_errors() -> None:
    """MLflow logs a traceback for every database error it raises; the writer's are its own
    to retry or raise, so their tracebacks stay out of the console."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(found, _NotTheWriter) for found in logger.filters):
        logger.addFilter(_NotTheWriter())


class _NotTheWriter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != WRITER
