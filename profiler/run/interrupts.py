"""Ctrl-C, SIGTERM and SIGHUP end a sweep the same clean way: the trial in flight is stopped, what finished is kept.

Python's default turns SIGINT into a KeyboardInterrupt anywhere (a second one lands in the middle of the
cleanup of the first: a worker left running, click's ``Aborted!``) and leaves SIGTERM and SIGHUP to kill the
process with no report. ``StopSignals`` handles all three alike: the *first* one raises ``Interrupted`` (a
KeyboardInterrupt) only inside ``raising()`` (around a trial: the runner then kills the worker and everything
it started) and is otherwise recorded, to be raised when the next trial would start; later ones are only
counted, so nothing half-done is cut short, and ``hurry`` (a second signal) lets the sweep skip the optional
reports. The process exits with ``exit_code(signum)``: 128 + the signal number, as shells report it (130 for
SIGINT, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(signum: int | None) -> int:
    """The exit status of a sweep stopped by ``signum`` (the shell convention 128 + n; None: a bare
    KeyboardInterrupt, i.e. SIGINT)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum if signum is not None else signal.SIGINT).name



class Interrupted(KeyboardInterrupt):
    """A stop signal, raised where a trial can be abandoned; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Stop requests received while installed (see the module docstring)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raise_ok = False
        self._saved: dict[int, Any] | None = None

    @property
    def signum(self) -> int | None:
        """The first stop signal received, or None."""
        return self.received[0] if self.received else None

    @property
    def hurry(self) -> bool:
        """A second stop request: finish what must be finished (results, report.json), skip the rest."""
        return len(self.received) > 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._raise_ok and len(self.received) == 1:
            self._raise_ok = False  # the cleanup that follows must not be cut short by another one
            raise Interrupted(signum)

    def install(self) -> bool:
        """Handle the stop signals from now on (main thread only: elsewhere Python's defaults stay; an ignored
        one, as under nohup, stays ignored). False when nothing was installed (elsewhere, or already)."""
        if self._saved is not None or threading.current_thread() is not threading.main_thread():
            return False
        self._saved = {}
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._saved[sig] = signal.signal(sig, self._on_signal)
        return True

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for sig, old in (self._saved or {}).items():
            signal.signal(sig, old)
        self._saved = None

    @contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        """``install`` while inside; re-entrant (an inner one of an installed object changes nothing)."""
        mine = self.install()
        try:
            yield self
        finally:
            if mine:
                self.restore()

    @contextmanager
    def raising(self) -> Iterator[None]:
        """Inside, the first stop signal raises ``Interrupted`` at once; one that came earlier raises on entry."""
        if self.received:
            raise Interrupted(self.received[0])
        self._raise_ok = True
        try:
            yield
        finally:
            self._raise_ok = False
