"""What each thread of the worker is doing, running or waiting and on what, read from the parent in /proc.

py-spy says *where* a thread is (its Python stack) but not whether it runs: with ``--idle`` it records waiting
threads too, with nothing in its output to tell them apart, and a C call such as ``time.sleep`` leaves only its
caller's line as the leaf. The kernel knows: ``/proc/<pid>/task/<tid>/stat`` has the scheduler state (R running
or runnable, D uninterruptible disk wait, S sleeping), ``syscall`` the system call a sleeping thread is blocked
in (and its arguments), ``wchan`` the kernel function it waits in. ``ThreadStatePoller`` reads all three for
every thread at a fixed rate from a parent-side thread (kept-open file descriptors, ``pread``: ~8 us per thread),
weighting each reading by the time since that thread's previous one, so a late tick loses no time.

A thread that is runnable but not on a CPU (another process holds it: a busy machine) is in state R like one that
runs. ``schedstat`` (the scheduler's run-queue delay per thread, in ns) tells them apart: the delay that grew
since a thread's previous reading is that gap's ``cpu_wait_s``, time the thread's code would not have taken on a
quiet machine. It is read for the main thread only (the one your code's findings are drawn from); without
``schedstat`` (a kernel without schedstats), it stays 0.

A futex wait is a lock unless its address lies in the interpreter's own writable data (libpython or the python
executable), where CPython keeps the GIL: then the thread is waiting for the GIL, not for user code.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

#: how a thread spent a moment: running (on a CPU or runnable), or the kind of wait it was in
KINDS = ("running", "sleep", "lock", "gil", "disk", "file_read", "socket", "pipe", "subprocess", "select", "other")
WAITS = KINDS[1:]

_X86_64 = {230: "sleep", 35: "sleep", 202: "futex", 61: "subprocess", 247: "subprocess",
           7: "select", 23: "select", 270: "select", 271: "select", 232: "select", 281: "select", 441: "select",
           45: "socket", 47: "socket", 44: "socket", 46: "socket", 288: "socket", 43: "socket", 42: "socket",
           0: "read", 17: "read", 19: "read", 295: "read", 327: "read"}
_AARCH64 = {101: "sleep", 115: "sleep", 98: "futex", 260: "subprocess", 95: "subprocess",
            73: "select", 72: "select", 22: "select", 441: "select",
            207: "socket", 212: "socket", 206: "socket", 211: "socket", 242: "socket", 202: "socket", 203: "socket",
            63: "read", 67: "read", 65: "read", 69: "read", 286: "read"}
SYSCALLS = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}.get(platform.machine(), {})
#: kernel wait-channel names (they change between kernels: hints only, after the syscall)
_WCHAN = (("nanosleep", "sleep"), ("futex", "lock"), ("do_wait", "subprocess"), ("pipe", "pipe"),
          ("unix_stream", "socket"), ("sk_wait", "socket"), ("tcp", "socket"), ("inet", "socket"),
          ("wait_woken", "socket"), ("epoll", "select"), ("poll", "select"), ("select", "select"))


def classify(state: str, wchan: str, syscall: str, gil: Callable[[int], bool] = lambda a: False) -> str:
    """One reading -> a kind of ``KINDS``. State first (R runs, D waits on the disk), then the syscall number,
    then the wait channel. The three files are read one after the other, so they may disagree: state wins."""
    if state == "R":
        return "running"
    if state == "D":
        return "disk"
    parts = syscall.split()
    if parts and parts[0] == "running":
        return "running"
    kind = SYSCALLS.get(int(parts[0])) if parts and parts[0].lstrip("-").isdigit() else None
    if kind == "futex":
        try:
            return "gil" if gil(int(parts[1], 16)) else "lock"
        except (IndexError, ValueError):
            return "lock"
    if kind == "read":
        hint = next((k for key, k in _WCHAN if key in wchan), None)
        return hint if hint in ("pipe", "socket") else "file_read"
    if kind:
        return kind
    return next((k for key, k in _WCHAN if key in wchan), "other")


def run_delay_ns(schedstat: bytes) -> int | None:
    """The run-queue delay (ns, the second of ``schedstat``'s three numbers); None where unreadable."""
    parts = schedstat.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


_MAP_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+\S+\s+\S+\s+\d+\s*(.*)$")


def interpreter_ranges(maps_text: str, exe: str = "") -> list[tuple[int, int]]:
    """Writable mappings of libpython or of the python executable itself (a static build keeps the GIL there)."""
    out = []
    for line in maps_text.splitlines():
        m = _MAP_LINE.match(line)
        if not m or "w" not in m.group(3):
            continue
        path = m.group(4).strip()
        name = os.path.basename(path)
        if name.startswith("libpython") or (exe and path == exe) or re.fullmatch(r"python3(\.\d+)?t?", name):
            out.append((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


@dataclass
class StateRow:
    t_ns: int       # monotonic, in the parent
    tid: int
    kind: str
    dt_s: float     # time since this thread's previous reading (the first reading of a thread: one period)
    cpu_wait_s: float = 0.0  # of dt_s, runnable but not on a CPU (the run-queue delay that grew in the gap)


@dataclass
class ThreadStates:
    rows: list[StateRow] = field(default_factory=list)
    ticks: int = 0
    period_s: float = 0.01
    cpu_s: float = 0.0              # the poller's own CPU time
    reason: str | None = None       # why it could not poll (then rows is empty)


class ThreadStatePoller:
    """Polls ``/proc/<pid>/task/*`` from a daemon thread until the process is gone or ``stop()`` is called."""

    def __init__(self, pid: int, rate_hz: int = 100, proc: str = "/proc",
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.pid, self.proc, self.now_ns = pid, proc, now_ns
        self.period_s = 1.0 / max(1, rate_hz)
        self.out = ThreadStates(period_s=self.period_s)
        self._fds: dict[int, tuple[int, int, int, int]] = {}
        self._last: dict[int, int] = {}
        self._delay: dict[int, int] = {}  # tid -> run-queue delay (ns) at its previous reading
        self._gil: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str | None:
        task = f"{self.proc}/{self.pid}/task"
        if not os.path.isdir(task):
            self.out.reason = f"{task} is not readable: thread states are not known (waits are not classified)"
            return self.out.reason
        self._thread = threading.Thread(target=self._run, name="loadprof-threadstate", daemon=True)
        self._thread.start()
        return None

    def stop(self) -> ThreadStates:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fds in self._fds.values():
            _close(fds)
        self._fds.clear()
        return self.out

    def _refresh_gil(self) -> None:
        try:
            with open(f"{self.proc}/{self.pid}/maps") as f:
                maps = f.read()
            exe = os.readlink(f"{self.proc}/{self.pid}/exe")
        except OSError:
            return
        self._gil = interpreter_ranges(maps, exe)

    def _is_gil(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self._gil)

    def _run(self) -> None:
        cpu0, nxt = time.thread_time(), time.monotonic()
        while not self._stop.is_set() and self.poll_once():
            nxt += self.period_s
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()  # fell behind (a busy machine): readings are weighted by their real gaps
        self.out.cpu_s = time.thread_time() - cpu0

    def poll_once(self) -> bool:
        """One reading of every thread; False once the process is gone."""
        try:
            tids = [int(t) for t in os.listdir(f"{self.proc}/{self.pid}/task")]
        except OSError:
            return False
        if any(t not in self._fds for t in tids):
            self._refresh_gil()  # a new thread may have loaded libraries: cheap, and rare
        now = self.now_ns()
        for tid in tids:
            reading = self._read(tid)
            if reading is None:
                continue
            prev = self._last.get(tid)
            self._last[tid] = now
            dt = (now - prev) / 1e9 if prev is not None else self.period_s
            delay, before = reading[3], self._delay.get(tid)
            if delay is not None:
                self._delay[tid] = delay
            waited = min(dt, max(0.0, (delay - before) / 1e9)) if delay is not None and before is not None else 0.0
            self.out.rows.append(StateRow(now, tid, classify(*reading[:3], gil=self._is_gil), dt, waited))
        for gone in [t for t in self._fds if t not in tids]:
            _close(self._fds.pop(gone))
            self._delay.pop(gone, None)
        self.out.ticks += 1
        return True

    def _read(self, tid: int) -> tuple[str, str, str, int | None] | None:
        fds = self._fds.get(tid)
        if fds is None:
            fds = self._open(tid)
            if fds is None:
                return None
            self._fds[tid] = fds
        try:
            stat, wchan = os.pread(fds[0], 4096, 0), os.pread(fds[1], 4096, 0)
            syscall = os.pread(fds[2], 4096, 0) if fds[2] >= 0 else b""
            sched = os.pread(fds[3], 256, 0) if fds[3] >= 0 else b""
        except OSError:
            return None
        r = stat.rfind(b")")
        if r < 0 or len(stat) < r + 3:
            return None
        return (chr(stat[r + 2]), wchan.decode(errors="replace"), syscall.decode(errors="replace").strip(),
                run_delay_ns(sched))

    def _open(self, tid: int) -> tuple[int, int, int, int] | None:
        """stat and wchan (readable by the owner); syscall too where ptrace access allows (-1 where not: the wait
        is then told from the wait channel alone), and for the main thread schedstat where the kernel has it (-1:
        no run-queue split)."""
        base = f"{self.proc}/{self.pid}/task/{tid}/"
        opened: list[int] = []
        try:
            for name in ("stat", "wchan"):
                opened.append(os.open(base + name, os.O_RDONLY))
        except OSError:
            for fd in opened:
                os.close(fd)
            return None
        extra = []
        # the run-queue split serves the main thread's attribution (your code's stakes): one more read a tick, not
        # one per thread (a load runs a dozen)
        for name in ("syscall", "schedstat") if tid == self.pid else ("syscall",):
            try:
                extra.append(os.open(base + name, os.O_RDONLY))
            except OSError:
                extra.append(-1)
        return opened[0], opened[1], extra[0], extra[1] if len(extra) > 1 else -1
