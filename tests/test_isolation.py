"""Fast by default without changing what is measured: ``isolation: auto`` (which trials fork from a pre-imported
zygote, which start fresh), the allocation trace once per configuration, and concurrent forks (``--jobs``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from loadprof.core import events
from loadprof.core.clock import DEFAULT_CLOCK
from loadprof.probes._hooks import HookSet
from loadprof.probes.allocations import AllocationsProbe
from loadprof.probes.base import ProbeContext
from loadprof.results.model import TrialResult
from loadprof.run import forkclient, isolation, runner
from loadprof.run.constants import SweepConstants
from loadprof.run.session import Session
from loadprof.analysis.studies import series, traced_repeats
from loadprof.strategies.expand import load_sweep
from loadprof.strategies.model import GenerateSpec, LoaderSpec, LoadSpec, ModelSpec, Strategy, Trial

from .conftest import EXAMPLES


def _s(**load) -> Strategy:
    isolation_ = load.pop("isolation", "auto")
    return Strategy(model=ModelSpec(path="/x"), load=LoadSpec(**load), isolation=isolation_)


# ------------------------------------------------------------------------------------ the choice


@pytest.mark.parametrize("strategy, gpu, expected", [
    (_s(), False, "forkserver"),                                   # warm CPU: forked
    (_s(), True, "forkserver"),                                    # on the host although a GPU is there
    (_s(device_map={"model": "cpu", "lm_head": "disk"}), True, "forkserver"),
    (_s(file_cache="cold"), False, "fresh"),                       # measures the cold import too
    (_s(device_map="cuda"), True, "fresh"),                        # a CUDA trial
    (_s(device_map="auto"), True, "fresh"),                        # may place weights on the GPU
    (_s(device_map={"model": 0}), True, "fresh"),
    (_s(device_map="auto"), False, "forkserver"),                  # no GPU: auto is the host
    (_s(loader=LoaderSpec(target="m:f")), True, "fresh"),          # a custom loader may use the GPU
    (_s(loader=LoaderSpec(target="m:f")), False, "forkserver"),
    (_s(isolation="fresh"), False, "fresh"),                       # explicit overrides win
    (_s(isolation="forkserver", device_map="cuda"), True, "forkserver"),
    (_s(isolation="forkserver", file_cache="cold"), False, "fresh"),  # ... but cold stays fresh
])
def test_auto_forks_warm_cpu_trials_and_starts_the_rest_fresh(strategy, gpu, expected):
    choice = isolation.choose(strategy, gpu)
    assert choice.isolation == expected and choice.note
    shared = {"share_import": True} if choice.share_import else {}
    assert choice.harness() == {"isolation": expected, "isolation_note": choice.note, **shared}
    # only auto's forked built-in loads share the lazy import: a custom loader's imports, and forkserver asked
    # for, stay each trial's own
    assert choice.share_import == (expected == "forkserver" and strategy.isolation == "auto"
                                   and strategy.load.loader is None)


def test_auto_starts_fresh_where_a_zygote_would_serve_one_trial():
    assert isolation.choose(_s(), False, pre_import=False).isolation == "fresh"
    assert isolation.choose(_s(isolation="forkserver"), False, pre_import=False).isolation == "forkserver"


def test_gpu_visibility_never_runs_anything(tmp_path):
    node = tmp_path / "nvidia0"
    node.touch()
    nodes = (str(tmp_path / "nvidia[0-9]*"),)
    assert isolation.gpu_visible({}, nodes)
    assert not isolation.gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, nodes)
    assert not isolation.gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, nodes)
    assert isolation.gpu_visible({"CUDA_VISIBLE_DEVICES": "1"}, nodes)
    assert not isolation.gpu_visible({}, (str(tmp_path / "none*"),))


def test_a_fresh_trial_records_its_isolation(tmp_path):
    for s, note in ((_s(isolation="fresh"), "asked"), (_s(file_cache="cold"), "cold")):
        zygote, record = runner._zygote(runner.TrialPlan(Trial(s), "/x", tmp_path), {})
        assert zygote is None and record["isolation"] == "fresh" and note in record["isolation_note"]


def _legacy_id(s: Strategy) -> str:
    """Strategy.id as it was computed before ``isolation`` existed (the algorithm, not a stored figure)."""
    d = s.to_dict()
    d.pop("label", None)
    d.pop("isolation")
    if d["model"].get("revision", 0) is None:
        d["model"].pop("revision")
    for key, unset in (("method", "from_pretrained"), ("workers", None), ("check_logits", False)):  # newer keys
        if d["load"].get(key, unset) == unset:
            d["load"].pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:12]


def test_bundled_yaml_ids_are_those_from_before_auto():
    files = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("gpu/*.yaml"))
    strategies = [s for f in files for s in load_sweep(f).strategies]
    assert strategies and {s.isolation for s in strategies} == {"auto"}
    assert [s.id for s in strategies] == [_legacy_id(s) for s in strategies]
    assert all(dataclasses.replace(s, isolation="fresh").id == s.id for s in strategies)


# ------------------------------------------------------------------------------------ trace once


def _trial(s: Strategy, repeat: int, status: str = "ok", **metrics) -> TrialResult:
    if "generate_start_alloc_bytes" in metrics:  # a traced trial files the whole allocations payload
        metrics = {"generate_start_alloc_total_bytes": metrics["generate_start_alloc_bytes"],
                   "generate_start_alloc_count": 1, "generate_start_alloc_min_bytes": 4096,
                   "generate_start_alloc_sites": [], **metrics}
    return TrialResult(trial_id=f"{s.id}-r{repeat}", strategy_id=s.id, label=s.display(), repeat_index=repeat,
                       status=status, strategy=s, metrics=metrics)


def test_the_sweep_remembers_which_configurations_are_traced():
    a, b = _s(), _s(dtype="float32")
    c = SweepConstants()
    c.learn(_trial(a, 0, "failed", generate_start_alloc_bytes=10))  # a failed trial traces nothing
    c.learn(_trial(b, 0))  # ok, but no trace (allocations not selected, or no generation)
    assert c.for_worker() == {}
    c.learn(_trial(a, 1, generate_start_alloc_bytes=10))
    c.learn(_trial(a, 2, generate_start_alloc_bytes=10))  # the first one stays
    assert c.for_worker() == {"traced": {a.id: f"{a.id}-r1"}}


def test_a_traced_configuration_skips_the_trace_phase(tmp_path):
    s = Strategy(model=ModelSpec(path="/x"), generate=GenerateSpec())
    ctx = ProbeContext(clock=DEFAULT_CLOCK, hooks=HookSet(), phase=None, trial_dir=tmp_path, strategy=s, t0_ns=0,
                       pid=0)
    assert AllocationsProbe().unavailable(ctx) is None
    other = dataclasses.replace(ctx, constants={"traced": {"another": "x-r0"}})
    assert AllocationsProbe().unavailable(other) is None
    traced = dataclasses.replace(ctx, constants={"traced": {s.id: f"{s.id}-r0"}})
    assert f"by trial {s.id}-r0" in AllocationsProbe().unavailable(traced)


def test_studies_take_allocations_from_the_configurations_traced_repeat():
    def cap(c: int) -> Strategy:
        return Strategy(model=ModelSpec(path="/x"), generate=GenerateSpec(max_new_tokens=c))

    trials = []
    for c, traced_bytes in ((16, 100), (32, 200), (64, 400)):
        s = cap(c)
        trials += [_trial(s, 1, generate_start_alloc_bytes=traced_bytes + 1),  # a later repeat (an older file)
                   _trial(s, 0, "failed", generate_start_alloc_bytes=1),
                   _trial(s, 0, ttft_ms=5.0, generate_start_alloc_bytes=traced_bytes),
                   _trial(s, 2, ttft_ms=6.0)]  # skipped the trace
    assert traced_repeats(trials) == {cap(c).id: f"{cap(c).id}-r0" for c in (16, 32, 64)}
    (group,) = series(trials, "generate.max_new_tokens")
    assert [p["metrics"]["generate_start_alloc_bytes"] for p in group["points"]] == [100, 200, 400]
    for p in group["points"]:  # one allocation sample per configuration, every repeat's time
        assert [m.get("generate_start_alloc_bytes") is not None for m in p["samples"]] == [False, True, False]
        assert sorted(m["ttft_ms"] for m in p["samples"] if "ttft_ms" in m) == [5.0, 6.0]


def test_a_resumed_sweep_does_not_trace_again(tmp_path, monkeypatch):
    """No worker: ``run_one`` is faked; what the resumed trials would be told is what the session learned."""
    from loadprof.strategies.expand import expand

    sweep = expand({"model": {"synthetic": {"shape": "tiny"}}, "repeat": 2,
                    "matrix": {"load": {"dtype": ["float32", "bfloat16"]}}})
    told: dict[str, dict] = {}

    def fake(self, trial, env=None):
        told[trial.id] = self.constants.for_worker()
        return _trial(trial.strategy, trial.repeat_index, generate_start_alloc_bytes=8)

    monkeypatch.setattr(Session, "run_one", fake)

    def stop_after_two(result, i, n):
        if i == 2:
            raise KeyboardInterrupt

    Session(sweep, tmp_path / "out", on_trial=stop_after_two).run()  # both r0 (traced), then interrupted
    told.clear()
    Session(sweep, tmp_path / "out", resume=True).run()
    assert sorted(told) == sorted(f"{s.id}-r1" for s in sweep.strategies)
    for tid, constants in told.items():
        assert constants["traced"] == {s.id: f"{s.id}-r0" for s in sweep.strategies}


# ------------------------------------------------------------------------------------ concurrent forks

#: a zygote without torch: pre-import nothing, and each child's trial only sleeps (so two overlap)
LIGHT_ZYGOTE = """
import sys, time
from loadprof.worker import forkserver, trial
forkserver.preimport = lambda model_path: {}
trial.run_spec = lambda spec, rec, emit: time.sleep(spec["sleep_s"])
sys.exit(forkserver.main(sys.argv[1:]))
"""


def _fork_one(z: forkclient.Zygote, trial_dir: Path, out: dict) -> None:
    trial_dir.mkdir()
    r, w = os.pipe()
    with open(trial_dir / "stdout.log", "wb") as so, open(trial_dir / "stderr.log", "wb") as se:
        try:
            child = z.fork({"spec": {"sleep_s": 1.0}, "deadline_s": 60}, w, so.fileno(), se.fileno())
        finally:
            os.close(w)
    with os.fdopen(r, "rb") as f:
        evs = list(events.read_stream(f))
    out[trial_dir.name] = (child.wait(timeout=30), evs)


def test_concurrent_forks_from_one_zygote_both_run(tmp_path):
    z = forkclient.Zygote.start([sys.executable, "-c", LIGHT_ZYGOTE], str(tmp_path), os.environ, None,
                                tmp_path / "zygote.log")
    try:
        out: dict = {}
        threads = [threading.Thread(target=_fork_one, args=(z, tmp_path / f"t{i}", out)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        z.close()
    assert sorted(out) == ["t0", "t1"] and z.forks == 2
    spans = []
    for code, evs in out.values():
        assert code == 0 and [e["type"] for e in evs] == ["hello", "done"]
        spans.append((evs[0]["t0_abs_ns"], evs[0]["t0_abs_ns"] + evs[1]["t_ns"]))
    (s0, e0), (s1, e1) = spans
    assert s0 < e1 and s1 < e0  # they ran side by side, not one after the other
    assert len({e[0]["pid"] for _, e in out.values()}) == 2


@pytest.fixture(autouse=True)
def _no_zygote_left():
    yield
    forkclient.shutdown_all()


# ------------------------------------------------------------------------------------ resident pages


def test_present_runs_are_the_pagemap_runs_of_present_pages():
    from loadprof.worker.resident import PAGE, present_runs

    p = 1 << 63
    assert present_runs([p, p, 0, p, 0, 0, p], 4096 * 10) == [
        (4096 * 10, 2 * PAGE), (4096 * 10 + 3 * PAGE, PAGE), (4096 * 10 + 6 * PAGE, PAGE)]
    assert present_runs([0, 0], 0) == [] and present_runs([], 0) == []


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile")


def test_a_forked_child_maps_the_parents_resident_file_pages():
    """What makes a forked trial's RSS (and its first calls into libraries) those of a fresh process."""
    from loadprof.worker import resident

    runs = resident.resident_file_pages()
    parent = _rss_file_kib()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report RssFile before and after populating, nothing else
        try:
            before = _rss_file_kib()
            resident.populate(runs)
            os.write(w, f"{before} {_rss_file_kib()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        before, after = map(int, f.read().split())
    os.waitpid(pid, 0)
    assert sum(n for _, n in runs) > 0 and before < after
    assert after >= 0.9 * parent  # about what the parent maps (a few pages come and go with Python's own work)
