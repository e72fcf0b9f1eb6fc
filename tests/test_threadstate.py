"""Thread states from /proc: the classification table, the GIL's address ranges, the poller on a fake /proc tree
(exact rows and weights under a fake clock) and on a real child process."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loadprof.probes.threadstate import KINDS, WAITS, StateRow, ThreadStatePoller, classify, interpreter_ranges

X86_64 = platform.machine() in ("x86_64", "amd64")
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="the syscall numbers below are x86_64's")
GIL_ADDR = 0x7F0000201000


def _gil(addr: int) -> bool:
    return addr == GIL_ADDR


def test_kinds():
    assert KINDS[0] == "running" and WAITS == KINDS[1:] and len(set(KINDS)) == len(KINDS)


@pytest.mark.parametrize("state, wchan, syscall, kind", [
    ("R", "", "", "running"),
    ("R", "futex_wait_queue", "202 0x7f0000201000 0x80", "running"),  # the files disagree: state wins
    ("D", "io_schedule", "0 0x3 0x7f00 0x1000", "disk"),
    ("S", "0", "running", "running"),                # sleeping per stat, but running by the time syscall was read
    ("S", "", "", "other"),                          # nothing to go by
    ("S", "hrtimer_nanosleep", "", "sleep"),         # syscall unreadable (no ptrace access): the wait channel
    ("S", "futex_wait_queue", "", "lock"),
    ("S", "do_wait", "", "subprocess"),
    ("S", "pipe_read", "", "pipe"),
    ("S", "unix_stream_read_generic", "", "socket"),
    ("S", "do_epoll_wait", "", "select"),
    ("S", "do_sys_poll", "", "select"),
    ("S", "something_else", "", "other"),
    ("S", "ep_poll", "-1 0x7ffd 0x0", "select"),     # -1: not in a syscall; the wait channel decides
])
def test_classify_by_state_and_wait_channel(state, wchan, syscall, kind):
    assert classify(state, wchan, syscall) == kind


@needs_x86_64
@pytest.mark.parametrize("wchan, syscall, kind", [
    ("hrtimer_nanosleep", "230 0x1 0x0 0x7ffd 0x0", "sleep"),           # clock_nanosleep
    ("0", "35 0x7ffd 0x0", "sleep"),                                     # nanosleep, no wait channel
    ("futex_wait_queue", "202 0x7f0000201000 0x80 0x2 0x0", "gil"),      # futex on the interpreter's data
    ("futex_wait_queue", "202 0x7f0000900000 0x80 0x2 0x0", "lock"),     # futex anywhere else
    ("futex_wait_queue", "202", "lock"),                                 # no address: a lock
    ("futex_wait_queue", "202 zz", "lock"),                              # unparsable address: a lock
    ("pipe_read", "0 0x3 0x7f00 0x1000", "pipe"),                        # read on a pipe
    ("unix_stream_read_generic", "0 0x3 0x7f00 0x1000", "socket"),       # read on a unix socket
    ("wait_woken", "0 0x3 0x7f00 0x1000", "socket"),
    ("0", "0 0x3 0x7f00 0x1000", "file_read"),                           # read, wait channel says nothing else
    ("ep_poll", "17 0x3 0x7f00 0x1000 0x0", "file_read"),                # pread64: only pipe/socket hints count
    ("do_wait", "61 0xffffffff 0x7ffd 0x0", "subprocess"),              # wait4
    ("0", "247 0x1 0x0", "subprocess"),                                  # waitid
    ("do_sys_poll", "7 0x7ffd 0x1 0x3e8", "select"),                     # poll
    ("0", "232 0x4 0x7ffd 0x10 0xffffffff", "select"),                   # epoll_wait
    ("sk_wait_data", "45 0x3 0x7f00 0x1000", "socket"),                  # recvfrom
    ("do_epoll_wait", "999 0x0", "select"),                              # unknown syscall: wait channel
    ("0", "999 0x0", "other"),                                           # unknown syscall, no wait channel
])
def test_classify_x86_64_syscalls(wchan, syscall, kind):
    assert classify("S", wchan, syscall, gil=_gil) == kind


@needs_x86_64
def test_classify_futex_without_gil_ranges_is_a_lock():
    assert classify("S", "futex_wait_queue", "202 0x7f0000201000 0x80") == "lock"  # default: no GIL known


MAPS = """\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /usr/bin/python3.11
55d0c0200000-55d0c0210000 rw-p 00200000 08:01 123 /usr/bin/python3.11
7f0000000000-7f0000100000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0
7f0000200000-7f0000210000 rw-p 00200000 08:01 456 /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0
7f0000300000-7f0000310000 rw-p 00000000 00:00 0
7f0000400000-7f0000410000 rw-p 00010000 08:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000500000-7f0000510000 rw-p 00010000 08:01 790 /opt/py/bin/python
7f0000600000-7f0000610000 rw-p 00010000 08:01 791 /opt/py/bin/python3.13t
not a maps line
"""


def test_interpreter_ranges():
    base = [(0x55D0C0200000, 0x55D0C0210000), (0x7F0000200000, 0x7F0000210000), (0x7F0000600000, 0x7F0000610000)]
    assert interpreter_ranges(MAPS) == base  # writable libpython / python3.X[t] only: not r-x, libc, anonymous
    # the executable itself (a static build keeps the GIL there), whatever it is called
    assert sorted(interpreter_ranges(MAPS, exe="/opt/py/bin/python")) == sorted(
        base + [(0x7F0000500000, 0x7F0000510000)])
    assert interpreter_ranges("") == []
    lo, hi = base[1]
    assert lo <= GIL_ADDR < hi


# ---- the poller on a fake /proc -------------------------------------------------------------------------------

PID = 4242


def _task(root, tid: int, state: str, wchan: str = "0", syscall: str | None = "running", comm: str = "python3"):
    d = root / str(PID) / "task" / str(tid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(f"{tid} ({comm}) {state} 1 {PID} {PID} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 2 0\n")
    (d / "wchan").write_text(wchan)
    if syscall is not None:
        (d / "syscall").write_text(syscall + "\n")
    elif (d / "syscall").exists():
        (d / "syscall").unlink()
    return d


class FakeClock:
    def __init__(self, *t_ns: int) -> None:
        self.times = list(t_ns)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.times.pop(0)


def _fake_proc(tmp_path):
    proc = tmp_path / "proc"
    (proc / str(PID) / "task").mkdir(parents=True)
    (proc / str(PID) / "maps").write_text(MAPS)
    os.symlink("/opt/py/bin/python", proc / str(PID) / "exe")  # dangling is fine: only readlink is used
    return proc


def _rows(rows: list[StateRow]) -> list[tuple[int, int, str, float]]:
    return sorted((r.t_ns, r.tid, r.kind, round(r.dt_s, 9)) for r in rows)


@needs_x86_64
def test_poller_rows_weights_gil_and_vanishing_threads(tmp_path):
    proc = _fake_proc(tmp_path)
    main = _task(proc, PID, "S", "hrtimer_nanosleep", "230 0x1 0x0 0x7ffd 0x0")
    _task(proc, PID + 1, "R", comm="a) S (b")  # a ')' in the thread's name: the state is after the last one
    clock = FakeClock(1_000_000_000, 1_050_000_000, 1_080_000_000)
    poller = ThreadStatePoller(PID, rate_hz=50, proc=str(proc), now_ns=clock)
    assert poller.period_s == 0.02

    assert poller.poll_once() is True  # first reading of each thread: one period
    assert _rows(poller.out.rows) == [(1_000_000_000, PID, "sleep", 0.02), (1_000_000_000, PID + 1, "running", 0.02)]

    # the main thread now waits for the GIL (its futex lies in libpython's data), the other on a lock
    _task(proc, PID, "S", "futex_wait_queue", f"202 {GIL_ADDR:#x} 0x80 0x2 0x0")
    _task(proc, PID + 1, "S", "futex_wait_queue", "202 0x7f0000900000 0x80 0x2 0x0")
    assert poller.poll_once() is True  # the gap since the previous reading: 50 ms
    assert _rows(poller.out.rows[2:]) == [(1_050_000_000, PID, "gil", 0.05), (1_050_000_000, PID + 1, "lock", 0.05)]

    # a thread exits, another starts (no syscall file: ptrace denied, the wait channel decides), one is unreadable
    shutil.rmtree(proc / str(PID) / "task" / str(PID + 1))
    _task(proc, PID + 2, "S", "pipe_read", syscall=None)
    (proc / str(PID) / "task" / str(PID + 3)).mkdir()  # no stat: skipped, not an error
    (main / "stat").write_text(f"{PID} (python3) D 1\n")
    assert poller.poll_once() is True
    assert _rows(poller.out.rows[4:]) == [(1_080_000_000, PID, "disk", 0.03), (1_080_000_000, PID + 2, "pipe", 0.02)]
    assert poller.out.ticks == 3 and clock.calls == 3

    shutil.rmtree(proc / str(PID) / "task")  # the process is gone
    assert poller.poll_once() is False
    assert clock.calls == 3 and poller.out.ticks == 3 and len(poller.out.rows) == 6
    out = poller.stop()
    assert out is poller.out and out.reason is None and out.period_s == 0.02


def test_poller_splits_the_run_queue_delay_off_a_readings_gap(tmp_path):
    """A runnable thread another process keeps off the CPU is in state R like a running one: the run-queue delay
    that schedstat says grew since its previous reading is that gap's cpu_wait_s (never more than the gap)."""
    proc = _fake_proc(tmp_path)
    task = _task(proc, PID, "R")
    (task / "schedstat").write_text("900000000 5000000 40\n")
    poller = ThreadStatePoller(PID, rate_hz=100, proc=str(proc),
                               now_ns=FakeClock(1_000_000_000, 1_010_000_000, 1_020_000_000, 1_030_000_000))
    assert poller.poll_once() and poller.out.rows[-1].cpu_wait_s == 0.0  # no previous delay to compare with
    (task / "schedstat").write_text("904000000 11000000 41\n")  # 6 ms of the 10 ms gap on the run queue
    assert poller.poll_once() and poller.out.rows[-1].cpu_wait_s == pytest.approx(0.006)
    assert poller.out.rows[-1].kind == "running" and poller.out.rows[-1].dt_s == pytest.approx(0.01)
    (task / "schedstat").write_text("904000000 99000000 42\n")  # a torn or odd reading: capped at the gap
    assert poller.poll_once() and poller.out.rows[-1].cpu_wait_s == pytest.approx(0.01)
    (task / "schedstat").write_text("garbage\n")  # unreadable: no split, and no error
    assert poller.poll_once() and poller.out.rows[-1].cpu_wait_s == 0.0
    poller.stop()
    # another thread's run-queue delay is not read: the split serves the main thread's attribution
    other = _task(proc, PID + 1, "R")
    (other / "schedstat").write_text("0 0 1\n")
    poller = ThreadStatePoller(PID, rate_hz=100, proc=str(proc), now_ns=FakeClock(2_000_000_000, 2_010_000_000))
    assert poller.poll_once()
    (other / "schedstat").write_text("0 9000000 2\n")
    assert poller.poll_once()
    assert {r.tid: r.cpu_wait_s for r in poller.out.rows[-2:]}[PID + 1] == 0.0
    poller.stop()


@needs_x86_64
def test_poller_without_gil_ranges(tmp_path):
    proc = tmp_path / "proc"
    _task(proc, PID, "S", "futex_wait_queue", f"202 {GIL_ADDR:#x} 0x80")  # no maps, no exe: no GIL ranges known
    poller = ThreadStatePoller(PID, rate_hz=100, proc=str(proc), now_ns=FakeClock(5))
    assert poller.poll_once() is True
    assert [(r.t_ns, r.tid, r.kind, r.dt_s) for r in poller.out.rows] == [(5, PID, "lock", 0.01)]
    poller.stop()


def test_poller_without_a_task_dir(tmp_path):
    missing = ThreadStatePoller(1, proc=str(tmp_path / "nowhere"))
    reason = missing.start()
    assert reason and "is not readable" in reason
    out = missing.stop()
    assert out.rows == [] and out.reason == reason and out.ticks == 0


def test_poller_thread_stops_when_the_process_is_gone(tmp_path):
    proc = _fake_proc(tmp_path)
    _task(proc, PID, "R")
    poller = ThreadStatePoller(PID, rate_hz=200, proc=str(proc))
    assert poller.start() is None
    deadline = time.monotonic() + 5
    while poller.out.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert poller.out.ticks >= 3
    shutil.rmtree(proc / str(PID) / "task")
    poller._thread.join(timeout=5)
    assert not poller._thread.is_alive()  # stopped by itself, without stop()
    out = poller.stop()
    assert {r.kind for r in out.rows} == {"running"} and len(out.rows) == out.ticks
    assert out.rows[0].dt_s == 0.005 and all(r.dt_s > 0 for r in out.rows) and out.cpu_s >= 0


# ---- a real process ----------------------------------------------------------------------------------------------

CHILD = """\
import time
time.sleep(0.5)
end = time.perf_counter() + 0.3
while time.perf_counter() < end:
    pass
"""


def _polled(code: str) -> tuple[subprocess.Popen, Any]:
    """Run ``code`` in a child python under a 100 Hz poller; the child, and what the poller read."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("no /proc here")
    child = subprocess.Popen([sys.executable, "-c", code])
    poller = ThreadStatePoller(child.pid, rate_hz=100)
    try:
        assert poller.start() is None
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        out = poller.stop()
    return child, out


def test_real_child_sleeps_then_runs():
    child, out = _polled(CHILD)
    by_kind: Counter = Counter()
    for r in out.rows:
        if r.tid == child.pid:
            by_kind[r.kind] += r.dt_s
    assert 0.3 <= by_kind["sleep"] <= 0.8, by_kind
    assert 0.15 <= by_kind["running"] <= 0.6, by_kind
    assert out.ticks > 20 and out.reason is None


GIL_CHILD = """\
import threading, time
def spin():
    end = time.perf_counter() + 0.6
    while time.perf_counter() < end:
        pass
threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_real_threads_contending_wait_for_the_gil():
    """Two spinning threads share one GIL: each waits for it about half the time, on a futex in the interpreter's
    own data (told from a lock by interpreter_ranges); the main thread waits in join(), on a lock."""
    child, out = _polled(GIL_CHILD)
    main, others = Counter(), Counter()
    for r in out.rows:
        (main if r.tid == child.pid else others)[r.kind] += r.dt_s
    if not others["gil"] and not interpreter_ranges(Path("/proc/self/maps").read_text(), os.readlink("/proc/self/exe")):
        pytest.skip("this interpreter's writable data was not found in its maps")
    assert others["gil"] >= 0.2 and others["running"] >= 0.3, others
    assert main["lock"] >= 0.3, main
