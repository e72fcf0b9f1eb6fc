"""No process outlives a trial or the sweep, and Ctrl-C, SIGTERM and SIGHUP end a sweep cleanly (issue #13).

Every check is on behaviour with generous bounds ("gone within 60 s"), never on timing: a signal is sent once
the state it is meant to hit is reached (the hanging loader says it hangs), never after a sleep. Processes of a
test are told from other processes on the machine by their working directory: the test's own tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from loadprof.core import lifetime
from loadprof.run.interrupts import Interrupted, StopSignals, exit_code
from tests.helpers import default_stop_signals

GONE_WITHIN_S = 60.0
#: the file a hanging loader creates once it runs (the worker armed PDEATHSIG and its watchdog before)
HANGING = "hanging"

LOADERS = '''
import os
import time


def hang(model_path, hanging, seconds=3600.0):
    open(hanging, "w").close()
    time.sleep(seconds)


def quick_then_hang(model_path, marker, hanging, tag=""):
    """The first trial to run (the run order is a seeded shuffle) loads; the next one hangs."""
    if os.path.exists(marker):
        hang(model_path, hanging)
    open(marker, "w").close()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path)


def setsid_grandchild(model_path, pid_file):
    """Double fork + setsid: the grandchild leaves the worker's process group and session, then sleeps."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pid_file + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(pid_file + ".tmp", pid_file)
            os.execvp("sleep", ["sleep", "3600"])  # keeps the events pipe open (an inherited fd)
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(3600)
'''


def _ours(cwd: Path, exclude: tuple[int, ...] = ()) -> list[psutil.Process]:
    """Live processes working in ``cwd`` (a test's tmp_path): the sweep, its workers, py-spy, strays."""
    found = []
    for p in psutil.process_iter(["cwd", "status"]):
        if p.pid in exclude or p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if p.info["cwd"] and Path(p.info["cwd"]) == cwd:
            found.append(p)
    return found


def _none_left(cwd: Path, exclude: tuple[int, ...] = ()) -> list[str]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := _ours(cwd, exclude)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [" ".join(p.cmdline()) for p in left if p.is_running()]


def _wait_for(cond, what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _worker_of(proc: subprocess.Popen) -> psutil.Process | None:
    try:
        kids = psutil.Process(proc.pid).children()
    except psutil.Error:
        return None
    return next((k for k in kids if "loadprof.worker.trial" in " ".join(k.cmdline())), None)


def _compare(tmp_path: Path, tiny_model: Path, *, quick_first: bool) -> tuple[subprocess.Popen, Path]:
    """``loadprof compare`` started in tmp_path: one hanging trial, or a quick one then a hanging one."""
    (tmp_path / "lifetime_loaders.py").write_text(LOADERS)
    loader = f'sys_path: ["{tmp_path}"], target: '
    hanging = f'hanging: "{tmp_path / HANGING}"'
    if quick_first:
        loader += f'"lifetime_loaders:quick_then_hang", kwargs: {{marker: "{tmp_path / "marker"}", {hanging}, tag: TAG}}'
        labels = ["first", "second"]
    else:
        loader += f'"lifetime_loaders:hang", kwargs: {{{hanging}}}'
        labels = ["hang"]
    rows = "".join(f"  - {{label: {lb}, timeout_s: 300, load: {{loader: {{{loader.replace('TAG', lb)}}}}}}}\n"
                   for lb in labels)
    y = tmp_path / "sweep.yaml"
    y.write_text(f"name: lifetime\nmodel: {{path: {tiny_model}}}\nbase: {{generate: false, isolation: fresh}}\ninclude:\n{rows}")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(out),
                             "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=default_stop_signals)  # as a terminal's loadprof has them
    return proc, out


def _hanging_worker(proc: subprocess.Popen, out: Path) -> psutil.Process:
    """The worker of the hanging trial, once it runs the loader: its load phase started, and PDEATHSIG and the
    watchdog were armed before (lifetime.guard_worker runs before anything slow). A quick trial before it has
    its results line by then: the next trial starts only after the line is written."""
    _wait_for(lambda: (out.parent / HANGING).exists() or proc.poll() is not None, "the hanging loader")
    assert proc.poll() is None, proc.communicate()
    worker = _worker_of(proc)
    assert worker is not None, proc.communicate()
    return worker


# ---- the worker dies with its parent --------------------------------------------------------------------------
@pytest.mark.e2e
def test_sigkill_of_loadprof_takes_its_worker_along(tiny_model, tmp_path):
    proc, out = _compare(tmp_path, tiny_model, quick_first=False)
    worker = _hanging_worker(proc, out)
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs([worker], timeout=GONE_WITHIN_S)
    assert not alive, "the worker outlived its SIGKILLed parent"
    assert _none_left(tmp_path) == []  # py-spy too


# ---- SIGTERM, SIGHUP, a double Ctrl-C: a clean stop with a report ------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT), (signal.SIGHUP,)],
                         ids=["sigterm", "double-sigint", "sighup"])
def test_stop_signal_keeps_results_writes_report_and_leaves_nothing(tiny_model, tmp_path, signals):
    proc, out = _compare(tmp_path, tiny_model, quick_first=True)
    _hanging_worker(proc, out)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.3)  # the second one lands while the first is still being handled
    stdout, stderr = proc.communicate(timeout=600)  # the report is written first
    assert proc.returncode == exit_code(signals[0]) == 128 + signals[0], stdout + stderr
    assert "Traceback" not in stderr and "Aborted" not in stdout + stderr, stderr
    if signals[0] != signal.SIGHUP:
        assert f"interrupted ({signal.Signals(signals[0]).name})" in stdout and "--resume" in stdout
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and [t["status"] for t in report["trials"]] == ["ok"]
    assert _none_left(tmp_path) == []


# ---- a setsid grandchild does not survive its trial's timeout ----------------------------------------------------
@pytest.mark.e2e
def test_setsid_grandchild_is_killed_after_the_trials_timeout(tiny_model, tmp_path):
    from loadprof.run.runner import TrialPlan, run_trial
    from loadprof.strategies.model import LoaderSpec, LoadSpec, ModelSpec, Strategy, Trial

    (tmp_path / "lifetime_loaders.py").write_text(LOADERS)
    pid_file = tmp_path / "grandchild.pid"
    loader = LoaderSpec(target="lifetime_loaders:setsid_grandchild", sys_path=(str(tmp_path),),
                        kwargs={"pid_file": str(pid_file)})
    s = Strategy(model=ModelSpec(path=str(tiny_model)), label="setsid", load=LoadSpec(loader=loader),
                 generate=None, timeout_s=40, isolation="fresh")  # a lone run_trial: no session to end a zygote  # the worker must start and fork first, on a busy machine too
    result = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path / "trial", cwd=str(tmp_path)))
    assert result.status == "timeout", (result.reason, result.stderr_tail)
    assert pid_file.exists(), "the loader never forked (worker too slow to start?): " + result.stderr_tail
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _none_left(tmp_path) == []


# ---- worker side, directly -------------------------------------------------------------------------------------
def test_watchdog_reasons():
    now = [100.0]
    reason = lambda ppid, deadline: lifetime.watchdog_reason(  # noqa: E731
        42, None, deadline, now=lambda: now[0], getppid=lambda: ppid)
    assert reason(42, None) is None and reason(42, 101.0) is None
    assert "parent 42 is gone" in reason(1, 101.0)
    now[0] = 102.0
    assert "deadline" in reason(42, 101.0)


def test_a_closed_events_pipe_is_noticed_without_writing():
    r, w = os.pipe()
    try:
        assert not lifetime.pipe_reader_gone(w)
        os.close(r)
        assert lifetime.pipe_reader_gone(w)
        assert "events pipe" in lifetime.watchdog_reason(os.getppid(), w, None)
    finally:
        os.close(w)


def _py(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_worker_past_its_own_deadline_stops_itself_and_its_children():
    proc = _py("""
        import os, sys, time
        from loadprof.core import lifetime
        child = os.fork()
        if child == 0:
            time.sleep(3600)
            os._exit(0)
        print(child, flush=True)
        lifetime.start_watchdog(os.getppid(), None, 1.0, interval_s=0.1)
        time.sleep(3600)  # a hung trial whose parent never kills it
    """)
    child = psutil.Process(int(proc.stdout.readline()))
    assert proc.wait(timeout=GONE_WITHIN_S) == lifetime.SELF_STOP_EXIT
    assert "deadline" in proc.stderr.read()
    gone, alive = psutil.wait_procs([child], timeout=GONE_WITHIN_S)
    assert not alive


def test_a_worker_dies_with_its_parent_and_checks_the_race():
    parent = _py("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import os, time; from loadprof.core import lifetime; "
                                  "lifetime.guard_worker(os.getppid(), None, None); print('armed', flush=True); "
                                  "time.sleep(3600)"], stdout=subprocess.PIPE, text=True)
        print(child.pid, child.stdout.readline().strip(), flush=True)  # "armed" once PDEATHSIG is set; "" if it died
        time.sleep(3600)
    """)
    pid, *state = parent.stdout.readline().split()
    child = psutil.Process(int(pid))
    parent.kill()
    parent.wait()
    assert state == ["armed"], "the child died before it armed PDEATHSIG"
    gone, alive = psutil.wait_procs([child], timeout=GONE_WITHIN_S)
    assert not alive
    # a parent gone before the prctl (we were re-parented): the check right after it ends the process
    late = _py("from loadprof.core import lifetime\nlifetime.die_with_parent(1)\nprint('still here')")
    out, err = late.communicate(timeout=60)
    assert late.returncode == lifetime.SELF_STOP_EXIT and "still here" not in out and "parent 1" in err


def test_descendants_reaps_an_orphaned_setsid_grandchild():
    if not lifetime.become_subreaper():
        pytest.skip("PR_SET_CHILD_SUBREAPER unavailable: orphans go to init")
    d = lifetime.Descendants()
    subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "3600"])
            os._exit(0)
        os.waitpid(pid, 0)
    """)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=True)
    orphans = [p for p in psutil.Process().children() if p.name() == "sleep"]
    assert orphans, "the grandchild was not re-parented here"
    assert d.reap() >= 1
    gone, alive = psutil.wait_procs(orphans, timeout=GONE_WITHIN_S)
    assert not alive


# ---- parent side: stop signals -----------------------------------------------------------------------------------
@pytest.fixture
def stop_signals_not_ignored():
    """These tests handle the stop signals: a shell that started the test run in the background (``cmd &``
    without job control ignores SIGINT there) or under nohup (SIGHUP) must not decide them. StopSignals leaves an
    inherited SIG_IGN alone on purpose; here each stop signal starts at its default."""
    from loadprof.run.interrupts import STOP_SIGNALS

    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in saved.items():
        if handler is signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    for _ in range(100):  # Python runs the handler between bytecodes
        time.sleep(0.01)


def test_first_stop_signal_raises_inside_a_trial_later_ones_are_counted(stop_signals_not_ignored):
    before = signal.getsignal(signal.SIGTERM)
    stops = StopSignals()
    with stops.installed():
        with pytest.raises(Interrupted) as e:
            with stops.raising():
                _deliver(signal.SIGTERM)
        assert e.value.signum == signal.SIGTERM and isinstance(e.value, KeyboardInterrupt)
        _deliver(signal.SIGINT)  # while stopping: recorded, not raised
        assert stops.signum == signal.SIGTERM and stops.hurry
        with pytest.raises(Interrupted):  # no new trial starts after a stop request
            with stops.raising():
                pass
    assert signal.getsignal(signal.SIGTERM) is before
    assert [exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]


def test_a_stop_signal_outside_a_trial_is_recorded_not_raised(stop_signals_not_ignored):
    stops = StopSignals()
    with stops.installed():
        _deliver(signal.SIGHUP)  # e.g. while a results line is being written
        assert stops.signum == signal.SIGHUP and not stops.hurry


def test_a_worker_that_stopped_itself_is_classified_with_the_reason(tmp_path):
    from loadprof.run.runner import TrialPlan, classify
    from loadprof.strategies.model import ModelSpec, Strategy, Trial

    plan = TrialPlan(Trial(Strategy(model=ModelSpec(path=str(tmp_path)), generate=None)), str(tmp_path), tmp_path)
    r = classify(plan, [], lifetime.SELF_STOP_EXIT, False, "", parent_wall_ns=0, spawn_ns=0)
    assert r.status == "crashed" and "stopped itself" in r.reason and "deadline" in r.reason
