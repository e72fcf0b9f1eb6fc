"""Executors: trials one at a time, N at a time in threads (GPU-pinned), or as Ray tasks; the same results.jsonl.

Fast tests use a fake ``TrialWork`` (no worker); the e2e ones run the tiny synthetic model through real workers,
and a real local Ray instance on this machine (Ray is in the ``test`` extra: ``importorskip`` is only a guard).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from loadprof.core.errors import LoadprofError
from loadprof.run.executor import SerialExecutor, ThreadExecutor, gpu_sets, visible_gpus
from loadprof.run.interrupts import StopSignals
from loadprof.results.model import SweepResult
from loadprof.run.options import make_executor
from loadprof.run.session import RESULTS, Session, read_results
from loadprof.strategies.expand import Sweep

from .test_runner import fault_strategy
from .test_session import _fake_result, _fake_sweep


#: how long a stand-in worker sleeps: far longer than a stop may take on a busy machine
SLEEPER_S = 600


class FakeWork:
    """Each trial sleeps ``delays[trial.id]`` (default 0.05 s) and comes back skipped; records what overlapped."""

    def __init__(self, delays=None, spawn_sleep: bool = False):
        self.delays, self.spawn_sleep = delays or {}, spawn_sleep
        self.lock = threading.Lock()
        self.running, self.most, self.envs, self.pids = 0, 0, [], []

    def prepare(self, trial, env=None):
        raise AssertionError("local executors call run_one")

    def run_one(self, trial, env=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.envs.append((trial.id, dict(env or {}), self.running))
        try:
            if self.spawn_sleep:  # a stand-in worker: its own session, as the runner starts one
                proc = subprocess.Popen(["sleep", str(SLEEPER_S)], start_new_session=True)
                with self.lock:
                    self.pids.append(proc.pid)
                proc.wait()
            else:
                time.sleep(self.delays.get(trial.id, 0.05))
            return _fake_result(trial)
        finally:
            with self.lock:
                self.running -= 1


def _ids(sweep):
    return [t.id for t in sweep.trials()]


def test_threads_yield_in_completion_order_and_record_concurrency():
    sweep = _fake_sweep()
    ids = _ids(sweep)
    work = FakeWork({ids[0]: 1.5, ids[1]: 0.1, ids[2]: 0.1, ids[3]: 0.1})
    started = []
    out = list(ThreadExecutor(2).run(sweep.trials(), work, StopSignals(), started.append))
    assert [r.trial_id for r in out] == [ids[1], ids[2], ids[3], ids[0]]  # the long one finishes last
    assert [t.id for t in started] == ids and work.most == 2
    assert all(r.harness["concurrency"] == 2 and r.concurrency == 2 for r in out)


def test_serial_is_one_at_a_time_and_records_nothing():
    sweep = _fake_sweep()
    work = FakeWork()
    out = list(SerialExecutor().run(sweep.trials(), work, StopSignals(), lambda t: None))
    assert [r.trial_id for r in out] == _ids(sweep) and work.most == 1
    assert all("concurrency" not in r.harness and r.concurrency == 1 for r in out)


def test_gpu_sets_pin_each_running_trial_to_its_own_gpus():
    assert gpu_sets(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, smi=None) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi=None) == [] == visible_gpus({}, smi=None)
    sweep = _fake_sweep()
    work = FakeWork(dict.fromkeys(_ids(sweep), 0.2))
    out = list(ThreadExecutor(2, ["0,1", "2,3"]).run(sweep.trials(), work, StopSignals(), lambda t: None))
    assert sorted(r.harness["gpus"] for r in out) == ["0,1", "0,1", "2,3", "2,3"]
    assert {e["CUDA_VISIBLE_DEVICES"] for _, e, _ in work.envs} == {"0,1", "2,3"}
    by_id = {r.trial_id: r.harness["gpus"] for r in out}
    assert by_id[_ids(sweep)[0]] != by_id[_ids(sweep)[1]]  # the first two ran together, on different GPUs


def _signal_once(work: FakeWork, running: int, sig: int) -> None:
    """Send ``sig`` to this process once ``running`` stand-in workers were started (a state, not a delay)."""
    deadline = time.monotonic() + 120
    while len(work.pids) < running and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(os.getpid(), sig)


def test_a_stop_signal_abandons_every_running_trial_and_kills_its_processes():
    sweep = _fake_sweep()
    work = FakeWork(spawn_sleep=True)
    stops = StopSignals()
    sender = threading.Thread(target=_signal_once, args=(work, 2, signal.SIGTERM), daemon=True)
    t0 = time.monotonic()
    with stops.installed():
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            list(ThreadExecutor(2).run(sweep.trials(), work, stops, lambda t: None))
    sender.join()
    assert stops.signum == signal.SIGTERM
    assert time.monotonic() - t0 < SLEEPER_S  # the sleepers were killed, not waited for
    assert len(work.pids) == 2  # two ran, none started after the signal
    for pid in work.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped


def test_session_with_jobs_writes_every_line_once_and_every_report_says_so(tmp_path, monkeypatch):
    sweep = _fake_sweep()
    work = FakeWork()
    monkeypatch.setattr(Session, "run_one", lambda self, trial, env=None: work.run_one(trial, env))
    seen = []
    result = Session(sweep, tmp_path / "out", executor=ThreadExecutor(3),
                     on_trial=lambda r, i, n: seen.append((i, n))).run()
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    lines = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert sorted(x["trial_id"] for x in lines) == sorted(_ids(sweep)) and len(read_results(tmp_path / "out")) == 4
    assert {x["harness"]["concurrency"] for x in lines} == {3}
    note = "trials ran 3 at a time: their timings were taken beside each other"
    assert note in (tmp_path / "out" / "report.md").read_text()
    assert note in (tmp_path / "out" / "report.html").read_text()
    from rich.console import Console

    from loadprof.reports import console as console_report

    con = Console(record=True, width=200)
    console_report.render(result, con)
    assert note in con.export_text()


def test_diff_notes_a_difference_in_concurrency_without_gating_on_it():
    import dataclasses

    from loadprof.analysis.diff import diff

    trials = tuple(_fake_result(t) for t in _fake_sweep().trials())
    a = SweepResult(run_id="a", name="a", source="x", created_at="", trials=trials)
    b = dataclasses.replace(a, run_id="b", trials=tuple(dataclasses.replace(t, harness={"concurrency": 4})
                                                        for t in trials))
    assert diff(a, a).notes == ()
    d = diff(a, b)
    assert d.notes and "A ran its trials one at a time, B 4 at a time" in d.notes[0]
    assert d.exit_code == diff(a, a).exit_code


def test_run_options_check_the_combinations(monkeypatch):
    four = lambda: ["0", "1", "2", "3"]  # noqa: E731
    ex, notes = make_executor(gpus_per_trial=2, gpus=four)
    assert isinstance(ex, ThreadExecutor) and ex.jobs == 2 and ex.gpu_sets == ["0,1", "2,3"]
    assert isinstance(make_executor(gpus_per_trial=2, gpus=lambda: [])[0], SerialExecutor)  # no GPU: fine
    assert isinstance(make_executor(jobs=1)[0], SerialExecutor)
    ex, notes = make_executor(jobs=3)
    assert ex.jobs == 3 and any("3 at a time" in n for n in notes)
    for kw in ({"jobs": 0}, {"gpus_per_trial": 0}, {"ray_address": "x:1"}, {"executor": "slurm"},
               {"jobs": 3, "gpus_per_trial": 2, "gpus": four}):
        with pytest.raises(LoadprofError) as e:
            make_executor(**kw)
        assert e.value.exit_code == 2
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LoadprofError) as e:
        make_executor("ray")
    assert e.value.exit_code == 2 and "pip install 'loadprof[ray]'" in e.value.hint


def test_cli_rejects_jobs_zero_in_one_line(tmp_path):
    from .conftest import EXAMPLES

    r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(EXAMPLES / "quickstart.yaml"),
                        "--jobs", "0", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--jobs must be 1 or more" in r.stderr and not (tmp_path / "o").exists()
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_worker_env_override_reaches_the_plan(tmp_path, monkeypatch):
    import loadprof.run.runner as runner

    from loadprof.strategies.model import ModelSpec, Strategy, Trial

    plans = []
    monkeypatch.setattr(runner, "run_trial", lambda plan: plans.append(plan) or _fake_result(plan.trial))
    (tmp_path / "ckpt").mkdir()
    strategy = Strategy(model=ModelSpec(path=str(tmp_path / "ckpt")), generate=None)
    Session(_fake_sweep(), tmp_path / "out").run_one(Trial(strategy), {"CUDA_VISIBLE_DEVICES": "1"})
    assert plans[0].env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_ray_task_resources_follow_the_device_map_and_memory_limit():
    from loadprof.run.ray_executor import fits, task_resources, unfit_reason
    from loadprof.strategies.model import LoadSpec, ModelSpec, Strategy

    def s(device_map="cpu", **kw):
        return Strategy(model=ModelSpec(path="/m"), load=LoadSpec(device_map=device_map), generate=None, **kw)

    assert task_resources(s(), 8, 2) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources(s("cuda"), 8, None)["num_gpus"] == 1 and task_resources(s("auto"), 8, 2)["num_gpus"] == 2
    assert task_resources(s("cuda"), 0, 2)["num_gpus"] == 0  # no GPU in the cluster: its worker skips it
    assert task_resources(s({"": "cpu"}), 8, 2)["num_gpus"] == 0
    assert task_resources(s({"": 0}), 8, 2)["num_gpus"] == 2
    res = task_resources(s(memory_limit="4GiB"), 0, None)
    assert res["memory"] == 4 * 2**30
    node = {"CPU": 16.0, "GPU": 8.0, "memory": 100 * 2**30}
    assert fits({"num_cpus": 1, "num_gpus": 2}, node) == 4 and fits(res, node) == 16
    assert unfit_reason(res, [node]) is None
    why = unfit_reason({"num_cpus": 1, "num_gpus": 0, "memory": 200 * 2**30}, [node])
    assert why.startswith("no node of the Ray cluster can run it") and "200.0 GiB" in why


# ------------------------------------------------------------------------------------------------ real workers

def _sweep(*strategies, name="exec"):
    return Sweep(name=name, source="test", description="", repeat=1, strategies=tuple(strategies))


@pytest.mark.e2e
def test_side_by_side_trials_do_not_reap_each_other(tiny_model, tmp_path):
    """A trial that ends while another runs must not kill the other's worker (lifetime.concurrent_trials)."""
    sweep = _sweep(fault_strategy(tiny_model, "normal", None),
                   fault_strategy(tiny_model, "exit-3", "exit_code", loader={"kwargs": {"code": 3}}))
    result = Session(sweep, tmp_path / "out", executor=ThreadExecutor(2)).run()
    by = {t.label: t for t in result.trials}
    assert by["normal"].status == "ok", (by["normal"].reason, by["normal"].stderr_tail)
    assert by["exit-3"].status == "crashed" and by["exit-3"].exit_code == 3
    assert all(t.concurrency == 2 for t in result.trials)


# ------------------------------------------------------------------------------------------------ Ray

def _session_pids(sid: int) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.append(p.pid)
        except (OSError, psutil.Error):
            pass
    return found


@pytest.mark.e2e
def test_cli_ray_sweep_starts_and_stops_its_own_ray(tmp_path):
    """`compare --executor ray` without an address: a local instance, shut down at the end; nothing outlives it."""
    pytest.importorskip("ray")
    y = tmp_path / "s.yaml"
    y.write_text("model: {synthetic: {shape: tiny, dtype: bfloat16, max_shard_size: 200KB}}\n"
                 "base: {generate: {prompt_tokens: 4, max_new_tokens: 2, warmup: 0}}\n"
                 "matrix: {load: {dtype: [auto]}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--executor", "ray",
                             "--no-progress", "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    lines = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert [x["status"] for x in lines] == ["ok"] and lines[0]["harness"]["executor"] == "ray"
    deadline = time.monotonic() + 60  # raylet, GCS, Ray workers, the trial's worker: all gone (they may take a while)
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session_pids(proc.pid) == []


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from loadprof.run.ray_executor import OBJECT_STORE_BYTES, import_ray

    import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=OBJECT_STORE_BYTES,
             _node_ip_address="127.0.0.1", logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def _ray():
    from loadprof.run.ray_executor import RayExecutor

    return RayExecutor()


@pytest.mark.e2e
def test_ray_records_the_same_statuses_as_the_local_run(tiny_model, tmp_path, ray_cluster):
    sweep = _sweep(fault_strategy(tiny_model, "normal", None), fault_strategy(tiny_model, "segfault", "segfault"),
                   fault_strategy(tiny_model, "hang", "hang", timeout_s=5))
    local = Session(sweep, tmp_path / "local").run()
    remote = Session(sweep, tmp_path / "ray", executor=_ray()).run()
    statuses = lambda r: {t.label: t.status for t in r.trials}  # noqa: E731
    assert statuses(remote) == statuses(local) == {"normal": "ok", "segfault": "crashed", "hang": "timeout"}
    by = {t.label: t for t in remote.trials}
    assert by["segfault"].signal == "SIGSEGV" and "timeout_s=5" in by["hang"].reason
    lines = [json.loads(x) for x in (tmp_path / "ray" / RESULTS).read_text().splitlines()]
    assert sorted(x["trial_id"] for x in lines) == sorted(_ids(sweep))
    assert all(x["harness"]["executor"] == "ray" and x["harness"]["concurrency"] == 2 for x in lines)
    assert (tmp_path / "ray" / "trials" / by["normal"].trial_id / "stderr.log").exists()


def _kill_ray_worker_of(trial_dir, times: int, killed: list[int], stop: threading.Event) -> None:
    """Find the trial's worker (its stdout is the trial's stdout.log) and SIGKILL its parent, the Ray worker
    running the task; ``times`` times (a new one each time: Ray retries the task)."""
    import psutil

    log = os.path.realpath(trial_dir / "stdout.log")
    while len(killed) < times and not stop.is_set():
        for p in psutil.process_iter(["cmdline"]):
            try:
                if "loadprof.worker.trial" in " ".join(p.info["cmdline"] or ()) and os.readlink(f"/proc/{p.pid}/fd/1") == log:
                    parent = p.parent()  # the Ray worker ("ray::node_task"); never an adoptive parent
                    if (parent is not None and parent.pid not in killed and parent.pid != os.getpid()
                            and " ".join(parent.cmdline()).startswith("ray::")):
                        parent.kill()
                        killed.append(parent.pid)
            except (OSError, psutil.Error):
                pass
        time.sleep(0.2)


@pytest.mark.e2e
def test_a_lost_ray_worker_is_retried_once_then_failed_while_the_sweep_goes_on(tiny_model, tmp_path, ray_cluster):
    sweep = _sweep(fault_strategy(tiny_model, "victim", "hang", timeout_s=90),
                   fault_strategy(tiny_model, "bystander", None))
    victim = next(t for t in sweep.trials() if t.strategy.label == "victim")
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_ray_worker_of,
                              args=(tmp_path / "out" / "trials" / victim.id, 2, killed, stop), daemon=True)
    killer.start()
    try:
        result = Session(sweep, tmp_path / "out", executor=_ray()).run()
    finally:
        stop.set()
    by = {t.label: t for t in result.trials}
    assert len(killed) == 2  # the first run and its one retry
    assert by["victim"].status == "failed" and by["victim"].reason.startswith("node lost: "), by["victim"].reason
    assert by["bystander"].status == "ok", by["bystander"].reason
    assert len((tmp_path / "out" / RESULTS).read_text().splitlines()) == 2


@pytest.mark.e2e
def test_ray_stop_cancels_the_rest_and_resume_runs_only_what_is_left(tiny_model, tmp_path, ray_cluster,
                                                                      monkeypatch):
    from loadprof.strategies.model import GenerateSpec, LoaderSpec, LoadSpec, ModelSpec, Strategy

    (tmp_path / "omp_probe.py").write_text("import os\n\ndef load(model_path, code=3):\n"
                                           "    print('OMP', os.environ.get('OMP_NUM_THREADS'), flush=True)\n"
                                           "    os._exit(code)\n")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    sweep = _sweep(*(Strategy(model=ModelSpec(path=str(tiny_model)), label=f"n{i}", generate=GenerateSpec(),
                              load=LoadSpec(loader=LoaderSpec(target="omp_probe:load", sys_path=(str(tmp_path),),
                                                              kwargs={"code": i})))
                     for i in (3, 4)))
    out = tmp_path / "out"

    def stop_after_first(result, i, n):
        raise KeyboardInterrupt

    first = Session(sweep, out, executor=_ray(), on_trial=stop_after_first).run()
    assert first.interrupted and len(first.trials) == 1
    ran = []
    second = Session(sweep, out, resume=True, executor=_ray(), on_start=lambda t, i, n: ran.append(t.id)).run()
    assert ran == [t.id for t in sweep.trials() if t.id != first.trials[0].trial_id]
    assert sorted(t.label for t in second.trials) == ["n3", "n4"] and not second.interrupted
    assert all(t.status == "crashed" for t in second.trials) and len(read_results(out)) == 2
    for t in second.trials:  # Ray's OMP_NUM_THREADS=1 for a 1-CPU task must not reach the worker
        assert (out / "trials" / t.trial_id / "stdout.log").read_text().strip() == "OMP None"
