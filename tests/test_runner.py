"""Runner: status classification (pure) and real isolated trials that die in every way."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadprof.analysis.derive import enrich
from loadprof.core.payloads import (AllocationsPayload, BandwidthPayload, IOPayload, LoadPhasesPayload, MachinePayload,
                                    MemoryPayload)
from loadprof.probes.base import ParentContext, ParentProbe
from loadprof.run.runner import TrialPlan, classify, run_trial, start_parent_probes, stop_parent_probes
from loadprof.strategies.model import GenerateSpec, LoaderSpec, LoadSpec, ModelSpec, Strategy, Trial

from .conftest import EXAMPLES


def _plan(tmp_path: Path, **kw) -> TrialPlan:
    s = Strategy(model=ModelSpec(path="/nonexistent"), **kw)
    return TrialPlan(Trial(s), "/nonexistent", tmp_path)


def _ev(type_, **kw):
    return {"v": 2, "type": type_, **kw}


def _classify(tmp_path, evs, rc, timed_out=False, **kw):
    return classify(_plan(tmp_path, **kw), evs, rc, timed_out, "t", parent_wall_ns=5_000_000_000, spawn_ns=0)


def test_ok_needs_done_and_exit_zero(tmp_path):
    evs = [_ev("hello", t_ns=0, t0_abs_ns=20_000_000), _ev("phase", name="load", edge="start", t_ns=0),
           _ev("phase", name="load", edge="end", t_ns=10**9), _ev("done", t_ns=2 * 10**9)]
    r = _classify(tmp_path, evs, 0)
    assert r.status == "ok" and r.wall_s == 2.0 and r.phase("load").duration_s == 1.0
    assert r.metrics == {}  # classify computes no figure: derive.enrich does
    assert r.harness["startup_s"] == pytest.approx(0.02) and r.harness["overhead_s"] == pytest.approx(3.0)
    assert _classify(tmp_path, evs[:-1], 0).status == "crashed"  # exit 0 but never said done


def test_signal_death_names_signal_and_open_phase(tmp_path):
    evs = [_ev("phase", name="load", edge="start", t_ns=0), _ev("phase", name="load/weights", edge="start", t_ns=5)]
    r = _classify(tmp_path, evs, -11)
    assert r.status == "crashed" and r.signal == "SIGSEGV"
    assert "SIGSEGV" in r.reason and "load/weights" in r.reason
    assert r.phase("load").incomplete
    r = _classify(tmp_path, evs, -9)
    assert "OOM killer" in r.reason


def test_error_skip_timeout_and_bare_exit(tmp_path):
    r = _classify(tmp_path, [_ev("error", kind="ValueError", message="bad", traceback="tb"), _ev("done", t_ns=1)], 1)
    assert (r.status, r.reason) == ("failed", "ValueError: bad")
    r = _classify(tmp_path, [_ev("skip", reason="needs CUDA"), _ev("done", t_ns=1)], 0)
    assert (r.status, r.reason) == ("skipped", "needs CUDA")
    r = _classify(tmp_path, [], -15, timed_out=True, timeout_s=7)
    assert r.status == "timeout" and "timeout_s=7" in r.reason
    r = _classify(tmp_path, [], 3)
    assert r.status == "crashed" and "code 3" in r.reason
    r = _classify(tmp_path, [_ev("error", kind="MemoryError", message="", traceback="")], 1, memory_limit="1GiB")
    assert r.status == "failed" and "memory_limit=1GiB" in r.reason
    torch_oom = _ev("error", kind="RuntimeError", traceback="",
                    message="[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                            "to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")
    r = _classify(tmp_path, [torch_oom], 1, memory_limit="1GiB")
    assert r.reason.startswith("out of memory under memory_limit=1GiB: RuntimeError: [enforce fail")
    r = _classify(tmp_path, [_ev("error", kind="OutOfMemoryError", message="CUDA out of memory.", traceback="")], 1)
    assert r.reason.startswith("out of memory: OutOfMemoryError")


def test_a_forged_event_fails_that_trial_with_what_was_wrong(tmp_path):
    evs = [_ev("hello", t_ns=0), _ev("phase", name="load", edge="start", t_ns=1), _ev("done", t_ns="soon")]
    r = _classify(tmp_path, evs, 0)
    assert r.status == "failed"
    assert r.reason == "malformed event from the worker: done.t_ns must be a 64-bit integer, not 'soon'"
    forged = [{"type": "malformed", "what": "x"}, 7, _ev("note", text=["a"]), _ev("done", t_ns=3)]
    r = _classify(tmp_path, forged, 0)
    assert r.status == "failed" and r.reason.endswith("(and 2 more)") and len(r.notes) == 2


def test_surrogates_from_the_worker_are_escaped(tmp_path):
    r = _classify(tmp_path, [_ev("error", kind="ValueError", message="bad \udcff", traceback="tb \udcff"),
                             _ev("done", t_ns=1)], 1)
    assert r.reason == "ValueError: bad \\udcff" and r.notes[-1] == "tb \\udcff"


@pytest.mark.e2e
def test_real_trial_phases_cover_the_wall(tiny_model, tmp_path):
    s = Strategy(model=ModelSpec(path=str(tiny_model)), load=LoadSpec(validation="full"),
                 generate=GenerateSpec(prompt_tokens=8, max_new_tokens=6, warmup=1))
    r = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path))
    assert r.status == "ok", r.reason + r.stderr_tail if r.reason else r.stderr_tail
    names = [p.name for p in r.phases]
    assert names == ["import", "load", "validate", "warmup", "generate", "trace", "membw", "estimate", "cleanup"]
    starts = [p.start_s for p in r.phases]
    assert starts == sorted(starts) and all(p.duration_s >= 0 for p in r.phases)
    for a, b in zip(r.phases, r.phases[1:]):
        assert a.end_s <= b.start_s  # top-level phases never overlap
    covered = sum(p.duration_s for p in r.phases)
    assert covered <= r.wall_s and covered >= r.wall_s - max(0.05 * r.wall_s, 0.03)
    load = r.phase("load")
    assert {"config", "weights", "post_init"} <= {c.name for c in load.children}
    gen = r.phase("generate")
    assert [c.name for c in gen.children] == ["prepare", "prefill", "decode", "finish"]
    assert r.metrics["new_tokens"] == 6 and r.metrics["ttft_ms"] > 0 and r.metrics["decode_tok_s"] > 0
    assert r.metrics["validation_modules_checked"] > 0
    assert r.metrics["membw_gb_s"] > 0 and r.metrics["generate_start_alloc_count"] >= 0  # tracer ran (tiny: nothing >= 4 KiB)
    assert r.phase("generate/prefill/preallocate") is not None  # the cache is created inside prefill
    enriched = enrich(r)  # the figures executors add: phase totals, the workload's peak
    assert enriched.metrics["load_s"] == r.phase("load").duration_s
    assert enriched.metrics["peak_rss_bytes"] >= r.metrics["weights_bytes"]
    memory, io = r.payload(MemoryPayload), r.payload(IOPayload)  # the worker's payloads, read typed
    assert memory.per_phase["load"].peak_rss_bytes <= memory.trial_peak_rss_bytes
    assert io.per_phase["load"].read_chars >= 0 and r.payload(LoadPhasesPayload).from_pretrained_calls
    machine = r.payload(MachinePayload)  # the parent-side probe, run for every trial
    assert machine.wall_s > 0 and machine.worker_cpu_s > 0
    assert r.payload(AllocationsPayload).generate_start_alloc_min_bytes > 0
    assert r.payload(BandwidthPayload).membw_gb_s > 0
    assert r.harness["overhead_s"] >= 0 and r.harness["startup_s"] > 0
    assert (tmp_path / "stderr.log").exists() and (tmp_path / "memory_timeline.json").exists()


@pytest.mark.e2e
def test_stop_after_forces_early_stop(tiny_model, tmp_path):
    s = Strategy(model=ModelSpec(path=str(tiny_model)), probes=(),
                 generate=GenerateSpec(prompt_tokens=8, max_new_tokens=64, stop_after=3, warmup=0))
    r = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path))
    assert r.status == "ok" and r.metrics["new_tokens"] == 3


@pytest.mark.e2e
def test_corrupt_shard_is_a_failed_trial_with_reason(tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    shard = sorted(broken.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    s = Strategy(model=ModelSpec(path=str(broken)), generate=None)
    r = run_trial(TrialPlan(Trial(s), str(broken), tmp_path / "t"))
    assert r.status == "failed" and r.reason
    missing = tmp_path / "missing"
    shutil.copytree(tiny_model, missing)
    shard = sorted(missing.glob("*.safetensors"))[-1]
    shard.unlink()
    r = run_trial(TrialPlan(Trial(Strategy(model=ModelSpec(path=str(missing)), generate=None)), str(missing),
                            tmp_path / "t2"))
    assert r.status == "failed" and shard.name in r.reason


@pytest.mark.e2e
def test_cuda_strategy_is_skipped_without_a_gpu(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path does not apply")
    s = Strategy(model=ModelSpec(path=str(tiny_model)), load=LoadSpec(device_map="cuda"))
    r = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path))
    assert r.status == "skipped" and "CUDA" in r.reason


def fault_strategy(tiny_model: Path, label: str, target: str | None, **kw) -> Strategy:
    loader = LoaderSpec(target=f"faulty_loaders:{target}", sys_path=(str(EXAMPLES),), **kw.pop("loader", {})) if target else None
    return Strategy(model=ModelSpec(path=str(tiny_model)), label=label, load=LoadSpec(loader=loader),
                    generate=GenerateSpec(prompt_tokens=4, max_new_tokens=2, warmup=0), **kw)


@pytest.mark.e2e
def test_cuda_snapshot_probe_is_skipped_with_reason_without_cuda(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the snapshot is taken instead (checked on GPU machines)")
    s = Strategy(model=ModelSpec(path=str(tiny_model)), generate=None, probes=("memory", "cuda_snapshot"))
    r = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path))
    assert r.status == "ok"
    assert "probe cuda_snapshot not run: CUDA is not available on this machine" in r.notes
    assert not (tmp_path / "cuda_snapshot.pickle").exists()


def test_probe_payloads_are_read_typed_and_one_that_does_not_read_is_a_note(tmp_path):
    io = {"storage_read_bytes": 10, "read_chars": 20, "per_phase": {}, "most_bytes_read_in": None}
    evs = [_ev("probe", name="io", payload=io, notes=["io note"], artifacts={"x": "x.json"}),
           _ev("probe", name="memory", payload={"samples": "many"}, notes=[], artifacts={}), _ev("done", t_ns=1)]
    r = _classify(tmp_path, evs, 0)
    assert r.status == "ok" and r.payload(IOPayload) == IOPayload.from_dict(io) and set(r.probes) == {"io"}
    assert "io note" in r.notes and r.artifacts["x"] == "x.json"
    (bad,) = [n for n in r.notes if n.startswith("probe 'memory' filed a payload loadprof cannot read")]
    assert "MemoryPayload lacks 'per_phase'" in bad  # strict: nothing filled in for it


def test_parent_probes_start_in_registry_order_and_file_payloads_read_as_a_worker_probes(tmp_path, monkeypatch):
    """The machine probe runs for every trial; sampling only when asked. What they file is a probe event."""
    s = Strategy(model=ModelSpec(path="/x"), sampling_hz=0)
    received: list = []
    started: list = []
    start_parent_probes(ParentContext(os.getpid(), tmp_path, s), received, started)
    assert [p.NAME for p in started] == ["machine"] and received == []
    stop_parent_probes(started, received)
    assert [(ev["type"], ev["name"]) for ev in received] == [("probe", "machine")]
    m = _classify(tmp_path, [*received, _ev("done", t_ns=1)], 0).payload(MachinePayload)
    assert m.cpu_count >= 1 and m.wall_s >= 0 and all(v is None or v >= 0 for v in m.to_dict().values())


class _Broken(ParentProbe):
    NAME = "machine"
    where = "start"  # where it fails

    def start(self, ctx: ParentContext) -> None:
        if self.where == "start":
            raise OSError("no /proc")

    def stop(self, received):
        raise RuntimeError("lost")


def test_a_parent_probe_that_fails_is_a_note_not_the_trials_fate(tmp_path, monkeypatch):
    import loadprof.run.runner as runner

    entries = [SimpleNamespace(name=f"p{i}", load=lambda w=where: type("Broken", (_Broken,), {"where": w}))
               for i, where in enumerate(("start", "stop"))]
    monkeypatch.setattr(runner, "parent_probes", lambda: entries)
    received, started = [], []
    start_parent_probes(ParentContext(os.getpid(), tmp_path, Strategy(model=ModelSpec(path="/x"))), received, started)
    stop_parent_probes(started, received)
    r = _classify(tmp_path, [*received, _ev("done", t_ns=1)], 0)
    assert r.status == "ok" and r.notes == ("probe p0 not run: OSError: no /proc",
                                            "probe machine failed to stop: RuntimeError: lost")
