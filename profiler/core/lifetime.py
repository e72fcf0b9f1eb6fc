"""No process a trial starts outlives it, or the sweep: the guarantees, from both sides of the worker's pipe.

Worker side (``loadprof.worker.trial`` calls these first thing):
  * ``die_with_parent``: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so a SIGKILLed ``loadprof`` takes its worker
    along. The kernel sends it when the *thread* that forked the worker exits, not the process: the runner
    forks from the thread that runs the sweep (the main thread), which lives until the sweep ends, so the two
    coincide. A parent that died before the prctl is caught by checking ``getppid()`` right after it.
  * ``start_watchdog``: a daemon thread that stops the worker and everything it started when the parent is
    gone (``getppid()`` changed, or nobody reads the events pipe any more) or the worker's own deadline
    (the trial's ``timeout_s`` plus ``DEADLINE_GRACE_S``) passes, so even a worker whose parent cannot kill it
    stops.
Parent side (``loadprof.run.runner``, ``loadprof.run.session``):
  * ``become_subreaper``: ``prctl(PR_SET_CHILD_SUBREAPER)``, so a loader's process that double-forks and calls
    ``setsid()`` (out of reach of the worker's process group) is re-parented to ``loadprof`` instead of init.
  * ``Descendants``: what a trial (or the sweep) started, remembered while it runs and killed and reaped after.
The prctl calls are Linux-only: elsewhere (or where they fail) they return False and protection is the
watchdog, the recorded descendants and the process-group kill alone. Stdlib only (psutil imported lazily).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: the worker's own deadline is the trial's timeout_s plus this: the parent kills it first (at timeout_s, then
#: SIGKILL 3 s later), so the worker acts only when its parent cannot
DEADLINE_GRACE_S = 15.0
#: how often the watchdog looks: a dead parent is noticed within about this long (PDEATHSIG is immediate)
WATCHDOG_INTERVAL_S = 0.5
#: the exit code of a worker that stopped itself (parent gone, or past its own deadline); the reason is in stderr
SELF_STOP_EXIT = 75

_subreaper: bool | None = None


def _prctl(option: int, arg: int) -> bool:
    """prctl(2) through libc; False off Linux or when the call fails (never raises)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                          ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(expected_ppid: int, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel for ``sig`` when the parent (its forking thread) dies; True when armed. A parent that is
    already gone (the race before the prctl: we were re-parented) ends this process at once."""
    armed = _prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != expected_ppid:
        stop_everything(f"parent {expected_ppid} exited before the worker started")
    return armed


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (once; True when it is)."""
    global _subreaper
    if _subreaper is None:
        _subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return _subreaper


def pipe_reader_gone(fd: int) -> bool:
    """True when the read end of the pipe ``fd`` writes to is closed everywhere (Linux reports POLLERR on the
    write end), without writing to it. A closed ``fd`` (POLLNVAL: the worker closing its events at the end) is
    not a dead parent."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def watchdog_reason(parent_pid: int, events_fd: int | None, deadline: float | None, *,
                    now: Callable[[], float] = time.monotonic,
                    getppid: Callable[[], int] = os.getppid) -> str | None:
    """Why the worker must stop now (its parent is gone, or its deadline passed), or None to carry on."""
    if getppid() != parent_pid:
        return f"parent {parent_pid} is gone"
    if events_fd is not None and pipe_reader_gone(events_fd):
        return "nobody reads the events pipe any more (the parent is gone)"
    if deadline is not None and now() > deadline:
        return "the worker's own deadline (timeout_s + grace) passed and its parent did not stop it"
    return None


def start_watchdog(parent_pid: int, events_fd: int | None, deadline_s: float | None,
                   interval_s: float = WATCHDOG_INTERVAL_S) -> threading.Thread:
    """A daemon thread that calls ``stop_everything`` once ``watchdog_reason`` gives a reason."""
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    try:  # imported now, not by a thread that may run while the main thread holds an import lock
        import psutil  # noqa: F401
    except ImportError:
        pass

    def watch() -> None:
        while True:
            reason = watchdog_reason(parent_pid, events_fd, deadline)
            if reason:
                stop_everything(reason, dump_stacks=deadline is not None and time.monotonic() > deadline)
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="loadprof-watchdog", daemon=True)
    thread.start()
    return thread


def guard_worker(parent_pid: int | None, events_fd: int | None, deadline_s: float | None) -> None:
    """The worker's side of the guarantee: die with ``parent_pid`` and stop at ``deadline_s`` (no-op without a
    parent pid: a worker run by hand)."""
    if parent_pid is None:
        return
    die_with_parent(parent_pid)
    start_watchdog(parent_pid, events_fd, deadline_s)


def exit_on_broken_pipe(emit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """``emit`` that treats a closed events pipe (EPIPE: the parent is gone) as the end of the trial."""
    def guarded(event: dict[str, Any]) -> None:
        try:
            emit(event)
        except BrokenPipeError:
            stop_everything("the events pipe is closed (the parent is gone)")

    return guarded


def stop_everything(reason: str, *, dump_stacks: bool = False) -> None:
    """Kill every descendant of this process, then exit with ``SELF_STOP_EXIT``; says why on stderr (the trial's
    stderr.log), with every thread's stack when asked (where a hung trial hung)."""
    try:
        os.write(2, f"\nloadprof worker: stopping itself and everything it started: {reason}\n".encode())
        if dump_stacks:
            faulthandler.dump_traceback(all_threads=True)
    except OSError:
        pass
    if not kill_descendants(os.getpid()) and os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)  # no psutil: the process group (this process included)
    os._exit(SELF_STOP_EXIT)


def kill_descendants(pid: int) -> bool:
    """SIGKILL every descendant of ``pid`` (repeated while new ones appear); False when psutil is missing."""
    try:
        import psutil
    except ImportError:
        return False
    for _ in range(5):
        try:
            procs = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return True
        if not procs:
            break
        _kill(procs)
    return True


def _kill(procs: Iterable[Any]) -> int:
    n = 0
    for p in procs:
        try:
            p.kill()
            n += 1
        except Exception:  # noqa: BLE001 - gone already, or not ours to kill
            pass
    return n


class Descendants:
    """The processes a trial (or a whole sweep) started, so that none outlives it.

    Created before the work starts: the direct and indirect children this process has *then* are left alone.
    ``record(pid)`` remembers the descendants of ``pid`` while it runs (they may leave its process group or be
    orphaned later); ``reap()`` kills what was recorded and every newer descendant of this process (orphans
    come back here when it is a subreaper) except ``exclude``, and waits for them so no zombie is left.
    """

    def __init__(self, exclude: Iterable[int] = ()) -> None:
        self.exclude = set(exclude)
        self._seen: dict[int, Any] = {}
        self._roots: set[int] = set()  # the pids passed to record(): under concurrent_trials(), what is ours
        try:
            import psutil

            self._me: Any = psutil.Process()
            self._before = {p.pid for p in self._me.children(recursive=True)}
        except Exception:  # noqa: BLE001 - no psutil: the process-group kill is all there is
            self._me, self._before = None, set()

    def record(self, pid: int) -> None:
        """Remember ``pid``'s current descendants (cheap enough to call every second)."""
        if self._me is None:
            return
        import psutil

        self._roots.add(pid)
        try:
            for p in psutil.Process(pid).children(recursive=True):
                self._seen.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _candidates(self) -> list[Any]:
        import psutil

        found = {pid: p for pid, p in self._seen.items() if pid not in self.exclude}
        try:
            for p in self._me.children(recursive=True):
                if p.pid not in self._before and p.pid not in self.exclude and self._may_claim(p):
                    found.setdefault(p.pid, p)
        except psutil.Error:
            pass
        alive = []
        for p in found.values():
            try:  # is_running compares the start time: a recycled pid is not ours
                if p.is_running():
                    alive.append(p)
            except psutil.Error:
                pass
        return alive

    def _may_claim(self, p: Any) -> bool:
        """Whether a newer descendant of this process is this object's to kill: any, unless trials run side by
        side in this process (``concurrent_trials``); then only the members of the sessions it recorded (a
        sibling trial's worker is newer too). What no trial claims, the sweep's own ``Descendants`` reaps."""
        if not _concurrent:
            return True
        try:
            return os.getsid(p.pid) in self._roots or p.pid in self._roots
        except OSError:
            return False

    def reap(self, timeout_s: float = 5.0) -> int:
        """Kill and wait for every process of ours this object stands for; how many were killed."""
        if self._me is None:
            return 0
        import psutil

        killed = 0
        for _ in range(5):  # a dying process may have forked once more
            procs = self._candidates()
            if not procs:
                break
            killed += _kill(procs)
            psutil.wait_procs(procs, timeout=timeout_s)  # reaps our own children (no zombies left)
            self._seen = {pid: p for pid, p in self._seen.items() if p not in procs}
        return killed


# ---------------------------------------------------------------- trials side by side (loadprof.run.executor --jobs N)

_concurrent = 0
_concurrent_lock = threading.Lock()


@contextmanager
def concurrent_trials() -> Iterator[None]:
    """Inside, several trials run at once in this process: a trial's ``Descendants.reap`` spares the processes
    of the others (see ``Descendants._may_claim``); the executor reaps everything of the sweep's at the end."""
    global _concurrent
    with _concurrent_lock:
        _concurrent += 1
    try:
        yield
    finally:
        with _concurrent_lock:
            _concurrent -= 1
