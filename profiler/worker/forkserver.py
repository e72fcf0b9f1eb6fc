"""Pre-imported trials (``isolation: forkserver``): a zygote imports what the worker's own ``import`` phase imports
(torch, transformers' top level, loadprof's probes and steps) once and forks one child per trial, which starts
in milliseconds instead of importing for 3-4 s (10-16 s on a GPU image). Nothing a load imports lazily (the
model's modeling module, ``transformers.modeling_utils``) is pre-imported: a user's first load pays it, so each
forked trial's ``load`` does too (its ``load/lazy_import`` phases), as a fresh trial's does. Each child is still a process of its own: its own probes, events pipe and logs, its own session
(``setsid``: the runner kills its group on timeout), its own crash (a segfault kills only it), PDEATHSIG and the
watchdog towards the zygote (loadprof.core.lifetime).

Why not multiprocessing's forkserver start method: it keeps one server per process for one executable and one
preload list, where a sweep needs one zygote per python, architecture and environment; its children inherit the
server's stdio, and its Process API has no place for a trial's descriptors nor says how a child died. What is
left is small: ``os.fork`` in a loop reading requests from a Unix socket that carries descriptors (send_fds).
Protocol, one JSON object per SOCK_SEQPACKET message:
  zygote -> parent, once   {"op": "ready", "pid", "preimport_s", "info"} or {"op": "error", "message"}
  parent -> zygote         {"op": "fork", "spec", "deadline_s", "memory_limit", "cwd"}
                           + fds [events pipe, stdout log, stderr log, status pipe]
  zygote -> parent         {"op": "forked", "pid"[, "sub_pid"]} or {"op": "error", "message"}
  zygote -> status pipe    "<exit code> <CPU s>" once reaped (negative code: the signal that killed it), EOF

The zygote never touches CUDA (importing torch does not initialise it; ``torch.cuda.is_initialized()`` is
checked before every fork; ``PYTORCH_NVML_BASED_CUDA_CHECK`` is set while importing, so an ``is_available()``
call does not initialise the driver), runs no torch op (no thread pool to inherit half of) and has no threads;
``gc.freeze()`` after the imports keeps the zygote's own collections off the shared heap; each child (and each
sub-zygote, before its import) unfreezes it before its clock starts, so its collections traverse every object as
a fresh process's do (a frozen heap made a lazy import 20% faster than a user's process pays: 1.15 s vs 1.47 s). It
ends on EOF from its parent, a changed ``getppid()``, or PDEATHSIG when the parent's main thread started it
(PDEATHSIG follows the forking thread), killing its children's groups first; the session shuts every zygote
down when the sweep ends, however it ends. The parent's side (start, fork, shut down) is loadprof.run.forkclient.

A shared import (``"share_import": KEY`` in a fork request, loadprof.run.isolation says when): the lazy import a
built-in ``from_pretrained`` starts with (``transformers.modeling_utils``, the model's modeling module: 1.3-1.5 s
on CPU, most of a small model's load) is the same work in every trial of one model. The zygote forks, once per
KEY, a sub-zygote that does that import the way the first load would (through transformers' auto mapping), timed
as the imports probe times it, then forks that KEY's trials; each carries the measurement (``shared_import`` in
its spec) and its real load cost includes it (loadprof.analysis.derive). The runner's KEY is the model and the
repeat round, so every repeat still pays and measures its own import and repeats keep their spread. A sub-zygote
that cannot start leaves the trial to be forked from the zygote itself (it then pays its own import). At most
``MAX_SUBS`` live at once; an older one retires when its children are done.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
import traceback
from typing import Any, Mapping, NoReturn, Sequence

from loadprof.core import lifetime
from loadprof.worker import resident, shared_import
from loadprof.core.clock import DEFAULT_CLOCK as CLOCK

CHILD_READY_S = 5.0  # how long the zygote waits for a child's setsid() before answering with its pid
WATCH_S = 0.5  # how often the zygote looks at getppid() while idle
MAX_MESSAGE = 1 << 20
MAX_SUBS = 2  # sub-zygotes alive at once: each holds its own copy of the modeling modules (tens of MB)
SUB_READY_S = 120.0  # how long the zygote waits for a sub-zygote's import (a busy machine slows it 2-3x)


def send(sock: socket.socket, msg: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """One message, with descriptors when given (both ends: loadprof.run.forkclient is the parent's)."""
    data = json.dumps(msg, default=str).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One message and the descriptors that came with it; ({}, []) at EOF."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
    return (json.loads(data) if data else {}), fds


# ------------------------------------------------------------------------------------------------ zygote side

def preimport(model_path: str) -> dict[str, Any]:
    """Import what every trial imports in its own ``import`` phase (the worker's ``import_stack``, the probes'
    modules), nothing its load would import, without initialising CUDA; then freeze the heap so children share
    it."""
    import gc
    import importlib

    from loadprof.core.probe_registry import REGISTRY

    saved = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # is_available() by NVML: no driver initialised here
    try:
        from loadprof.worker.trial import import_stack

        info = import_stack(model_path)
        for name in (e.target.partition(":")[0] for e in REGISTRY if e.runs_in == "worker"):
            importlib.import_module(name)
    finally:
        if saved is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved
    _check_no_cuda()
    _RESIDENT[:] = resident.resident_file_pages()  # children map these before their clock (loadprof.worker.resident)
    info["resident_file_bytes"] = sum(n for _, n in _RESIDENT)
    gc.collect()
    gc.freeze()
    return info


#: the zygote's resident file-backed pages after its imports, which each child populates before its clock starts
_RESIDENT: list[tuple[int, int]] = []


def _check_no_cuda() -> None:
    """Never fork after CUDA is initialised: a child would inherit a context it cannot use."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA is initialised in the zygote; forking now would hand children a broken context")


class _Sub:
    """The zygote's handle on one sub-zygote: its pid and the socket its fork requests are relayed on."""

    def __init__(self, pid: int, sock: socket.socket, shared: Mapping[str, Any]) -> None:
        self.pid, self.sock, self.shared = pid, sock, shared

    def relay(self, msg: Mapping[str, Any], fds: Sequence[int]) -> dict[str, Any]:
        send(self.sock, msg, fds)
        reply, _ = recv(self.sock)
        return reply or {"op": "error", "message": "the sub-zygote is gone"}

    def retire(self) -> None:
        """EOF: it forks nothing more and exits once its running trials are reaped."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()


class _Server:
    """The zygote's loop: fork on request, report each child's exit status, end with the parent."""

    def __init__(self, sock: socket.socket, parent_pid: int, shared: Mapping[str, Any] | None = None) -> None:
        self.sock, self.parent_pid = sock, parent_pid
        self.shared = shared  # a sub-zygote's import record (None: the zygote itself)
        self.subs: dict[str, _Sub] = {}  # share key -> sub-zygote, oldest first
        self.retired: list[int] = []  # sub-zygotes told to finish, reaped as they exit
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
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)  # the signal bytes: a wake-up, nothing to read in them
                self.reap()
                if self.sock in ready:
                    msg, fds = recv(self.sock)
                    if not msg:
                        break  # EOF: the sweep is over, or the parent is gone
                    send(self.sock, self.handle(msg, fds))
        except OSError:
            pass  # the socket broke: the parent is gone
        finally:
            if self.shared is not None and os.getppid() == self.parent_pid:
                self.reap(block=True)  # retired by a live zygote: its trials finish first
            self.stop_children()

    def handle(self, msg: Mapping[str, Any], fds: list[int]) -> dict[str, Any]:
        """Fork a child for a request; the zygote keeps only the child's status pipe."""
        status = fds[3] if len(fds) == 4 else None
        try:
            if msg.get("op") != "fork" or status is None:
                raise ValueError(f"bad request {msg.get('op')!r} with {len(fds)} descriptors")
            _check_no_cuda()
            reply = self.relay(msg, fds)
            if reply is not None:
                os.close(status)
                return reply
            if self.shared is not None:
                msg = {**msg, "spec": {**msg["spec"], "shared_import": self.shared}}
            pid = self.fork(msg, fds)
            return {"op": "forked", "pid": pid}
        except Exception as e:  # noqa: BLE001 - told to the parent, which starts the trial fresh
            if status is not None:
                os.close(status)
            return {"op": "error", "message": f"{type(e).__name__}: {e}"}
        finally:
            for fd in fds[:3]:
                os.close(fd)

    def relay(self, msg: Mapping[str, Any], fds: list[int]) -> dict[str, Any] | None:
        """A request with a share key, answered by its sub-zygote; None: fork it here (no key, a sub-zygote of
        our own, or one that cannot start or answer)."""
        sub = self.sub_for(msg, fds) if self.shared is None else None
        if sub is None:
            return None
        try:
            return {**sub.relay(msg, fds), "sub_pid": sub.pid}  # the parent's reaping must spare it
        except (OSError, ValueError):
            self.subs.pop(str(msg.get("share_import")), None)
            self.retired.append(sub.pid)
            sub.retire()
            return None

    def sub_for(self, msg: Mapping[str, Any], fds: Sequence[int]) -> _Sub | None:
        """The sub-zygote for the request's share key, started on first use; None: no sharing asked, or it could
        not start (the trial is then forked from here and pays its own import)."""
        key = msg.get("share_import")
        if not key:
            return None
        if key in self.subs:
            return self.subs[key]
        while len(self.subs) >= MAX_SUBS:
            old = self.subs.pop(next(iter(self.subs)))
            self.retired.append(old.pid)
            old.retire()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        inherited = [self.sock.fileno(), self.wake_r, self.wake_w, ours.fileno(), *self.status.values(), *fds,
                     *(s.sock.fileno() for s in self.subs.values())]  # the request's own too: its trial's pipes
        zygote_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _sub_zygote(theirs, inherited, zygote_pid, str(msg["spec"]["model_path"]))
        theirs.close()
        ours.settimeout(SUB_READY_S)
        try:
            ready, _ = recv(ours)
        except (OSError, ValueError):
            ready = {}
        if ready.get("op") != "ready":
            ours.close()
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return None
        ours.settimeout(None)
        self.subs[key] = _Sub(pid, ours, ready["shared"])
        return self.subs[key]

    def fork(self, msg: Mapping[str, Any], fds: list[int]) -> int:
        ready_r, ready_w = os.pipe()
        inherited = [self.sock.fileno(), self.wake_r, self.wake_w, ready_r, *self.status.values(), fds[3],
                     *(s.sock.fileno() for s in self.subs.values())]
        zygote_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(msg, fds[:3], ready_w, inherited, zygote_pid)
        os.close(ready_w)
        self.status[pid] = fds[3]
        select.select([ready_r], [], [], CHILD_READY_S)  # its setsid() done: the parent can kill its group
        os.close(ready_r)
        return pid

    def reap(self, block: bool = False) -> None:
        """Collect exited children and tell the parent how each ended."""
        for pid in list(self.retired):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            self.retired.remove(pid)
        while self.status:
            try:
                pid, st, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.status.pop(pid, None)
            if fd is not None:
                cpu_s = usage.ru_utime + usage.ru_stime  # the parent's RUSAGE_CHILDREN never sees this child
                try:
                    os.write(fd, f"{os.waitstatus_to_exitcode(st)} {cpu_s:.6f}\n".encode())
                except OSError:
                    pass
                os.close(fd)

    def stop_children(self) -> None:
        for sub in self.subs.values():  # EOF first: each kills its own trials and exits
            sub.retire()
        for pid in [*(sub.pid for sub in self.subs.values()), *self.retired]:
            shared_import.wait_or_kill(pid)
        self.subs.clear()
        self.retired.clear()
        for pid in list(self.status):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.reap(block=True)


def _close_all(fds: Sequence[int]) -> None:
    """Close the zygote's descriptors in a forked process (any already closed is skipped)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _exit(code: int) -> NoReturn:
    """End a forked process (or the zygote) without returning into the zygote's loop or running torch's
    teardown, its output flushed first."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _sub_zygote(sock: socket.socket, inherited: Sequence[int], zygote_pid: int, model_path: str) -> NoReturn:
    """A forked sub-zygote: the zygote's descriptors closed, dies with the zygote, does the shared import, says
    ready with its record, then serves the zygote's relayed fork requests as a zygote of its own."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _close_all(inherited)
        lifetime.die_with_parent(zygote_pid)
        try:
            gc.unfreeze()  # the import's collections traverse the whole heap, as in a user's fresh process
            shared = shared_import.import_for_load(model_path)
            _check_no_cuda()
            _RESIDENT[:] = resident.resident_file_pages()
            gc.collect()
            gc.freeze()
        except BaseException as e:  # noqa: BLE001 - the zygote forks the trial itself instead
            send(sock, {"op": "error", "message": f"{type(e).__name__}: {e}"})
            os._exit(1)
        send(sock, {"op": "ready", "shared": shared})
        _Server(sock, zygote_pid, shared).serve()
        code = 0
    except BaseException:  # noqa: BLE001 - never return into the zygote's loop
        traceback.print_exc()
    finally:
        _exit(code)


def _child(msg: Mapping[str, Any], fds: Sequence[int], ready_w: int, inherited: Sequence[int],
           zygote_pid: int) -> NoReturn:
    """The forked trial: its own session and stdio, none of the zygote's descriptors, the zygote's resident file
    pages mapped, then a worker's life, whose clock starts there."""
    code = 70  # EX_SOFTWARE: the child could not set itself up (the traceback is in its stderr log)
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _close_all(inherited)
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
        sys.argv = ["loadprof.worker.trial (forked)"]
        from loadprof.worker import trial as worker

        lifetime.guard_worker(zygote_pid, events, msg.get("deadline_s"))
        gc.unfreeze()  # a fresh process's collections see every object: so do the trial's
        resident.populate(_RESIDENT)  # the pages a fresh process has mapped after its imports: harness time
        code = worker.serve(events, lambda: dict(msg["spec"]), t0_ns=CLOCK.now_ns())
    except BaseException:  # noqa: BLE001 - never return into the zygote's loop
        traceback.print_exc()
    finally:
        _exit(code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadprof.worker.forkserver")
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
        send(sock, {"op": "error", "message": f"pre-import failed: {type(e).__name__}: {e}"})
        return 1
    send(sock, {"op": "ready", "pid": os.getpid(), "preimport_s": (CLOCK.now_ns() - t) / 1e9, "info": info})
    _Server(sock, args.parent_pid).serve()
    return 0


if __name__ == "__main__":
    _exit(main())  # skip torch's teardown, as the worker does
