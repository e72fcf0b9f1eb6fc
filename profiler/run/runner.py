"""Parent side of one trial: spawn a fresh worker or fork one from a pre-imported zygote (loadprof.worker.forkserver;
which one, loadprof.run.isolation decides), collect its events, enforce the timeout, classify the end.

The worker runs in its own session (process group) so a timeout kills it and
anything it started; its stdout/stderr go to the trial's logs; events arrive
on a dedicated pipe and whatever arrived before a crash is kept. Nothing the
trial started outlives it: this process is a child subreaper, the worker's
descendants are recorded while it runs, and all of them (setsid'ed ones too)
are killed and reaped when it ends, however it ends; the worker dies with this
process and has its own deadline (loadprof.core.lifetime). Never imports torch.
Statuses:
  ok       the worker reported ``done`` and exited 0
  skipped  the worker reported this machine cannot run the strategy
  failed   the worker caught an exception (reason = type and message)
  crashed  the worker died without reporting (signal or bare exit code)
  timeout  the worker outlived ``timeout_s`` and was killed
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from loadprof.core import events
from loadprof.core.errors import safe_text
from loadprof.run import forkclient, isolation
from loadprof.core import lifetime
from loadprof.core.clock import DEFAULT_CLOCK, Clock
from loadprof.run.constants import SweepConstants
from loadprof.core.payloads import Payload, PayloadError
from loadprof.core.phases import build_tree
from loadprof.core.probe_registry import parent_probes
from loadprof.probes.base import ParentContext, ParentProbe, ProbeResult
from loadprof.results.model import TrialResult
from loadprof.strategies.model import Trial, parse_size

#: environment every worker gets: no network, no telemetry, faulthandler on
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
}
KILL_GRACE_S = 3.0
RECORD_INTERVAL_S = 1.0  # how often the worker's descendants are recorded while it runs


def module_cmd(python: str, module: str) -> list[str]:
    """``python -m module`` started so that nothing in the working directory can shadow loadprof: ``-P`` (3.11+)
    keeps the cwd off the front of sys.path; the worker puts it back at the end, for the user's own modules."""
    return [python, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", module]
STDERR_TAIL_CHARS = 3000


@dataclass(frozen=True)
class TrialPlan:
    trial: Trial
    model_path: str
    trial_dir: Path
    cwd: str | None = None
    python: str = sys.executable
    #: added to the worker's environment (loadprof.run.executor: CUDA_VISIBLE_DEVICES pins a trial to its GPUs)
    env: Mapping[str, str] = field(default_factory=dict)
    #: device figures earlier trials measured (``SweepConstants.for_worker()``); None: those of the
    #: ``SweepConstants.applied()`` around this call, if any
    constants: Mapping[str, Any] | None = None
    #: may ``isolation: auto`` fork this trial from a zygote? False where the zygote would serve one trial only
    #: (a Ray task ends its zygotes with the trial: a fresh start is cheaper)
    pre_import: bool = True


def _constants(plan: TrialPlan) -> dict[str, Any]:
    if plan.constants is not None:
        return dict(plan.constants)
    current = SweepConstants.current()
    return current.for_worker() if current is not None else {}


def _limit_memory(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    return apply


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float, descendants: lifetime.Descendants | None = None) -> bool:
    """Wait for the worker, recording its descendants as it goes; past ``timeout_s`` SIGTERM its group, then
    SIGKILL. True when it timed out."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            proc.wait(timeout=min(left, RECORD_INTERVAL_S))
            return False
        except subprocess.TimeoutExpired:
            if descendants is not None:
                descendants.record(proc.pid)
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
    return True


def _start_reader(fd: int, received: list[dict[str, Any]],
                  on_event: Callable[[dict[str, Any]], None] | None) -> threading.Thread:
    """A thread collecting the worker's events from the pipe's read end ``fd`` (closed at EOF)."""
    def read() -> None:
        with os.fdopen(fd, "rb") as f:
            for ev in events.read_stream(f):
                received.append(ev)
                if on_event:
                    on_event(ev)

    reader = threading.Thread(target=read, name="loadprof-events", daemon=True)
    reader.start()
    return reader


#: how an allocation failure reads when it is not a Python MemoryError: torch's CPU allocator, CUDA, bitsandbytes
_OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory",
                "std::bad_alloc", "outofmemoryerror")


def is_out_of_memory(kind: str, message: str) -> bool:
    """A worker error that is an allocation failure, whatever raised it (MemoryError, torch's RuntimeError,
    torch.OutOfMemoryError), so every one gets the same "out of memory" tag."""
    text = f"{kind} {message}".lower()
    return kind == "MemoryError" or any(m in text for m in _OOM_MARKERS)


def run_trial(plan: TrialPlan, *, clock: Clock = DEFAULT_CLOCK,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> TrialResult:
    strategy = plan.trial.strategy
    plan.trial_dir.mkdir(parents=True, exist_ok=True)
    spec = {"trial_id": plan.trial.id, "repeat_index": plan.trial.repeat_index, "strategy": strategy.to_dict(),
            "model_path": plan.model_path, "trial_dir": str(plan.trial_dir), "constants": _constants(plan)}
    env = {**os.environ, **WORKER_ENV, **plan.env}
    limit = parse_size(strategy.memory_limit) if strategy.memory_limit else None
    received: list[dict[str, Any]] = []
    r, w = os.pipe()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lifetime.become_subreaper()  # what the trial orphans (double fork + setsid) comes back here to be reaped
    zygote, isolated = _zygote(plan, env)  # started (once) before the trial's clock and its reaping
    with open(plan.trial_dir / "stdout.log", "wb") as out, open(plan.trial_dir / "stderr.log", "wb") as err:
        descendants = lifetime.Descendants(exclude=forkclient.pids())
        t_spawn = clock.now_ns()
        try:
            proc = _launch(plan, zygote, spec, env, limit, w, out, err, isolated)
        finally:
            os.close(w)
        descendants.exclude.update(forkclient.pids())  # a sub-zygote this fork started is the zygote's
        parents: list[ParentProbe] = []
        try:  # from here on a Ctrl-C (at any line, not only in wait) takes the worker down with us
            start_parent_probes(ParentContext(proc.pid, plan.trial_dir, strategy), received, parents)
            for p in parents:  # py-spy is the sampler's, not the trial's: it waits for its file itself
                descendants.exclude.update(p.spared_pids())
            reader = _start_reader(r, received, on_event)
            try:  # a fresh worker reads its spec on stdin; a forked one got it with the fork
                if proc.stdin is not None:
                    proc.stdin.write(json.dumps(spec).encode())
                    proc.stdin.close()
            except BrokenPipeError:
                pass
            timed_out = _wait_or_kill(proc, strategy.timeout_s, descendants)
            t_reaped = clock.now_ns()
        except BaseException:  # Ctrl-C, SIGTERM, an error of ours: keep nothing half-written, leave nothing running
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            for p in parents:
                p.abort()
            raise
        finally:  # stray descendants (in the group or out of it) must not live on, nor hold the events pipe open
            _kill_group(proc, signal.SIGKILL)
            descendants.reap()
        reader.join(timeout=5.0)
    stop_parent_probes(parents, received)  # after the worker is reaped: py-spy writes its profile when it exits
    result = classify(plan, received, proc.returncode, timed_out, started_at,
                      parent_wall_ns=t_reaped - t_spawn, spawn_ns=t_spawn)
    return dataclasses.replace(result, harness={**result.harness, **isolated})


def start_parent_probes(ctx: ParentContext, received: list[dict[str, Any]], started: list[ParentProbe]) -> None:
    """The registry's parent probes the strategy wants, started in registry order into ``started`` (filled as they
    start, so an interrupt aborts every one already running); one that fails to start is a note (appended to
    ``received``), never the trial's fate."""
    for e in parent_probes():
        cls = e.load()
        if not cls.wanted(ctx.strategy):
            continue
        probe = cls()
        try:
            probe.start(ctx)
        except Exception as ex:  # noqa: BLE001 - a probe never decides the trial's fate
            received.append(events.make("note", text=f"probe {e.name} not run: {type(ex).__name__}: {ex}"))
            continue
        started.append(probe)


def stop_parent_probes(started: list[ParentProbe], received: list[dict[str, Any]]) -> None:
    """Stop each in reverse order with the worker's events; its result joins them as a ``probe`` event, read back
    by ``classify`` exactly as a worker probe's is."""
    for probe in reversed(started):
        try:
            received.append(probe.stop(list(received)).event(probe.NAME))
        except Exception as ex:  # noqa: BLE001 - a probe never decides the trial's fate
            received.append(events.make("note", text=f"probe {probe.NAME} failed to stop: {type(ex).__name__}: {ex}"))


def _zygote(plan: TrialPlan, env: Mapping[str, str]) -> tuple[forkclient.Zygote | None, dict[str, Any]]:
    """The pre-imported zygote this trial forks from (None: it starts fresh) and what its harness records of that:
    the isolation it really runs under and why (loadprof.run.isolation)."""
    choice = isolation.choose_for(plan.trial.strategy, env, pre_import=plan.pre_import)
    if choice.isolation != isolation.FORKSERVER:
        return None, choice.harness()
    try:
        z, start_s = forkclient.zygote_for(module_cmd(plan.python, "loadprof.worker.forkserver"), plan.model_path, env,
                                           plan.cwd, plan.trial_dir / "forkserver.log")
    except forkclient.ForkserverError as e:
        return None, {"isolation": "fresh", "isolation_note": f"forkserver unavailable: {e}"}
    record: dict[str, Any] = {**choice.harness(), "import": "pre-imported", "forkserver_pid": z.pid,
                              "forkserver_import_s": z.import_s}
    if start_s is not None:  # this trial started it: what that cost, once
        record.update(forkserver_start_s=start_s, forkserver_log="forkserver.log")
    return z, record


def _launch(plan: TrialPlan, zygote: forkclient.Zygote | None, spec: dict[str, Any], env: Mapping[str, str],
            limit: int | None, w: int, out: Any, err: Any, isolated: dict[str, Any]) -> Any:
    """The trial's process: forked from ``zygote`` when there is one (a fork it refuses starts the trial fresh,
    noted in ``isolated``), else a fresh ``python -m loadprof.worker.trial`` reading ``spec`` on stdin."""
    deadline_s = plan.trial.strategy.timeout_s + lifetime.DEADLINE_GRACE_S
    if zygote is not None:
        try:
            share = (f"{plan.model_path}#round{plan.trial.repeat_index}" if isolated.get("share_import") else None)
            return zygote.fork({"spec": spec, "deadline_s": deadline_s, "memory_limit": limit, "cwd": plan.cwd,
                                "share_import": share}, w, out.fileno(), err.fileno())
        except forkclient.ForkserverError as e:
            isolated.clear()
            isolated.update(isolation="fresh", isolation_note=f"forkserver could not fork: {e}")
    cmd = [*module_cmd(plan.python, "loadprof.worker.trial"), "--events-fd", str(w), "--parent-pid", str(os.getpid()),
           "--deadline-s", f"{deadline_s:g}"]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(w,), env=dict(env),
                            cwd=plan.cwd, start_new_session=True,
                            preexec_fn=_limit_memory(limit) if limit else None)


def _stderr_tail(trial_dir: Path) -> str:
    try:
        data = (trial_dir / "stderr.log").read_bytes()[-STDERR_TAIL_CHARS:]
    except OSError:
        return ""
    return data.decode(errors="replace")


def classify(plan: TrialPlan, received: list[dict[str, Any]], returncode: int | None, timed_out: bool,
             started_at: str, *, parent_wall_ns: int, spawn_ns: int) -> TrialResult:
    """Events + exit status -> TrialResult: how the trial ended (status, reason), with what the worker and the
    parent probes filed, typed. Computes no figure: those are ``loadprof.analysis.derive.enrich``'s. Pure apart
    from reading the stderr log."""
    strategy = plan.trial.strategy
    received, malformed = events.sort_out(received)  # checked again: a caller's list is as untrusted as the pipe
    by_type: dict[str, list[dict[str, Any]]] = {}
    for ev in received:
        by_type.setdefault(ev["type"], []).append(ev)
    done = by_type.get("done")
    last_t = max((ev.get("t_ns", 0) for ev in received if "t_ns" in ev), default=0)
    wall_ns = done[-1]["t_ns"] if done else last_t
    phases = build_tree(by_type.get("phase", []), end_ns=wall_ns)
    metrics: dict[str, Any] = {ev["key"]: ev["value"] for ev in by_type.get("metric", [])}
    notes = [ev["text"] for ev in by_type.get("note", [])]
    probes, artifacts = _probe_results(by_type.get("probe", []), notes)

    status, reason, sig = _status(by_type, returncode, timed_out, strategy, notes, malformed)
    if status == "crashed" and not done and phases:
        reason = f"{reason} during phase {_deepest_open(phases)}"
    harness = _harness(by_type, parent_wall_ns, spawn_ns, wall_ns)
    env = by_type["env"][-1]["info"] if by_type.get("env") else {}
    return TrialResult(
        trial_id=plan.trial.id, strategy_id=strategy.id, label=strategy.display(),
        repeat_index=plan.trial.repeat_index, status=status, strategy=strategy,
        wall_s=wall_ns / 1e9 if received else None, phases=phases, metrics=metrics, probes=probes,
        notes=tuple(n for n in notes if n), reason=reason, exit_code=returncode, signal=sig,
        stderr_tail=_stderr_tail(plan.trial_dir) if status != "ok" else "", harness=harness, env=env,
        started_at=started_at, artifacts={"stdout": "stdout.log", "stderr": "stderr.log", **artifacts},
    )


def _probe_results(probe_events: list[dict[str, Any]], notes: list[str]) -> tuple[dict[str, Payload], dict[str, str]]:
    """Each probe's typed payload, read strictly by its registry type (one that does not read is a note, not a
    failed trial), its notes added to ``notes``, and the artifacts they name."""
    probes: dict[str, Payload] = {}
    artifacts: dict[str, str] = {}
    for ev in probe_events:
        try:
            res = ProbeResult.from_event(ev)
        except Exception as e:  # noqa: BLE001 - PayloadError, or whatever a forged payload trips in a reader
            what = e if isinstance(e, PayloadError) else f"{type(e).__name__}: {e}"
            notes.append(safe_text(f"probe {ev.get('name')!r} filed a payload loadprof cannot read, "
                                          f"left out: {what}"))
            continue
        notes += res.notes
        artifacts.update(res.artifacts)
        if res.payload is not None:
            probes[ev["name"]] = res.payload
    return probes, artifacts


def _status(by_type: dict[str, list[dict[str, Any]]], returncode: int | None, timed_out: bool, strategy: Any,
            notes: list[str], malformed: list[str]) -> tuple[str, str | None, str | None]:
    """(status, reason, signal name) from what the worker said and how it ended; a failure's traceback goes
    to ``notes``. A malformed event fails the trial whatever else it said: its events cannot be trusted."""
    if timed_out:
        return "timeout", f"exceeded timeout_s={strategy.timeout_s:g}; process group killed", None
    if malformed:
        more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
        notes.extend(f"malformed event: {m}" for m in malformed[1:20])
        return "failed", f"malformed event from the worker: {malformed[0]}{more}", None
    if by_type.get("skip"):
        return "skipped", by_type["skip"][-1]["reason"], None
    if by_type.get("error"):
        err = by_type["error"][-1]
        reason = f"{err['kind']}: {err['message']}"
        if is_out_of_memory(err["kind"], err["message"]):
            where = f" under memory_limit={strategy.memory_limit}" if strategy.memory_limit else ""
            reason = f"out of memory{where}: {reason}"
        notes.append(err.get("traceback", ""))
        return "failed", reason, None
    if returncode == lifetime.SELF_STOP_EXIT and not by_type.get("done"):
        return "crashed", (f"worker stopped itself: its own deadline (timeout_s + {lifetime.DEADLINE_GRACE_S:g} s) "
                           "passed or its parent was gone (see stderr.log)"), None
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (the kernel's OOM killer sends SIGKILL)" if sig == "SIGKILL" else ""
        return "crashed", f"worker killed by {sig}{hint}", sig
    if returncode == 0 and by_type.get("done"):
        return "ok", None, None
    return "crashed", f"worker exited with code {returncode} without reporting an error", None


def _harness(by_type: dict[str, list[dict[str, Any]]], parent_wall_ns: int, spawn_ns: int,
             wall_ns: int) -> dict[str, Any]:
    """The harness's own cost: parent-measured wall, interpreter start, overhead beyond the trial's wall."""
    harness: dict[str, Any] = {"parent_wall_s": parent_wall_ns / 1e9}
    hello = by_type.get("hello")
    if hello and "t0_abs_ns" in hello[0]:
        # perf_counter is CLOCK_MONOTONIC on Linux: parent and worker share the time base
        harness["startup_s"] = (hello[0]["t0_abs_ns"] - spawn_ns) / 1e9
    if by_type.get("done"):
        harness["overhead_s"] = parent_wall_ns / 1e9 - wall_ns / 1e9
    return harness


def _deepest_open(phases: Any) -> str:
    path = ""
    nodes = list(phases)
    while nodes:
        open_ = [p for p in nodes if p.incomplete]
        if not open_:
            break
        path = f"{path}/{open_[-1].name}" if path else open_[-1].name
        nodes = list(open_[-1].children)
    return path or phases[-1].name
