"""The phase tree of a whole program: its loads gathered into ``load``, its generate calls, on the trial's clock.

A trial's worker opens its top-level phases itself (import, load, warmup, generate). A program does not say
when its loading starts or ends, so the hooks report steps and this module shapes them the way a trial's tree
looks, so that the same rules read it:

* a top-level load step (``model:NAME``, ``tokenizer:NAME``, ``pipeline:NAME``, a model's first forward
  ``forward:NAME``, or a bare inner step like ``config``) opens the ``load`` envelope when none is open; the
  steps nest inside it, and the program's own code between them (a ModelManager's post-processing) is the
  envelope's ``other`` time, which the sampler explains;
* the envelope ends where the model is first used: at the start of a ``generate`` when a model loaded in it
  has not run its first forward yet (the program's work up to that call is part of getting the model ready),
  otherwise at the end of its last load step (placed there late: the edge carries its own time);
* one thread at a time: while a step is open in one thread, another thread's steps are not phases
  (counted in ``skipped``; the sampler still sees their time).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from loadprof.core.phases import PhaseRecorder

LOAD = "load"


class ProgramPhases:
    def __init__(self, rec: PhaseRecorder, now_ns: Callable[[], int]) -> None:
        self.rec, self.now_ns = rec, now_ns
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0  # steps open above the envelope
        self.envelope = False
        self.unused_models = 0  # models loaded in the open envelope that have not run a forward yet
        self.last_activity_ns: int | None = None
        self.skipped = 0
        self.finished = False

    def _mine(self) -> bool:
        return self._depth == 0 or self._owner == threading.get_ident()

    def may_open(self) -> bool:
        """Whether this thread may open a step now (no other thread has one open)."""
        with self._lock:
            return not self.finished and self._mine()

    def open_here(self) -> bool:
        """A step (a load, a generate) is open in this thread: an import now is the workload's (the imports
        probe asks on every import the program makes, so this stays cheap)."""
        return self._depth > 0 and self._owner == threading.get_ident() and not self.finished

    @contextlib.contextmanager
    def step(self, name: str, *, load: bool) -> Iterator[str | None]:
        """A phase named ``name`` under whatever is open; at the top, a load step opens the envelope and any
        other step (a generate call) ends it. Yields the phase's path, or None when it is not recorded."""
        with self._lock:
            if self.finished or not self._mine():
                self.skipped += 0 if self.finished else 1
                path = None
            elif self._depth and self.rec.current.rsplit("/", 1)[-1] == name:
                path = self.rec.current  # re-entered (Auto* -> PreTrained*): not nested again
                name = ""
            else:
                if self._depth == 0:
                    self._top(load)
                    self._owner = threading.get_ident()
                path = self.rec.open(name)
                self._depth += 1
        try:
            yield path
        finally:
            if path is not None and name:
                self._close(name, load)

    def load_step(self, name: str) -> contextlib.AbstractContextManager[str | None]:
        """The phase opener the load-phase probe is given: its steps are load steps."""
        return self.step(name, load=True)

    def _top(self, load: bool) -> None:
        if load and not self.envelope:
            self.rec.open(LOAD)
            self.envelope = True
            self.unused_models = 0
        elif not load and self.envelope:
            self._end_envelope(self.now_ns() if self.unused_models else None)

    def _end_envelope(self, t_ns: int | None) -> None:
        self.rec.close(LOAD, t_ns if t_ns is not None else self.last_activity_ns)
        self.envelope = False

    def _close(self, name: str, load: bool) -> None:
        with self._lock:
            if self.finished:
                return
            self.rec.close(name)
            self._depth -= 1
            if load and self.envelope:
                self.last_activity_ns = self.now_ns()

    def model_loaded(self) -> None:
        """A model came out of a load step: the envelope waits for its first use."""
        with self._lock:
            if self.envelope:
                self.unused_models += 1

    def model_used(self) -> None:
        """A loaded model ran its first forward."""
        with self._lock:
            self.unused_models = max(0, self.unused_models - 1)

    def finish(self) -> None:
        """Close everything still open (the program is ending): steps now, the envelope at its last load
        step's end when nothing above it is open."""
        with self._lock:
            if self.finished:
                return
            now = self.now_ns()
            while self._depth:
                self.rec.close(self.rec.current.rsplit("/", 1)[-1], now)
                self._depth -= 1
                self.last_activity_ns = now
            if self.envelope:
                self._end_envelope(self.last_activity_ns or now)
            self.finished = True
