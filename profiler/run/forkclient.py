"""Parent side of ``isolation: forkserver``: start a sweep's zygotes (loadprof.worker.forkserver, whose docstring says
why and how), ask them for one child per trial, and end them with the sweep.

One zygote per python executable, model architecture (config.json's model_type; the zygote no longer pre-imports
its modeling module: each trial's load imports it, as a user's first load does) and environment (a trial pinned to other GPUs, or with other variables, gets its own), started by
the first trial that needs it, before that trial's clock, and reused until ``shutdown_all`` (the session calls it
however the sweep ends; also atexit). A zygote that cannot start or fork is no failure: the trial starts fresh
and its harness says why (loadprof.run.runner). ``ForkedChild`` gives the runner a Popen-shaped handle, so the
timeout, the group kill and the reaping of a forked trial are the fresh worker's own code.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from loadprof.worker.forkserver import recv, send
from loadprof.probes.machine import add_reaped_elsewhere

STARTUP_TIMEOUT_S = 300.0  # a cold GPU image imports for 10-16 s; a zygote silent this long is broken
REQUEST_TIMEOUT_S = 30.0


class ForkserverError(RuntimeError):
    """The zygote could not start or fork: the trial starts fresh instead (and says why in its harness)."""


class ForkedChild:
    """A forked trial as the runner sees it: Popen's ``pid``, ``stdin`` (none: the spec travels with the request),
    ``wait`` and ``returncode``; the exit status (and CPU time) comes on the status pipe once the zygote reaps it."""

    stdin = None

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid, self.returncode = pid, None
        self._fd: int | None = status_fd
        self._buf = b""

    def wait(self, timeout: float | None = None) -> int | None:
        if not self._read(timeout):
            raise subprocess.TimeoutExpired(f"forked trial {self.pid}", timeout or 0.0)
        return self.returncode

    def _read(self, timeout: float | None) -> bool:
        """True once the status pipe is at EOF (the code read: None when the zygote died before reaping)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self._fd is not None:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self._fd], [], [], left)[0]:
                return False
            chunk = os.read(self._fd, 64)
            if chunk:
                self._buf += chunk
                continue
            os.close(self._fd)
            self._fd = None
            code, _, cpu = self._buf.decode(errors="replace").strip().partition(" ")
            self.returncode = int(code) if code.lstrip("-").isdigit() else None
            if cpu:  # its CPU time, which RUSAGE_CHILDREN cannot see: the machine probe counts it as the trial's
                add_reaped_elsewhere(float(cpu))
        return True


class Zygote:
    """Parent side of one zygote: ``start`` it, ``fork`` trials from it, ``close`` it (killing what it still runs)."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, ready: Mapping[str, Any], start_s: float) -> None:
        self.proc, self.sock, self.start_s = proc, sock, start_s
        self.pid: int = proc.pid
        self.import_s: float = ready["preimport_s"]
        self.info: dict[str, Any] = dict(ready.get("info") or {})
        self.forks = 0
        self.sub_pids: set[int] = set()  # its sub-zygotes (loadprof.worker.forkserver), which it ends itself
        self._lock = threading.Lock()  # one request at a time on the socket (trials may run side by side)

    @classmethod
    def start(cls, cmd: Sequence[str], model_path: str, env: Mapping[str, str], cwd: str | None,
              log_path: Path) -> "Zygote":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        t = time.monotonic()
        args = [*cmd, "--control-fd", str(theirs.fileno()), "--parent-pid", str(os.getpid()), "--model-path", model_path]
        if threading.current_thread() is threading.main_thread():
            args.append("--die-with-parent")
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env), cwd=cwd,
                                        pass_fds=(theirs.fileno(),), start_new_session=True)
            finally:
                theirs.close()
        ours.settimeout(STARTUP_TIMEOUT_S)
        try:
            ready, _ = recv(ours)
        except (OSError, ValueError) as e:
            ready = {"op": "error", "message": f"no answer ({type(e).__name__}: {e})"}
        except BaseException:  # a stop signal while it imports: it must not outlive the sweep
            _end(proc, ours)
            raise
        if ready.get("op") != "ready":
            _end(proc, ours)
            tail = log_path.read_bytes()[-1500:].decode(errors="replace").strip() if log_path.exists() else ""
            raise ForkserverError(f"{ready.get('message') or 'the zygote exited while importing'}"
                                  + (f"; its log ends: {tail}" if tail else ""))
        ours.settimeout(REQUEST_TIMEOUT_S)
        return cls(proc, ours, ready, time.monotonic() - t)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.sock.fileno() >= 0

    def fork(self, request: Mapping[str, Any], events_fd: int, stdout_fd: int, stderr_fd: int) -> ForkedChild:
        """Ask for one child running ``request["spec"]``; ForkserverError when the zygote cannot (then it is closed:
        the next trial starts a new one)."""
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                send(self.sock, {"op": "fork", **request}, [events_fd, stdout_fd, stderr_fd, status_w])
                reply, _ = recv(self.sock)
        except (OSError, ValueError) as e:
            reply = {"op": "error", "message": f"the zygote did not answer ({type(e).__name__}: {e})"}
        finally:
            os.close(status_w)
        if reply.get("op") != "forked":
            os.close(status_r)
            self.close()
            raise ForkserverError(reply.get("message") or "the zygote is gone")
        self.forks += 1
        if reply.get("sub_pid"):  # forked by a sub-zygote (a shared import): a process of the zygote's, not the trial's
            self.sub_pids.add(int(reply["sub_pid"]))
        return ForkedChild(int(reply["pid"]), status_r)

    def close(self) -> None:
        """EOF to the zygote, which kills and reaps its children and exits; SIGKILL if it takes longer than 5 s."""
        _end(self.proc, self.sock)


def _end(proc: subprocess.Popen, sock: socket.socket) -> None:
    sock.close()
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its children die with it (PDEATHSIG)
        except OSError:
            pass
        proc.wait()


_ZYGOTES: dict[tuple[Any, ...], Zygote] = {}
_FAILED: dict[tuple[Any, ...], str] = {}
_STARTING: dict[tuple[Any, ...], threading.Lock] = {}  # one start per key; other keys start meanwhile
_POOL_LOCK = threading.Lock()  # guards the dicts only: held for no start, no fork
_GENERATION = [0]  # bumped by shutdown_all: a zygote that finishes starting after it is closed at once


def model_type(model_path: str) -> str | None:
    """The architecture a zygote pre-imports for (config.json's model_type)."""
    try:
        return json.loads((Path(model_path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def zygote_for(cmd: Sequence[str], model_path: str, env: Mapping[str, str], cwd: str | None,
               log_path: Path) -> tuple[Zygote, float | None]:
    """The live zygote for this python (``cmd``), architecture and environment, and its start time when this
    call started it (None: reused). ForkserverError when it cannot start (remembered until ``shutdown_all``).
    Safe from several threads (``--jobs``): trials of one key wait for its one start, then fork from it side
    by side (``Zygote.fork`` holds its socket for one request at a time, a few milliseconds)."""
    key = (tuple(cmd), model_type(model_path), tuple(sorted(env.items())))
    with _POOL_LOCK:
        starting = _STARTING.setdefault(key, threading.Lock())
        generation = _GENERATION[0]
    with starting:
        with _POOL_LOCK:
            z = _ZYGOTES.get(key)
            if z is not None and z.alive():
                return z, None
            if key in _FAILED:
                raise ForkserverError(_FAILED[key])
        if z is not None:
            z.close()  # it died (or was closed after a failed fork): start another
        try:
            z = Zygote.start(cmd, model_path, env, cwd, log_path)
        except (ForkserverError, OSError) as e:
            with _POOL_LOCK:
                _FAILED[key] = str(e)
            raise ForkserverError(str(e)) from None
        with _POOL_LOCK:
            current = _GENERATION[0] == generation
            if current:
                _ZYGOTES[key] = z
        if not current:  # the sweep ended while it imported: it must not outlive it
            z.close()
            raise ForkserverError("the sweep ended while the zygote started")
        return z, z.start_s


def pids() -> set[int]:
    """The live zygotes' pids: a trial's reaping of what it started must leave them alone."""
    with _POOL_LOCK:
        return {pid for z in _ZYGOTES.values() for pid in (z.pid, *z.sub_pids)}


def shutdown_all() -> None:
    """Close every zygote (and what they still run) and forget failures: the end of a sweep."""
    with _POOL_LOCK:
        zygotes = list(_ZYGOTES.values())
        _ZYGOTES.clear()
        _FAILED.clear()
        _STARTING.clear()
        _GENERATION[0] += 1
    for z in zygotes:
        z.close()


atexit.register(shutdown_all)
