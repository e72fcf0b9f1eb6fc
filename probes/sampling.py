"""Out-of-process sampling of a trial's worker: py-spy for the stacks, /proc for what each thread was doing.

Phase timing (probes/load_phases.py) says *how long* each step took; sampling says *where inside it* the time
went, down to the user's own code, running or waiting, with no hook in the worker: py-spy reads the worker's
memory from outside (with ``--idle``, so waiting threads are recorded too) and a parent-side poller reads each
thread's kernel state (loadprof.probes.threadstate). ``SamplingProbe``, the parent-side probe the runner runs
when a strategy samples, starts a ``Sampler`` right after the worker is spawned and ``finish``es it once the
worker is reaped (py-spy exits with its target); the samples are then attributed to the phase tree the worker's
events describe by loadprof.probes.attribution, and filed as the ``SamplingPayload``. Never imports torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loadprof.core.payloads import SamplingPayload
from loadprof.core.phases import build_tree
from loadprof.probes.base import ParentContext, ParentProbe, ProbeResult
from loadprof.probes.stacks import Sample, from_timelines, join, load_chrometrace, to_speedscope
from loadprof.probes.threadstate import ThreadStatePoller

PROFILE_NAME = "profile.speedscope.json"  # written by loadprof from the joined samples (waits included)
TRACE_NAME = "py-spy.trace.json"          # py-spy's own chrometrace: stacks over time
LOG_NAME = "py-spy.log"


@dataclass(frozen=True)
class SamplingResult:
    ok: bool
    reason: str | None = None
    profile_path: str | None = None
    log_path: str | None = None
    wall_s: float | None = None
    attribution: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = field(default=(), repr=False, compare=False)

    def with_attribution(self, attribution: Mapping[str, Any]) -> "SamplingResult":
        return SamplingResult(self.ok, self.reason, self.profile_path, self.log_path, self.wall_s, attribution,
                              self.notes + tuple(attribution.get("notes", ())), self.samples)

    def to_probe_result(self) -> ProbeResult:
        """What the runner files: the payload, notes, and artifacts relative to the trial folder."""
        arts = {"py_spy_log": LOG_NAME, **({"speedscope": PROFILE_NAME} if self.profile_path else {})}
        notes = self.notes if self.ok else (f"sampling not run: {self.reason}",) + self.notes
        figures = {k: v for k, v in self.attribution.items() if k != "notes"}
        payload = SamplingPayload.from_dict({"ok": self.ok, "wall_s": self.wall_s, **figures}, "sampling")
        return ProbeResult(payload, notes=tuple(dict.fromkeys(notes)), artifacts=arts if self.log_path else {})


def find_py_spy() -> str | None:
    """py-spy on PATH, else the one installed next to this interpreter (a venv that is not activated)."""
    cand = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(cand) if cand.is_file() and os.access(cand, os.X_OK) else None)


def _ptrace_problem(pid: int, py_spy: str) -> str | None:
    """Reasons py-spy will surely fail, found at once instead of after its ~0.4 s of attach retries."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"no process with pid {pid}"
    except PermissionError:
        return f"pid {pid} belongs to another user: py-spy needs root or CAP_SYS_PTRACE"
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return "ptrace is disabled on this machine (kernel.yama.ptrace_scope=3)"
    try:
        has_cap = bool(os.getxattr(py_spy, "security.capability"))
    except OSError:
        has_cap = False
    if scope in (1, 2) and os.geteuid() != 0 and not has_cap:
        return (f"kernel.yama.ptrace_scope={scope}: py-spy is not the worker's ancestor, so it needs root or "
                "CAP_SYS_PTRACE (`setcap cap_sys_ptrace+ep $(which py-spy)`, or ptrace_scope=0)")
    return None


def _log_error(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errs = [ln for ln in lines if ln.lower().startswith(("error", "permission denied"))]
    return (errs or lines or ["no output"])[0][:300]


class Sampler:
    """``py-spy record --idle`` plus a thread-state poller on one worker, from the parent.

    100 Hz and ``--nonblocking`` by default: on 2 cores, blocking sampling (py-spy stops the process for every
    stack read) at 200 Hz slowed a load by 35%; nonblocking reads never stop the worker, at the price of an
    occasional torn stack (py-spy counts those as errors; see the notes). Line numbers are kept, every thread
    is recorded (``--threads``), waiting ones too (``--idle``), filenames are absolute (``--full-filenames``) so
    user code can be told from libraries, and the format is chrometrace: the only one with times, which is
    what joins a stack to the thread's state at that moment.
    """

    def __init__(self, pid: int, out_dir: Path, rate_hz: int = 100, nonblocking: bool = True) -> None:
        self.pid, self.out_dir, self.rate_hz, self.nonblocking = pid, Path(out_dir), rate_hz, nonblocking
        self.trace_path = self.out_dir / TRACE_NAME
        self.profile_path = self.out_dir / PROFILE_NAME
        self.log_path = self.out_dir / LOG_NAME
        self._proc: subprocess.Popen | None = None
        self._poller: ThreadStatePoller | None = None
        self._reason: str | None = "Sampler.start() was not called"
        self._t0 = 0.0
        self._spy_t0_ns = 0

    def command(self, py_spy: str) -> list[str]:
        cmd = [py_spy, "record", "--pid", str(self.pid), "--rate", str(self.rate_hz), "--format", "chrometrace",
               "--output", str(self.trace_path), "--threads", "--full-filenames", "--idle"]
        return cmd + (["--nonblocking"] if self.nonblocking else [])

    def start(self, wait_s: float = 0.0) -> str | None:
        """Spawn py-spy and the poller: None when py-spy runs, else why it cannot. Does not wait (the worker is
        starting) unless ``wait_s`` > 0; failures py-spy finds only after retrying surface in ``finish``."""
        py_spy = find_py_spy()
        self._reason = ("py-spy not found on PATH or next to the interpreter (pip install py-spy)" if py_spy is None
                        else _ptrace_problem(self.pid, py_spy))
        if self._reason or py_spy is None:
            return self._reason
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "wb") as log:
                self._t0 = time.monotonic()
                self._spy_t0_ns = time.perf_counter_ns()  # py-spy's trace times count from (about) here
                self._proc = subprocess.Popen(self.command(py_spy), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
        except OSError as e:
            self._reason = f"could not run py-spy: {type(e).__name__}: {e}"
            return self._reason
        self._poller = ThreadStatePoller(self.pid, self.rate_hz, now_ns=time.perf_counter_ns)
        self._poller.start()
        try:
            code = self._proc.wait(timeout=wait_s) if wait_s > 0 else self._proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code:
            self._reason, self._proc = f"py-spy exited at once with code {code}: {_log_error(self.log_path)}", None
        return self._reason

    @property
    def spy_pid(self) -> int | None:
        """py-spy's pid while it runs (the runner must not reap it as one of the trial's strays)."""
        return self._proc.pid if self._proc is not None else None

    def abort(self) -> None:
        """A trial that is being abandoned (Ctrl-C, SIGTERM): stop the poller and py-spy, keep no profile."""
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def interrupt(self) -> None:
        """The target keeps running (an in-process profile samples its own process): py-spy writes its file on
        SIGINT, so ``finish`` need not wait for the target's exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def finish(self, t0_abs_ns: int | None = None, timeout_s: float = 30) -> SamplingResult:
        """After the worker exited: wait for py-spy's file (SIGINT, then kill, on timeout) and join its stacks
        with the thread states. ``t0_abs_ns``: the worker's clock origin, to put samples on the trial's clock."""
        states = self._poller.stop() if self._poller is not None else None
        try:
            return self._finish(t0_abs_ns, timeout_s, states)
        except Exception as e:  # noqa: BLE001 - a probe never decides the trial's fate
            return SamplingResult(ok=False, reason=f"sampling failed: {type(e).__name__}: {e}",
                                  log_path=str(self.log_path))

    def _finish(self, t0_abs_ns: int | None, timeout_s: float, states: Any) -> SamplingResult:
        proc, notes = self._proc, []
        if proc is None:
            return SamplingResult(ok=False, reason=self._reason, log_path=str(self.log_path))
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # py-spy writes its file on Ctrl-C
            notes.append(f"py-spy still running {timeout_s:g} s after the worker exited: stopped with SIGINT")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wall_s = time.monotonic() - self._t0
        if not self.trace_path.is_file() or self.trace_path.stat().st_size == 0:
            return SamplingResult(ok=False, log_path=str(self.log_path), wall_s=wall_s, notes=tuple(notes),
                                  reason=f"py-spy wrote no profile (exit {proc.returncode}): {_log_error(self.log_path)}")
        m = re.search(r"Samples: (\d+) Errors: (\d+)", self.log_path.read_text(errors="replace"))
        if m and int(m.group(2)):
            notes.append(f"py-spy could not read {m.group(2)} of {m.group(1)} stacks (torn nonblocking reads, "
                         "attach retries while the worker started): dropped")
        timelines = load_chrometrace(self.trace_path)
        if states is not None and states.rows:
            samples, native_s = join(timelines, states.rows, pid=self.pid, spy_t0_ns=self._spy_t0_ns,
                                     trial_t0_ns=t0_abs_ns)
            notes.append(f"thread states read {states.ticks} times ({states.ticks / wall_s:.0f} Hz effective) "
                         f"by a parent-side poller using {states.cpu_s:.2f} s CPU; samples are weighted by the "
                         "measured gap between readings, so a late reading loses no time")
            if native_s:
                notes.append(f"{native_s:.2f} s of thread time in threads with no Python stack (native pools) "
                             "left out")
        else:
            samples = from_timelines(timelines, pid=self.pid)
            notes.append("thread states not read" + (f" ({states.reason})" if states and states.reason else "")
                         + ": stacks are weighted by py-spy's change points and waits are not classified")
        self.profile_path.write_text(json.dumps(to_speedscope(samples, name=f"loadprof worker {self.pid}")))
        return SamplingResult(ok=True, profile_path=str(self.profile_path), log_path=str(self.log_path),
                              wall_s=wall_s, notes=tuple(notes), samples=tuple(samples))


class SamplingProbe(ParentProbe):
    """The sampler as a parent-side probe: on when the strategy's ``effective_sampling_hz`` is (a custom loader
    turns it on by default); py-spy is spared by the trial's reaping, since it exits by itself with its target."""

    NAME = "sampling"
    PAYLOAD = SamplingPayload

    def __init__(self) -> None:
        self.sampler: Sampler | None = None
        self.error: str | None = None
        self.ctx: ParentContext | None = None

    @classmethod
    def wanted(cls, strategy: Any) -> bool:
        return bool(strategy.effective_sampling_hz)

    def start(self, ctx: ParentContext) -> None:
        self.ctx = ctx
        self.sampler = Sampler(ctx.pid, ctx.trial_dir, ctx.strategy.effective_sampling_hz)
        self.error = self.sampler.start()

    def spared_pids(self) -> set[int]:
        pid = self.sampler.spy_pid if self.sampler is not None else None
        return {pid} if pid is not None else set()

    def stop(self, received: Sequence[Mapping[str, Any]]) -> ProbeResult:
        """The samples on the trial's clock (the worker's hello says where its t0 is), attributed to the phase
        tree the events describe."""
        from loadprof.probes.attribution import attribute
        from loadprof.probes.memjoin import timeline_series

        if self.sampler is None or self.error:
            return SamplingResult(ok=False, reason=self.error or "not started").to_probe_result()
        hello = next((ev for ev in received if ev.get("type") == "hello"), {})
        result = self.sampler.finish(hello.get("t0_abs_ns"))
        if not result.ok:
            return result.to_probe_result()
        last = max((ev.get("t_ns", 0) for ev in received if "t_ns" in ev), default=0)
        phases = build_tree([ev for ev in received if ev.get("type") == "phase"], end_ns=last)
        try:
            memory = timeline_series(self.ctx.trial_dir if self.ctx is not None else None, received)
            return result.with_attribution(attribute(result.samples, phases, rate_hz=self.sampler.rate_hz,
                                                     memory=memory)) \
                .to_probe_result()
        except Exception as e:  # noqa: BLE001 - a probe never decides the trial's fate
            return ProbeResult(SamplingPayload(ok=False), notes=(f"sampling not attributed: {type(e).__name__}: {e}",),
                               artifacts=result.to_probe_result().artifacts)

    def release(self) -> None:
        """The target is not going to exit (loadprof.profile() samples its own process): stop py-spy now."""
        if self.sampler is not None:
            self.sampler.interrupt()

    def abort(self) -> None:
        if self.sampler is not None:
            self.sampler.abort()
