"""Parent side of ``loadprof run -- CMD``: the user's program, unchanged, run as one trial's worker.

The command is started as it is, in its own session (so loadprof can stop it and everything it started),
with loadprof's bootstrap folder first on PYTHONPATH and the events pipe named in ``LOADPROF_*`` variables
(loadprof.worker.program installs the hooks at interpreter start). The lifetime rules are a trial's
(loadprof.core.lifetime): loadprof is a child subreaper, the program dies with it (PDEATHSIG + watchdog),
its descendants are recorded while it runs and killed and reaped when it ends, however it ends. The program's
stdout and stderr are teed: passed through to loadprof's own (the terminal) and kept in the trial folder
(stdout.log, stderr.log, linked from the report); like under any tee they are pipes, so a Python program's
stdout is block-buffered unless it flushes (``print(..., flush=True)``, ``python -u``). py-spy samples it from outside as it samples a trial's worker.

It ends by itself, or loadprof stops it (SIGTERM to its process group, SIGKILL after ``STOP_GRACE_S``) when
``--until`` is met (loadprof.run.until), on Ctrl-C / SIGTERM / SIGHUP (a second one: SIGKILL at once), or past
``--timeout``. What was measured becomes one ``TrialResult`` (loadprof.run.runner.classify), and the folder a
one-trial sweep's: results.jsonl, sweep.json, report.json, report.md/.html/.csv.

Exit codes (``exit_code``): the program's own when it exits by itself (128 + n when a signal it did not get
from loadprof killed it); 0 when ``--until`` stopped it; 128 + n when loadprof got signal n (130 for Ctrl-C);
124 past ``--timeout``; 2 bad arguments or output folder (nothing started).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from loadprof.core import lifetime
from loadprof.core.clock import DEFAULT_CLOCK, Clock
from loadprof.results.model import TrialResult
from loadprof.run.interrupts import StopSignals, exit_code as signal_exit
from loadprof.probes.base import ParentContext, ParentProbe
from loadprof.run.runner import (RECORD_INTERVAL_S, TrialPlan, _kill_group, _limit_memory, _start_reader, classify,
                                 start_parent_probes, stop_parent_probes)
from loadprof.run.until import Until, UntilWatch
from loadprof.strategies.model import Strategy, Trial, parse_size, thaw
from loadprof.worker import program as child

STOP_GRACE_S = 5.0
EXIT_TIMEOUT = 124
POLL_S = 0.1
SPEC_NAME = "program_spec.json"


def bootstrap_dir() -> str:
    """The folder whose sitecustomize.py installs the hooks (shipped inside loadprof.worker)."""
    return str(Path(child.__file__).resolve().parent / "bootstrap")


def program_env(strategy: Strategy, events_fd: int, spec_file: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The program's environment: the caller's, the program's own ``env``, and loadprof's bootstrap variables."""
    prog = strategy.program
    assert prog is not None
    env = {**(os.environ if base is None else base), **{str(k): str(v) for k, v in thaw(prog.env).items()}}
    boot = bootstrap_dir()
    env["PYTHONPATH"] = os.pathsep.join([boot, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update({child.EVENTS_FD: str(events_fd), child.PARENT_PID: str(os.getpid()), child.SPEC_FILE: str(spec_file),
                child.BOOTSTRAP_DIR: boot})
    if strategy.timeout_s < NO_TIMEOUT_S:
        env[child.DEADLINE_S] = f"{strategy.timeout_s + lifetime.DEADLINE_GRACE_S:g}"
    return env


#: ``timeout_s`` of a program run without --timeout (a Strategy needs a number; this one never fires)
NO_TIMEOUT_S = 10.0 ** 9


@dataclass(frozen=True)
class ProgramRun:
    result: TrialResult
    exit_code: int
    stopped: str | None  # why loadprof stopped the program (None: it ended by itself)


def run_program(strategy: Strategy, trial_dir: Path, *, stops: StopSignals | None = None, clock: Clock = DEFAULT_CLOCK,
                log: Callable[[str], None] = lambda s: None) -> ProgramRun:
    """Run ``strategy.program`` once, hooked and sampled; stop it as its ``until`` says."""
    prog = strategy.program
    assert prog is not None
    stops = stops or StopSignals()
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec_file = trial_dir / SPEC_NAME
    spec_file.write_text(json.dumps({"strategy": strategy.to_dict(), "trial_dir": str(trial_dir)}))
    until = Until.parse(prog.until, prog.settle_s)
    limit = parse_size(strategy.memory_limit) if strategy.memory_limit else None
    received: list[dict[str, Any]] = []
    watch = UntilWatch(until, time.monotonic)
    r, w = os.pipe()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lifetime.become_subreaper()
    descendants = lifetime.Descendants()
    t_spawn = clock.now_ns()
    try:
        proc = subprocess.Popen(list(prog.cmd), pass_fds=(w,), env=program_env(strategy, w, spec_file),
                                cwd=prog.cwd, start_new_session=True, preexec_fn=_limit_memory(limit) if limit else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        os.close(r)
        from loadprof.core.errors import LoadprofError

        raise LoadprofError(f"cannot start {prog.label}: {e.strerror or e}", exit_code=2) from None
    finally:
        os.close(w)
    tees = [tee(pipe, fd, trial_dir / name) for pipe, fd, name in ((proc.stdout, 1, "stdout.log"),
                                                                   (proc.stderr, 2, "stderr.log"))]
    stopped = None
    parents: list[ParentProbe] = []  # the sampler and the machine probe, as for a trial
    try:
        start_parent_probes(ParentContext(proc.pid, trial_dir, strategy), received, parents)
        for probe in parents:  # py-spy is the sampler's, not the program's: it waits for its file itself
            descendants.exclude.update(probe.spared_pids())
        reader = _start_reader(r, received, watch.feed)
        stopped, timed_out = _wait(proc, strategy.timeout_s, watch, stops, descendants, log)
        t_reaped = clock.now_ns()
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        for probe in parents:
            probe.abort()
        raise
    finally:
        _kill_group(proc, signal.SIGKILL)
        descendants.reap()
    reader.join(timeout=5.0)
    for t in tees:  # the program and its descendants are gone: the pipes are at their end
        t.join(timeout=5.0)
    stop_parent_probes(parents, received)  # after the program is reaped: py-spy writes its profile when it exits
    plan = TrialPlan(Trial(strategy), "", trial_dir, cwd=prog.cwd)
    result = classify(plan, received, proc.returncode, timed_out, started_at, parent_wall_ns=t_reaped - t_spawn,
                      spawn_ns=t_spawn)
    result = program_result(result, received, proc.returncode, stopped, timed_out)
    return ProgramRun(result, exit_code(proc.returncode, stopped, timed_out, stops.signum), stopped)


def tee(pipe: Any, fd: int, log: Path) -> threading.Thread:
    """Copy the program's ``pipe`` to loadprof's own ``fd`` (the terminal, as it would have been) and to ``log``
    (the trial folder's stdout.log / stderr.log, which the report links), chunk by chunk as it comes."""
    def pump() -> None:
        with pipe, open(log, "wb") as f:
            while chunk := os.read(pipe.fileno(), 1 << 16):
                f.write(chunk)
                f.flush()
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                except OSError:  # the terminal went away: the log still gets it all
                    pass

    t = threading.Thread(target=pump, name=f"loadprof-tee-{log.stem}", daemon=True)
    t.start()
    return t


def _wait(proc: subprocess.Popen, timeout_s: float, watch: UntilWatch, stops: StopSignals,
          descendants: lifetime.Descendants, log: Callable[[str], None]) -> tuple[str | None, bool]:
    """Wait for the program, recording its descendants; stop it when asked. (why it was stopped, timed out)"""
    deadline = time.monotonic() + timeout_s
    next_record = time.monotonic()
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None, False
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= next_record:
            descendants.record(proc.pid)
            next_record = time.monotonic() + RECORD_INTERVAL_S
        timed_out = time.monotonic() >= deadline
        reason = (f"{signal.Signals(stops.signum).name} received" if stops.signum is not None
                  else f"--timeout {timeout_s:g} s passed" if timed_out else watch.due())
        if reason:
            log(f"stopping the program: {reason}")
            stop(proc, stops)
            return reason, timed_out


def stop(proc: subprocess.Popen, stops: StopSignals, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the program's process group, SIGKILL it after ``grace_s`` (or at once on a second stop signal)."""
    _kill_group(proc, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and not stops.hurry:
        try:
            proc.wait(timeout=POLL_S)
            return
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc, signal.SIGKILL)
    proc.wait()


def program_result(result: TrialResult, received: list[dict[str, Any]], returncode: int | None, stopped: str | None,
                   timed_out: bool) -> TrialResult:
    """A program's status: ``ok`` when it ran as it does (it exited, with whatever code, or loadprof stopped it
    as asked); ``timeout`` past --timeout; ``crashed`` when a signal loadprof did not send killed it; ``failed``
    when the hooks never reported (not a Python program, or one that cannot import loadprof)."""
    notes = list(result.notes)
    status, reason = result.status, result.reason
    hello = any(ev.get("type") == "hello" for ev in received)
    if timed_out:
        status = "timeout"
    elif not hello:
        status, reason = "failed", ("the program never reported: loadprof's hooks were not installed (not a Python "
                                    "program, python -S/-I, or an interpreter that cannot import loadprof)")
    elif stopped is not None or (returncode is not None and returncode >= 0):
        status, reason = "ok", None
        notes.append(f"stopped by loadprof: {stopped}" if stopped else f"the program exited with code {returncode}")
    metrics = {**result.metrics, "program_exit_code": returncode}
    if stopped:
        metrics["program_stopped"] = stopped
    return dataclasses.replace(result, status=status, reason=reason, notes=tuple(notes), metrics=metrics,
                               stderr_tail=result.stderr_tail if status != "ok" else "")


def exit_code(returncode: int | None, stopped: str | None, timed_out: bool, signum: int | None) -> int:
    """loadprof run's exit status (see the module docstring)."""
    if signum is not None:
        return signal_exit(signum)
    if timed_out:
        return EXIT_TIMEOUT
    if stopped is not None:
        return 0
    if returncode is None:
        return 1
    return returncode if returncode >= 0 else 128 - returncode


def program_sweep(strategy: Strategy) -> Any:
    """The one-trial sweep a program run is, for the output folder's sweep.json and the report's name."""
    from loadprof.strategies.expand import Sweep

    prog = strategy.program
    assert prog is not None
    name = Path(prog.cmd[1] if len(prog.cmd) > 1 and prog.cmd[0].rsplit("/", 1)[-1].startswith("python")
                else prog.cmd[0]).stem or "program"
    return Sweep(name=strategy.label or name, source=prog.label, description=f"loadprof run -- {prog.label}",
                 repeat=1, strategies=(strategy,))


def run_and_report(strategy: Strategy, out: Path, *, stops: StopSignals,
                   log: Callable[[str], None] = lambda s: None) -> tuple[Any, ProgramRun]:
    """Run the program as a one-trial sweep in ``out`` (the folder rules of compare) and write its reports."""
    from loadprof.analysis.sweep import analyse_sweep
    from loadprof.results.jsonl import append_result, prepare_out, write_report, write_sweep_json
    from loadprof.results.model import SweepResult
    from loadprof.results.runlock import RunLock

    sweep = program_sweep(strategy)
    with RunLock.acquire(out, log=log), stops.installed():  # one writer per folder, for the run's life
        prepare_out(out, resume=False)
        write_sweep_json(out, sweep)
        trial = Trial(strategy)
        run = run_program(strategy, out / "trials" / trial.id, stops=stops, log=log)
        append_result(out, run.result)
        result = analyse_sweep(SweepResult(
            run_id=out.name, name=sweep.name, source=sweep.source,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), trials=(run.result,),
            interrupted=stops.signum is not None, env=run.result.env))
        write_report(out, result)
        if not stops.hurry:
            from loadprof.reports.files import write_all

            write_all(result, out)
    return result, run
