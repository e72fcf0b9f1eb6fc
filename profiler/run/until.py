"""When ``loadprof run`` stops a program that has not exited: ``--until loaded|first-token|SECONDS``.

Read off the program's phase events as they arrive (loadprof.worker.program_phases shapes them):
  loaded       a load step (``load/<step>``: a model, tokenizer, pipeline, a model's first forward) has ended,
               none is open, and none has started for ``settle_s`` seconds;
  first-token  the first ``generate/prefill`` has ended (the first new token exists);
  SECONDS      that long after the program started;
  exit         never: wait for the program (or a stop signal, or ``--timeout``).
Pure: the clock is given, so tests drive it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from loadprof.core.errors import LoadprofError

UNTIL_KINDS = ("exit", "loaded", "first-token")


@dataclass(frozen=True)
class Until:
    kind: str  # exit, loaded, first-token, seconds
    seconds: float | None = None
    settle_s: float = 3.0

    @classmethod
    def parse(cls, text: str, settle_s: float = 3.0) -> "Until":
        """``loaded``, ``first-token``, ``exit``, or seconds (``90``, ``90s``, ``1.5``)."""
        t = str(text).strip().lower()
        if settle_s < 0:
            raise LoadprofError(f"--settle must be >= 0 seconds, got {settle_s:g}", exit_code=2)
        if t in UNTIL_KINDS:
            return cls(t, None, settle_s)
        try:
            seconds = float(t.removesuffix("s"))
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise LoadprofError(f"--until takes loaded, first-token or a number of seconds, got {text!r}",
                                exit_code=2)
        return cls("seconds", seconds, settle_s)

    def describe(self) -> str:
        if self.kind == "seconds":
            return f"{self.seconds:g} s after the start"
        if self.kind == "loaded":
            return f"loaded (no load for {self.settle_s:g} s after the last)"
        return self.kind


class UntilWatch:
    """Fed every event (from the reader thread); ``due()`` says why to stop now, or None."""

    def __init__(self, until: Until, now: Callable[[], float]) -> None:
        self.until, self.now = until, now
        self.started = now()
        self._lock = threading.Lock()
        self.open_loads = 0
        self.loads_done = 0
        self.last_load_s: float | None = None
        self.first_token_s: float | None = None

    def feed(self, ev: Mapping[str, Any]) -> None:
        if ev.get("type") != "phase":
            return
        name, edge = str(ev.get("name", "")), ev.get("edge")
        with self._lock:
            if name.startswith("load/") and name.count("/") == 1:
                self.last_load_s = self.now()
                if edge == "start":
                    self.open_loads += 1
                elif edge == "end":
                    self.open_loads = max(0, self.open_loads - 1)
                    self.loads_done += 1
            elif name == "generate/prefill" and edge == "end" and self.first_token_s is None:
                self.first_token_s = self.now()

    def due(self) -> str | None:
        u, now = self.until, self.now()
        with self._lock:
            if u.kind == "seconds" and u.seconds is not None and now - self.started >= u.seconds:
                return f"--until {u.seconds:g}: {u.seconds:g} s passed"
            if u.kind == "first-token" and self.first_token_s is not None:
                return "--until first-token: the first generated token is out"
            if (u.kind == "loaded" and self.loads_done and not self.open_loads and self.last_load_s is not None
                    and now - self.last_load_s >= u.settle_s):
                return f"--until loaded: {self.loads_done} load step(s) done, none for {u.settle_s:g} s"
        return None
