"""The only place that reads the monotonic clock.

Every phase, event and probe timestamp comes from one ``Clock`` so that
phases nest and sum on the same time base; tests inject ``FakeClock``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class MonotonicClock:
    """``time.perf_counter_ns``: monotonic, highest resolution, process-local."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()


class FakeClock:
    """Deterministic clock for unit tests: advances only when told to."""

    def __init__(self, start_ns: int = 0) -> None:
        self._t = start_ns

    def now_ns(self) -> int:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += int(round(seconds * 1e9))


DEFAULT_CLOCK: Clock = MonotonicClock()
