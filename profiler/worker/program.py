"""Child side of ``loadprof run -- CMD``: the user's own program as a trial's worker, hooked at interpreter start.

The parent (loadprof.run.program) puts ``bootstrap/`` first on PYTHONPATH and names its events pipe in
``LOADPROF_*`` variables; that folder's ``sitecustomize.py`` calls ``install_from_env`` before the program's
first line, whatever started the interpreter (``python app.py``, ``python -m pkg``, a console script). From
here on the process is a worker like a trial's: it dies with loadprof (PDEATHSIG + watchdog,
loadprof.core.lifetime), says hello on the pipe with its t0, and runs the memory and io probes; the
load-phase hooks (loadprof.worker.program_hooks) are installed when transformers' modules are first imported,
so a program that never imports them pays nothing. At exit (normal, an exception, or loadprof's SIGTERM while
the program keeps the default handler) the open phases are closed, the probes' results and ``done`` sent.

The variables are removed from the environment and the bootstrap folder from PYTHONPATH at once, so the
program's own subprocesses run unhooked; a forked child never writes on the pipe (events carry the pid check).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

from loadprof.core import events, lifetime
from loadprof.core.clock import DEFAULT_CLOCK as CLOCK
from loadprof.core.phases import PhaseRecorder
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import Probe, ProbeContext
from loadprof.strategies.model import Strategy
from loadprof.worker import program_hooks
from loadprof.worker.program_phases import ProgramPhases

#: the variables the parent sets (loadprof.run.program) and the bootstrap reads and removes
EVENTS_FD, PARENT_PID, DEADLINE_S, SPEC_FILE, BOOTSTRAP_DIR = (
    "LOADPROF_EVENTS_FD", "LOADPROF_PARENT_PID", "LOADPROF_DEADLINE_S", "LOADPROF_SPEC", "LOADPROF_BOOTSTRAP")
ALL_VARS = (EVENTS_FD, PARENT_PID, DEADLINE_S, SPEC_FILE, BOOTSTRAP_DIR)
#: the worker probes a program runs from the start (and the imports probe, told by the phases when an import is
#: the workload's; the load phases come with transformers, program_hooks)
START_PROBES = ("memory", "io")

_installed: "ProgramWorker | None" = None


def clean_environment(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove loadprof's variables, and its bootstrap folder from PYTHONPATH, from ``environ``: the program's
    own children must run unhooked. Returns the removed variables."""
    taken = {k: environ.pop(k) for k in ALL_VARS if k in environ}
    boot = taken.get(BOOTSTRAP_DIR)
    if boot and "PYTHONPATH" in environ:
        rest = [p for p in environ["PYTHONPATH"].split(os.pathsep) if p and os.path.abspath(p) != os.path.abspath(boot)]
        if rest:
            environ["PYTHONPATH"] = os.pathsep.join(rest)
        else:
            del environ["PYTHONPATH"]
    return taken


def install_from_env(environ: MutableMapping[str, str] = os.environ) -> "ProgramWorker | None":
    """The bootstrap's entry point: a no-op without ``LOADPROF_EVENTS_FD`` (or when already installed)."""
    global _installed
    if _installed is not None or EVENTS_FD not in environ:
        return _installed
    t0 = CLOCK.now_ns()
    taken = clean_environment(environ)
    boot = taken.get(BOOTSTRAP_DIR)
    if boot:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.abspath(boot)]
    fd = int(taken[EVENTS_FD])
    os.set_inheritable(fd, False)  # the program's exec'd children must not hold the pipe open
    parent = int(taken[PARENT_PID]) if taken.get(PARENT_PID) else None
    deadline = float(taken[DEADLINE_S]) if taken.get(DEADLINE_S) else None
    lifetime.guard_worker(parent, fd, deadline)
    spec = json.loads(Path(taken[SPEC_FILE]).read_text()) if taken.get(SPEC_FILE) else {}
    writer = events.EventWriter(fd)
    _installed = ProgramWorker(lifetime.exit_on_broken_pipe(writer.emit), spec, t0, close=writer.close)
    _installed.start()
    return _installed


class ProgramWorker:
    """One hooked program: where its events go, the phase recorder, the probes, and the end of it all. The
    same worker runs in-process for ``loadprof.profile()`` (``send`` appends to a list; ``hook`` without the
    process-wide exit and signal handlers; ``finish`` undoes every hook)."""

    def __init__(self, send: Callable[[dict[str, Any]], None], spec: Mapping[str, Any], t0_ns: int,
                 close: Callable[[], None] = lambda: None) -> None:
        self.pid, self.t0_ns = os.getpid(), t0_ns
        self.spec = spec
        self.trial_dir = Path(spec.get("trial_dir") or ".")
        self.strategy = Strategy.from_dict(spec["strategy"]) if spec.get("strategy") else None
        self._close = close
        self._emit_lock = threading.Lock()
        self._safe_emit = send
        self.rec = PhaseRecorder(CLOCK, self.emit, t0_ns)
        self.phases = ProgramPhases(self.rec, CLOCK.now_ns)
        self.hooks = HookSet()
        self.probes: list[tuple[Probe, ProbeContext]] = []
        self._finished = False

    def emit(self, event: dict[str, Any]) -> None:
        if os.getpid() != self.pid:  # a fork of the program: its events are not the program's
            return
        with self._emit_lock:
            self._safe_emit(event)

    def note(self, text: str) -> None:
        self.emit(events.make("note", text=text))

    def metric(self, key: str, value: Any) -> None:
        self.emit(events.make("metric", key=key, value=value))

    def context(self) -> ProbeContext:
        return ProbeContext(clock=CLOCK, hooks=self.hooks, phase=self.phases.load_step, trial_dir=self.trial_dir,
                            strategy=self.strategy, t0_ns=self.t0_ns, pid=self.pid, emit=self.emit)

    def add_probe(self, probe: Probe) -> None:
        """Start ``probe`` and let it hear phase edges from now on (a failing one is a note)."""
        ctx = self.context()
        try:
            reason = probe.unavailable(ctx)
            if reason:
                self.note(f"probe {probe.NAME} not run: {reason}")
                return
            probe.start(ctx)
        except Exception as e:  # noqa: BLE001 - a probe never decides the program's fate
            self.note(f"probe {probe.NAME} failed to start: {type(e).__name__}: {e}")
            return
        if type(probe).on_phase is not Probe.on_phase:
            self.rec.add_listener(probe.on_phase)
        self.probes.append((probe, ctx))

    def hook(self) -> None:
        """Say hello, start the probes, install the load hooks (the parts an in-process profile shares)."""
        from loadprof.core.probe_registry import entry
        from loadprof.probes.imports import ImportsProbe

        self.emit(events.make("hello", pid=self.pid, t_ns=0, t0_abs_ns=self.t0_ns, protocol=events.PROTOCOL_VERSION,
                              program=True))
        for name in START_PROBES:
            self.add_probe(entry(name).load()())
        self.add_probe(ImportsProbe(active_when=self.phases.open_here))  # imports inside a step: lazy_import
        program_hooks.install(self)

    def start(self) -> None:
        """``hook``, and finish at the interpreter's exit or at SIGTERM (a program run by ``loadprof run``)."""
        self.hook()
        atexit.register(self.finish, "exit")
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # the program's own handler, set later, wins
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """loadprof (or anyone) asked the program to stop: report, then die of SIGTERM as it would have."""
        self.finish("SIGTERM")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, how: str) -> None:
        """Close what is open, send the probes' results and ``done``; once (atexit or a stop signal)."""
        if self._finished or os.getpid() != self.pid:
            return
        self._finished = True
        self.phases.finish()
        self.metric("program_end", how)
        if self.phases.skipped:
            self.note(f"{self.phases.skipped} load or generate calls ran in another thread while one was being "
                      "timed: not shown as phases (their time is in the samples)")
        self._send_env()
        for p, ctx in reversed(self.probes):
            self.rec.remove_listener(p.on_phase)
            try:
                res = p.stop()
                if res is not None:
                    self.emit(res.event(p.NAME))
            except Exception as e:  # noqa: BLE001
                self.note(f"probe {p.NAME} failed to stop: {type(e).__name__}: {e}")
        self.hooks.undo()
        self.emit(events.make("done", t_ns=CLOCK.now_ns() - self.t0_ns))
        self._close()

    def _send_env(self) -> None:
        if "torch" not in sys.modules or "transformers" not in sys.modules:
            return
        try:
            from loadprof.worker.trial import environment

            self.emit(events.make("env", info=environment()))
        except Exception as e:  # noqa: BLE001
            self.note(f"environment not read: {type(e).__name__}: {e}")

