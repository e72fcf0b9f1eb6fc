"""Pre-imported trials (``isolation: forkserver``): a zygote imports torch, transformers and the model's modeling
module once, then forks one child per trial.

A fresh worker spends 3-4 s (10-16 s on a GPU image) importing before it measures anything; a child forked from
a zygote that has imported all of it starts its trial in milliseconds. Each child is still a process of its own:
its own probes and events pipe, its own session (``setsid``: the runner kills its group on timeout), its own
crash (a segfault kills only it), and PDEATHSIG plus the watchdog towards the zygote (loadprof.lifetime).

Why not multiprocessing's forkserver start method: it keeps one server per process, for one executable and one
preload list, where a sweep needs one zygote per python executable, model architecture and environment; its
children inherit the server's stdio, and its Process API has no place for the descriptors a trial runs with
(events pipe, stdout/stderr logs) nor a way to tell the parent how a child died. What is left is small enough:
``os.fork`` in a loop reading requests from a Unix socket that carries the descriptors (``socket.send_fds``).

Protocol, one JSON object per SOCK_SEQPACKET message:
  zygote -> parent, once   {"op": "ready", "pid", "import_s", "info"} or {"op": "error", "message"}
  parent -> zygote         {"op": "fork", "spec", "deadline_s", "memory_limit", "cwd"}
                           + fds [events pipe, stdout log, stderr log, status pipe]
  zygote -> parent         {"op": "forked", "pid"} or {"op": "error", "message"}
  zygote -> status pipe    the child's exit code once reaped (negative: the signal that killed it), then EOF

What keeps forked trials honest: the zygote never touches CUDA (importing torch does not initialise it;
``torch.cuda.is_initialized()`` is checked before every fork, and ``PYTORCH_NVML_BASED_CUDA_CHECK`` is set while
importing so a library asking ``is_available()`` does not initialise the driver either) and runs no torch op (no
thread pool for a child to inherit half of); it has no threads; ``gc.freeze()`` after the imports keeps a child's
first collection from copying the shared pages. It ends when the parent closes the socket or is gone (EOF, a
changed ``getppid()``, or PDEATHSIG when it was started from the main thread, whose life is the sweep's; from
another thread PDEATHSIG would fire when that thread ends): it then kills its children's groups, reaps them and
exits. The session shuts every zygote down when the sweep ends, however it ends (``shutdown_all``, also atexit).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from loadprof import lifetime
from loadprof.clock import DEFAULT_CLOCK as CLOCK

STARTUP_TIMEOUT_S = 300.0  # a cold GPU image imports for 10-16 s; a zygote silent this long is broken
REQUEST_TIMEOUT_S = 30.0
CHILD_READY_S = 5.0  # how long the zygote waits for a child's setsid() before answering with its pid
WATCH_S = 0.5  # how often the zygote looks at getppid() while idle
MAX_MESSAGE = 1 << 20
#: loadprof modules a trial imports lazily, imported by the zygote too (the probes come from the registry)
PREIMPORT = ("loadprof.worker", "loadprof.strategies.loaders", "loadprof.strategies.validation",
             "loadprof.probes.generation", "loadprof.probes.precision", "loadprof.analysis.estimate")


class ForkserverError(RuntimeError):
    """The zygote could not start or fork: the trial starts fresh instead (and says why in its harness)."""


def _send(sock: socket.socket, msg: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(msg, default=str).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One message and the descriptors that came with it; ({}, []) at EOF."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
    return (json.loads(data) if data else {}), fds


# ------------------------------------------------------------------------------------------------ parent side

class ForkedChild:
    """A forked trial as the runner sees it: Popen's ``pid``, ``stdin`` (none: the spec travels with the request),
    ``wait``, ``poll`` and ``returncode``; the exit status comes on the status pipe once the zygote reaps it."""

    stdin = None

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid, self.returncode = pid, None
        self._fd: int | None = status_fd
        self._buf = b""

    def poll(self) -> int | None:
        self._read(0.0)
        return self.returncode

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
            text = self._buf.decode(errors="replace").strip()
            self.returncode = int(text) if text.lstrip("-").isdigit() else None
        return True


class Zygote:
    """Parent side of one zygote: ``start`` it, ``fork`` trials from it, ``close`` it (killing what it still runs)."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, ready: Mapping[str, Any], start_s: float) -> None:
        self.proc, self.sock, self.start_s = proc, sock, start_s
        self.pid: int = proc.pid
        self.import_s: float = ready["import_s"]
        self.info: dict[str, Any] = dict(ready.get("info") or {})
        self.forks = 0
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
            ready, _ = _recv(ours)
        except (OSError, ValueError) as e:
            ready = {"op": "error", "message": f"no answer ({type(e).__name__}: {e})"}
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
                _send(self.sock, {"op": "fork", **request}, [events_fd, stdout_fd, stderr_fd, status_w])
                reply, _ = _recv(self.sock)
        except (OSError, ValueError) as e:
            reply = {"op": "error", "message": f"the zygote did not answer ({type(e).__name__}: {e})"}
        finally:
            os.close(status_w)
        if reply.get("op") != "forked":
            os.close(status_r)
            self.close()
            raise ForkserverError(reply.get("message") or "the zygote is gone")
        self.forks += 1
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
_POOL_LOCK = threading.Lock()


def model_type(model_path: str) -> str | None:
    """The architecture a zygote pre-imports for (config.json's model_type)."""
    try:
        return json.loads((Path(model_path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def zygote_for(cmd: Sequence[str], model_path: str, env: Mapping[str, str], cwd: str | None,
               log_path: Path) -> tuple[Zygote, float | None]:
    """The live zygote for this python (``cmd``), architecture and environment, and its start time when this
    call started it (None: reused). ForkserverError when it cannot start (remembered until ``shutdown_all``)."""
    key = (tuple(cmd), model_type(model_path), tuple(sorted(env.items())))
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
            _FAILED[key] = str(e)
            raise ForkserverError(str(e)) from None
        _ZYGOTES[key] = z
        return z, z.start_s


def pids() -> set[int]:
    """The live zygotes' pids: a trial's reaping of what it started must leave them alone."""
    with _POOL_LOCK:
        return {z.pid for z in _ZYGOTES.values()}


def shutdown_all() -> None:
    """Close every zygote (and what they still run) and forget failures: the end of a sweep."""
    with _POOL_LOCK:
        zygotes = list(_ZYGOTES.values())
        _ZYGOTES.clear()
        _FAILED.clear()
    for z in zygotes:
        z.close()


atexit.register(shutdown_all)


# ------------------------------------------------------------------------------------------------ zygote side

def preimport(model_path: str) -> dict[str, Any]:
    """Import what every trial of this architecture imports (the worker's own ``import_stack``, the probes, the
    loaders), without initialising CUDA; then freeze the heap so children share it."""
    import gc
    import importlib

    from loadprof.probe_registry import REGISTRY

    saved = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # is_available() by NVML: no driver initialised here
    try:
        from loadprof.worker import import_stack

        info = import_stack(model_path)
        for name in [*PREIMPORT, *(e.target.partition(":")[0] for e in REGISTRY if e.runs_in == "worker")]:
            importlib.import_module(name)
    finally:
        if saved is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved
    _check_no_cuda()
    gc.collect()
    gc.freeze()
    return info


def _check_no_cuda() -> None:
    """Never fork after CUDA is initialised: a child would inherit a context it cannot use."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA is initialised in the zygote; forking now would hand children a broken context")


class _Server:
    """The zygote's loop: fork on request, report each child's exit status, end with the parent."""

    def __init__(self, sock: socket.socket, parent_pid: int) -> None:
        self.sock, self.parent_pid = sock, parent_pid
        self.status: dict[int, int] = {}  # child pid -> write end of its status pipe
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)  # SIGCHLD wakes select() at once: exit codes reach the parent promptly
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        try:
            while os.getppid() == self.parent_pid:
                ready = select.select([self.sock, self.wake_r], [], [], WATCH_S)[0]
                if self.wake_r in ready:
                    while _drain(self.wake_r):
                        pass
                self.reap()
                if self.sock in ready:
                    msg, fds = _recv(self.sock)
                    if not msg:
                        break  # EOF: the sweep is over, or the parent is gone
                    _send(self.sock, self.handle(msg, fds))
        except OSError:
            pass  # the socket broke: the parent is gone
        finally:
            self.stop_children()

    def handle(self, msg: Mapping[str, Any], fds: list[int]) -> dict[str, Any]:
        """Fork a child for a request; the zygote keeps only the child's status pipe."""
        status = fds[3] if len(fds) == 4 else None
        try:
            if msg.get("op") != "fork" or status is None:
                raise ValueError(f"bad request {msg.get('op')!r} with {len(fds)} descriptors")
            _check_no_cuda()
            pid = self.fork(msg, fds)
            return {"op": "forked", "pid": pid}
        except Exception as e:  # noqa: BLE001 - told to the parent, which starts the trial fresh
            if status is not None:
                os.close(status)
            return {"op": "error", "message": f"{type(e).__name__}: {e}"}
        finally:
            for fd in fds[:3]:
                os.close(fd)

    def fork(self, msg: Mapping[str, Any], fds: list[int]) -> int:
        ready_r, ready_w = os.pipe()
        inherited = [self.sock.fileno(), self.wake_r, self.wake_w, ready_r, *self.status.values(), fds[3]]
        zygote_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(msg, fds[:3], ready_w, inherited, zygote_pid, CLOCK.now_ns())
        os.close(ready_w)
        self.status[pid] = fds[3]
        select.select([ready_r], [], [], CHILD_READY_S)  # its setsid() done: the parent can kill its group
        os.close(ready_r)
        return pid

    def reap(self, block: bool = False) -> None:
        """Collect exited children and tell the parent how each ended."""
        while self.status:
            try:
                pid, st = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.status.pop(pid, None)
            if fd is not None:
                try:
                    os.write(fd, f"{os.waitstatus_to_exitcode(st)}\n".encode())
                except OSError:
                    pass
                os.close(fd)

    def stop_children(self) -> None:
        for pid in list(self.status):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.reap(block=True)


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _child(msg: Mapping[str, Any], fds: Sequence[int], ready_w: int, inherited: Sequence[int], zygote_pid: int,
           t0_ns: int) -> NoReturn:
    """The forked trial: its own session and stdio, none of the zygote's descriptors, then a worker's life."""
    code = 70  # EX_SOFTWARE: the child could not set itself up (the traceback is in its stderr log)
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        events, out, err = fds
        null = os.open(os.devnull, os.O_RDONLY)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)
        os.write(ready_w, b"1")
        os.close(ready_w)
        if msg.get("memory_limit"):
            resource.setrlimit(resource.RLIMIT_DATA, (msg["memory_limit"], msg["memory_limit"]))
        if msg.get("cwd"):
            os.chdir(msg["cwd"])
        sys.argv = ["loadprof.worker (forked)"]
        from loadprof import worker

        lifetime.guard_worker(zygote_pid, events, msg.get("deadline_s"))
        code = worker.serve(events, lambda: dict(msg["spec"]), t0_ns=t0_ns)
    except BaseException:  # noqa: BLE001 - never return into the zygote's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadprof.forkserver")
    ap.add_argument("--control-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, required=True)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--die-with-parent", action="store_true", help="PDEATHSIG (started from the parent's main thread)")
    args = ap.parse_args(argv)
    if args.die_with_parent:
        lifetime.die_with_parent(args.parent_pid)
    elif os.getppid() != args.parent_pid:
        return lifetime.SELF_STOP_EXIT
    sock = socket.socket(fileno=args.control_fd)
    t = CLOCK.now_ns()
    try:
        info = preimport(args.model_path)
    except BaseException as e:  # noqa: BLE001 - the parent starts its trials fresh and shows why
        traceback.print_exc()
        _send(sock, {"op": "error", "message": f"pre-import failed: {type(e).__name__}: {e}"})
        return 1
    _send(sock, {"op": "ready", "pid": os.getpid(), "import_s": (CLOCK.now_ns() - t) / 1e9, "info": info})
    _Server(sock, args.parent_pid).serve()
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # skip torch's teardown, as the worker does
