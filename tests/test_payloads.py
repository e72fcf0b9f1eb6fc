"""Each probe's one payload: what the probe really emits (driven with fake clocks and fake /proc readers) goes
through JSON the way the events pipe carries it and reads back equal, typed, by the type the registry names;
reading is strict (wrong types and missing fields are errors, nothing reads as 0) and keeps unknown keys."""

from __future__ import annotations

import io
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from loadprof.core import events
from loadprof.core.clock import FakeClock
from loadprof.core.payloads import (AllocationsPayload, BandwidthPayload, IOPayload, MemoryPayload, Payload,
                                    PayloadError, PhaseIO, SamplingPayload, UserFunction)
from loadprof.core.phases import PhaseRecorder
from loadprof.core.probe_registry import REGISTRY, entry
from loadprof.probes import allocations, bandwidth, load_phases
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import ParentContext, ProbeContext, ProbeResult
from loadprof.probes.cuda_snapshot import CudaSnapshotProbe
from loadprof.probes.imports import ImportsProbe
from loadprof.probes.io import IOProbe
from loadprof.probes.machine import MachineProbe
from loadprof.probes.memory import MemoryProbe
from loadprof.probes.sampling import SamplingProbe, SamplingResult
from loadprof.probes.stacks import Frame, Sample
from loadprof.results.model import TrialResult
from loadprof.worker import trial as worker
from tests.helpers import strategy_of


def _ctx(tmp_path: Path, clock: FakeClock, hooks: HookSet | None = None, **kw: Any) -> ProbeContext:
    return ProbeContext(clock=clock, hooks=hooks or HookSet(), phase=lambda name: nullcontext(name),
                        trial_dir=tmp_path, strategy=kw.pop("strategy", None), t0_ns=0, pid=1, **kw)


def through_the_pipe(name: str, result: ProbeResult) -> ProbeResult:
    """The probe event as the worker writes it, decoded and read back as the runner reads it."""
    (ev,) = events.read_stream(io.BytesIO(events.encode(result.event(name))))
    back = ProbeResult.from_event(ev)
    assert type(back.payload) is entry(name).payload and back.payload.extra == {}
    return back


def through_metrics(name: str, payload: Payload, file: Callable[[Callable[[str, Any], None]], None]) -> Payload:
    """A metrics-filed payload as the worker files it (one metric event per key), read from the trial's metrics."""
    sent: list[dict[str, Any]] = []
    file(lambda k, v: sent.append(events.make("metric", key=k, value=v)))
    metrics = {ev["key"]: ev["value"] for ev in events.read_stream(io.BytesIO(b"".join(events.encode(ev) for ev in sent)))}
    trial = TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok",
                        strategy=strategy_of(), metrics=metrics)
    back = trial.payload(entry(name).payload)
    assert back == payload and back.extra == {}
    return back


# --------------------------------------------------------------------------------------- worker probes

def memory_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, status = FakeClock(0), {"rss": 100, "anon": 60, "file": 40, "hwm": 100}
    cuda = SimpleNamespace(max_memory_allocated=lambda: 70, memory_allocated=lambda: 50,
                           memory_reserved=lambda: 64, reset_peak_memory_stats=lambda: None)
    probe = MemoryProbe(read_status=lambda: dict(status), read_statm=lambda: (300, 120), reset_hwm=lambda: True,
                        getrusage=lambda: SimpleNamespace(ru_minflt=10, ru_majflt=1), sampler=False)
    monkeypatch.setattr(probe, "_cuda_mod", lambda: cuda)  # a GPU trial: every optional CUDA figure is filled
    monkeypatch.setattr(probe, "_nvml_used", lambda: 4096)
    probe.start(_ctx(tmp_path, clock))
    rec = PhaseRecorder(clock, lambda ev: None, 0)
    rec.add_listener(probe.on_phase)
    with rec.phase("load"):
        clock.advance(0.25)
        assert probe.sample_once()
        status.update(rss=250, hwm=400)
    res = probe.stop()
    assert res.payload.per_phase["load"].end_nvml_used_bytes == 4096 and res.payload.trial_peak_cuda_allocated_bytes
    assert through_the_pipe("memory", res) == res


def io_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = {"rchar": 10, "read_bytes": 0}
    probe = IOProbe(read_io=lambda: dict(now))
    probe.start(_ctx(tmp_path, FakeClock()))
    probe.on_phase("load", "start", 0)
    now.update(rchar=500, read_bytes=4096)
    probe.on_phase("load", "end", 1)
    res = probe.stop()
    assert res.payload.most_bytes_read_in == "load"
    assert through_the_pipe("io", res) == res


def imports_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    rec = PhaseRecorder(clock, lambda e: None, 0)
    name = f"lazy_rt_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = ImportsProbe()
    hooks = HookSet()
    probe.start(ProbeContext(clock=clock, hooks=hooks, phase=rec.phase, trial_dir=tmp_path, strategy=None, t0_ns=0,
                             pid=1))
    try:
        probe.on_phase("load", "start", 0)
        with rec.phase("load"):
            __import__(name)
        probe.on_phase("load", "end", 1)
        res = probe.stop()
    finally:
        hooks.undo()
        sys.modules.pop(name, None)
    assert res.payload.count == 1 and res.payload.imports[0].module == name
    assert through_the_pipe("imports", res) == res


class _RecordingHooks(HookSet):
    """Installs nothing: keeps each wrapper so the test calls it around its own stand-in functions."""

    def __init__(self) -> None:
        super().__init__()
        self.wrappers: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {}

    def wrap(self, target: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
        self.wrappers[target] = make_wrapper
        self.installed.append(target)
        return True


class _Tensor:
    def __getitem__(self, key: Any) -> "_Tensor":
        return self

    def to(self, device: Any = None, dtype: Any = None) -> "_Tensor":
        return self


def phases_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_phases, "_copy_source_matches", lambda: True)
    monkeypatch.setattr(load_phases, "discarded_kwargs", lambda: {"low_cpu_mem_usage": "modeling_utils.py:4"})
    clock, hooks = FakeClock(0), _RecordingHooks()
    probe = load_phases.LoadPhasesProbe()
    probe.start(_ctx(tmp_path, clock, hooks))
    step = lambda *a, **k: clock.advance(0.5)  # noqa: E731 - every wrapped call takes half a second
    hooks.wrappers[load_phases.FROM_PRETRAINED](lambda cls, *a, **k: None)(
        type("Qwen2ForCausalLM", (), {}), tmp_path / "ckpt", dtype="bfloat16", low_cpu_mem_usage=True,
        device_map={"": "cpu"})
    hooks.wrappers[load_phases.LOAD_TARGETS[0][1]](step)()
    hooks.wrappers[load_phases.MAIN_ACCUMULATORS[0][1]](step)()
    hooks.wrappers[load_phases.MATERIALIZE_COPY](step)(_Tensor(), device="cpu", dtype="bfloat16")
    res = probe.stop()
    p = res.payload
    assert p.hook_calls == {"config": 1} and p.ignored_kwargs == {"low_cpu_mem_usage": "modeling_utils.py:4"}
    assert p.materialize_main_thread_s == {"collect": 0.5} and p.materialize_tensors == 1
    assert p.from_pretrained_calls[0].kwargs == {"dtype": "bfloat16", "low_cpu_mem_usage": True,
                                                 "device_map": {"": "cpu"}}
    assert p.from_pretrained_calls[0].source == str(tmp_path / "ckpt")  # what it loaded from, a PathLike too
    assert through_the_pipe("phases", res) == res


def cuda_snapshot_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = SimpleNamespace(_record_memory_history=lambda **k: None,
                             _dump_snapshot=lambda path: Path(path).write_bytes(b"snapshot"))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=SimpleNamespace(memory=memory)))
    probe = CudaSnapshotProbe()
    probe.start(_ctx(tmp_path, FakeClock()))
    res = probe.stop()
    assert res.artifacts == {"cuda_snapshot": "cuda_snapshot.pickle"}
    assert through_the_pipe("cuda_snapshot", res) == res


def allocations_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allocs = [allocations.Allocation("zeros", (1, 64), "float32", 8192, "cache_utils.py:9 init", ["a", "b"],
                                     alive=True),
              allocations.Allocation("mm", (4, 4), "bfloat16", 4096, "model.py:3 forward", ["c"], alive=False)]
    monkeypatch.setattr(allocations, "trace_generate_start", lambda model, spec: allocations.summarize(allocs))
    probe = allocations.AllocationsProbe()
    ctx = _ctx(tmp_path, FakeClock(), strategy=SimpleNamespace(generate=None))
    payload = probe.after_workload("model", ctx)
    assert payload.generate_start_alloc_bytes == 8192 and payload.generate_start_alloc_sites[0].shape == (1, 64)
    rec = PhaseRecorder(FakeClock(), lambda ev: None, 0)
    through_metrics("allocations", payload, lambda metric: worker.run_after_workload(
        "model", [(probe, ctx)], rec, metric, lambda note: None))


class _Param:
    dtype = "torch.bfloat16"

    def is_floating_point(self) -> bool:
        return True

    def numel(self) -> int:
        return 10

    def element_size(self) -> int:
        return 2


def bandwidth_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = {"membw_gb_s": 20.5, "membw_bytes": 1024, "membw_repeats": 5, "membw_device": "cpu", "membw_method": "m"}
    monkeypatch.setattr(bandwidth, "measure_copy_bandwidth", lambda dev, now: dict(copy))
    monkeypatch.setattr(bandwidth, "measure_h2d_bandwidth", lambda dev, now: {
        "h2d_bytes": 1024, "h2d_repeats": 5, "h2d_device": "cuda:0", "h2d_method": "m", "h2d_pageable_gb_s": 6.0,
        "h2d_pinned_gb_s": 12.0})
    monkeypatch.setattr(bandwidth, "measure_matmul", lambda dtype, now: {
        "matmul_gflops": {"float32": 8.5, dtype: 28}, "matmul_method": "torch.mm"})
    model = SimpleNamespace(device="cpu", parameters=lambda: [_Param()])
    probe, ctx = bandwidth.BandwidthProbe(), _ctx(tmp_path, FakeClock())
    measured = probe.after_workload(model, ctx)
    assert measured.membw_scope == bandwidth.device_scope("cpu") and measured.matmul_gflops["bfloat16"] == 28.0
    rec = PhaseRecorder(FakeClock(), lambda ev: None, 0)
    through_metrics("bandwidth", measured, lambda metric: worker.run_after_workload(
        model, [(probe, ctx)], rec, metric, lambda note: None))
    known = {"trial": "t0", "figures": {**copy, "membw_scope": measured.membw_scope}}
    reused = probe.after_workload(model, _ctx(tmp_path, FakeClock(), constants={
        "bandwidth": {measured.membw_scope: known}}))
    assert reused.membw_source == "trial t0"
    assert BandwidthPayload.from_metrics(json.loads(json.dumps(reused.to_dict()))) == reused


# --------------------------------------------------------------------------------------- parent probes

def machine_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 50 900 0 0 0 4 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n")
    clock = iter([0, 2 * 10**9])
    probe = MachineProbe(str(tmp_path), now_ns=clock.__next__, loadavg=lambda: 0.5, own_cpu=lambda: (0.1, 0.2),
                         clk_tck=100)
    probe.start(ParentContext(1, tmp_path, None))
    (tmp_path / "stat").write_text("cpu  250 0 100 1000 0 0 0 8 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n")
    res = probe.stop([])
    assert res.payload.steal_s == 0.04 and res.payload.others_cpu_s == 2.0  # own CPU did not move
    assert through_the_pipe("machine", res) == res


def sampling_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user, lib = Frame("load_model", "/home/u/loader.py", 12), Frame("open", "/venv/lib/python3.11/site-packages/safetensors/torch.py", 3)
    samples = tuple(Sample("MainThread (7)", (user, lib), 0.25, True, state, t)
                    for state, t in (("running", 1.25), ("sleep", 1.5), ("running", 2.5)))
    finished = SamplingResult(ok=True, profile_path="/x/p.json", log_path="/x/l.log", wall_s=3.0, samples=samples)
    probe = SamplingProbe()
    probe.sampler = SimpleNamespace(finish=lambda t0: finished, rate_hz=100)
    received = [{"type": "hello", "t_ns": 0, "t0_abs_ns": 5}, {"type": "phase", "name": "load", "edge": "start",
                                                               "t_ns": 10**9},
                {"type": "phase", "name": "load", "edge": "end", "t_ns": 3 * 10**9}]
    res = probe.stop(received)
    (u,) = res.payload.user_functions
    assert (u.name, u.phase, u.running_s, u.waits) == ("load_model", "load", 0.5, {"sleep": 0.25})
    assert through_the_pipe("sampling", res) == res
    probe.error = "py-spy not found"  # not sampled: ok False and nothing else claimed
    off = through_the_pipe("sampling", probe.stop(received))
    assert off.payload == SamplingPayload(ok=False) and off.notes == ("sampling not run: py-spy not found",)


ROUND_TRIPS = {"memory": memory_round_trip, "io": io_round_trip, "phases": phases_round_trip,
               "cuda_snapshot": cuda_snapshot_round_trip, "allocations": allocations_round_trip,
               "bandwidth": bandwidth_round_trip, "machine": machine_round_trip, "sampling": sampling_round_trip,
               "imports": imports_round_trip}


def test_every_registry_entry_has_its_payload_type_and_a_round_trip():
    for e in REGISTRY:
        assert issubclass(e.payload, Payload) and e.payload.PROBE == e.name, e
        assert e.load().PAYLOAD is e.payload, e  # the class emits the type the parent reads by
    assert set(ROUND_TRIPS) == {e.name for e in REGISTRY}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_what_the_probe_emits_reads_back_equal(name, tmp_path, monkeypatch):
    ROUND_TRIPS[name](tmp_path, monkeypatch)


# ------------------------------------------------------------------------------------------ strictness

IO = {"storage_read_bytes": 4096, "read_chars": 8192, "per_phase": {"load": {"storage_read_bytes": 4096,
                                                                             "read_chars": 8000}}}


def test_reading_is_strict_about_types_and_required_fields():
    for bad, where in (({**IO, "read_chars": "8192"}, "io.read_chars: expected int, got str"),
                       ({**IO, "read_chars": True}, "io.read_chars: expected int, got bool"),
                       ({**IO, "per_phase": {"load": {"storage_read_bytes": 1.5, "read_chars": 1}}},
                        "io.per_phase.load.storage_read_bytes: expected int"),
                       ({k: v for k, v in IO.items() if k != "read_chars"}, "io: IOPayload lacks 'read_chars'"),
                       ({**IO, "most_bytes_read_in": 3}, "io.most_bytes_read_in: int 3 is none of str | NoneType"),
                       ([], "io: expected an object, got list")):
        with pytest.raises(PayloadError, match=where.replace("|", r"\|")):
            IOPayload.from_dict(bad, "io")


def test_missing_optional_data_reads_as_none_and_unknown_keys_are_kept():
    p = IOPayload.from_dict({**IO, "future_key": [1, 2]}, "io")
    assert p.most_bytes_read_in is None and p.extra == {"future_key": [1, 2]}
    assert p.per_phase["load"] == PhaseIO(storage_read_bytes=4096, read_chars=8000)
    assert p.to_dict() == {**IO, "most_bytes_read_in": None, "future_key": [1, 2]}  # written back, not dropped
    u = UserFunction.from_dict({"name": "f", "file": "f.py", "line": None, "phase": "load", "samples": 2,
                                "seconds": 1, "own_s": 0.5, "running_s": 1.0})
    assert u.seconds == 1.0 and isinstance(u.seconds, float) and u.waiting_s is None and u.main_wait is None


def test_a_trial_reads_payloads_given_as_dicts_and_keeps_unknown_probes_as_filed():
    t = TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok", strategy=strategy_of(),
                    probes={"io": IO, "newer_probe": {"x": 1}})
    assert t.payload(IOPayload) == IOPayload.from_dict(IO) and t.probes["newer_probe"] == {"x": 1}
    assert t.payload(MemoryPayload) is None and t.payload(AllocationsPayload) is None
    with pytest.raises(PayloadError):
        TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok", strategy=strategy_of(),
                    probes={"io": {**IO, "read_chars": None}})
