"""The timed-copy loop behind the device and host->device bandwidth figures."""

from __future__ import annotations

from loadprof.probes.bandwidth import best_copy_ns


def test_best_copy_is_the_fastest_timed_repeat_after_one_untimed_copy():
    clock = iter([0, 5, 10, 12, 20, 29])  # three timed copies: 5, 2 and 9 ns
    events: list[str] = []
    best = best_copy_ns(lambda: events.append("copy"), lambda: events.append("sync"), lambda: next(clock), 3)
    assert best == 2
    assert events == ["copy", "sync"] * 4  # every copy is waited for, the first is not timed
