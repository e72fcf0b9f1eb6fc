"""One probe registry: the worker builds from it, the spec validates against it, the YAML reference lists it, the
sampler attributes by the worker steps it names, and the after-workload probes run in order in their phases."""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadprof.worker import trial as worker
from loadprof.core.clock import FakeClock
from loadprof.core.errors import SpecError
from loadprof.core.phases import HARNESS_PHASES, PhaseRecorder
from loadprof.core.payloads import BandwidthPayload, Payload
from loadprof.core.probe_registry import (REGISTRY, SELECTABLE, WORKER_STEP_PHASES, entry, parent_probes,
                                          worker_probes)
from loadprof.probes import attribution, sampling
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import ParentProbe, Probe, ProbeContext
from loadprof.strategies.model import PROBES, ModelSpec, Strategy

YAML_REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "yaml.md"


def test_every_entry_names_its_class_and_its_result():
    assert len({e.name for e in REGISTRY}) == len(REGISTRY)
    for e in REGISTRY:
        cls = e.load()
        assert e.runs_in in ("worker", "parent") and e.description and "|" not in e.description
        assert issubclass(cls, Probe if e.runs_in == "worker" else ParentProbe) and cls.NAME == e.name, e
    assert [e.name for e in parent_probes()] == ["machine", "sampling"]  # stopped in reverse: py-spy reaped first
    assert sampling.SamplingProbe.wanted(Strategy(model=ModelSpec(path="/x"), sampling_hz=10))
    assert not sampling.SamplingProbe.wanted(Strategy(model=ModelSpec(path="/x"), sampling_hz=0))
    with pytest.raises(KeyError):
        entry("nope")


def test_yaml_probes_are_the_selectable_entries_with_todays_message_and_ids():
    assert PROBES == SELECTABLE == ("phases", "memory", "io", "allocations", "cuda_snapshot")
    s = Strategy(model=ModelSpec(path="/x"))
    assert s.probes == ("phases", "memory", "io", "allocations")  # the default: unchanged, so ids are too
    assert s.id == "ba5998fb32cb"
    assert Strategy(model=ModelSpec(path="/x"), probes=("memory", "cuda_snapshot"), generate=None).id == "816054312035"
    for name in ("bandwidth", "sampling"):  # in the registry, not selectable
        with pytest.raises(SpecError) as err:
            Strategy(model=ModelSpec(path="/x"), probes=("memory", name))
        assert err.value.path == "probes"
        assert str(err.value).endswith(f"unknown probe {name!r}; allowed: phases, memory, io, allocations, "
                                       "cuda_snapshot")


def test_worker_builds_the_selected_probes_then_the_always_on_ones():
    names = lambda es: [e.name for e in es]  # noqa: E731
    always = ["bandwidth", "imports"]
    assert names(worker_probes(["io", "memory", "io", "allocations"])) == ["io", "memory", "allocations", *always]
    assert names(worker_probes([])) == always
    assert names(worker_probes(["sampling", "bandwidth", "unknown"])) == always  # never by name
    assert [p.NAME for p in worker.build_probes(("memory", "cuda_snapshot"))] == ["memory", "cuda_snapshot", *always]


def test_after_workload_probes_run_in_loadprofs_own_phases():
    after = [(e.name, e.load().AFTER_WORKLOAD_PHASE) for e in REGISTRY if e.runs_in == "worker"]
    assert [(n, ph) for n, ph in after if ph] == [("allocations", "trace"), ("bandwidth", "membw")]
    assert all(ph in HARNESS_PHASES for _, ph in after if ph)  # never counted in the workload's peak memory
    for name in ("allocations", "bandwidth"):  # their figures are trial metrics only
        assert entry(name).load()().stop() is None and entry(name).payload.FILED == "metrics"


@dataclass(frozen=True)
class _Membw(Payload):
    membw_gb_s: float


@dataclass(frozen=True)
class _Alloc(Payload):
    generate_start_alloc_bytes: int


class _Fake(Probe):
    def __init__(self, name: str, phase: str | None, out: Payload | Exception, log: list[str]) -> None:
        self.NAME, self.AFTER_WORKLOAD_PHASE, self.out, self.log = name, phase, out, log  # type: ignore[misc]

    def after_workload(self, model: Any, ctx: ProbeContext) -> Payload:
        self.log.append(f"{self.NAME}:{model}:{ctx.t0_ns}")
        if isinstance(self.out, Exception):
            raise self.out
        return self.out


def test_run_after_workload_orders_by_registry_files_metrics_and_notes_failures(tmp_path):
    clock, events, log, metrics, notes = FakeClock(), [], [], {}, []
    rec = PhaseRecorder(clock, events.append, 0)
    ctx = ProbeContext(clock=clock, hooks=HookSet(), phase=lambda n: nullcontext(n), trial_dir=tmp_path,
                       strategy=None, t0_ns=7, pid=1)
    probes = [(_Fake("bandwidth", "membw", _Membw(2.0), log), ctx),
              (_Fake("memory", None, _Membw(1.0), log), ctx),
              (_Fake("allocations", "trace", _Alloc(5), log), ctx)]
    worker.run_after_workload("m", probes, rec, metrics.__setitem__, notes.append)
    assert log == ["allocations:m:7", "bandwidth:m:7"]
    assert [(e["name"], e["edge"]) for e in events] == [("trace", "start"), ("trace", "end"), ("membw", "start"),
                                                         ("membw", "end")]
    assert metrics == {"generate_start_alloc_bytes": 5, "membw_gb_s": 2.0} and notes == []

    events.clear()
    failing = [(_Fake("allocations", "trace", RuntimeError("out of memory"), log), ctx), probes[0]]
    worker.run_after_workload("m", failing, rec, metrics.__setitem__, notes.append)
    assert notes == ["probe allocations failed in phase trace: RuntimeError: out of memory"]
    assert [e["name"] for e in events] == ["trace", "trace", "membw", "membw"]  # the phase closed; membw still ran


def test_bandwidth_probe_measures_the_models_device_or_cpu_for_meta(monkeypatch, tmp_path):
    from loadprof.probes import bandwidth

    seen: list[Any] = []
    copy = {"membw_gb_s": 1.0, "membw_bytes": 8, "membw_repeats": 1, "membw_device": "cpu", "membw_method": "m"}
    monkeypatch.setattr(bandwidth, "measure_copy_bandwidth", lambda dev, now: seen.append(dev) or copy)
    monkeypatch.setattr(bandwidth, "measure_h2d_bandwidth", lambda dev, now: {"h2d_pinned_gb_s": 3.0})
    ctx = ProbeContext(clock=FakeClock(), hooks=HookSet(), phase=lambda n: nullcontext(n), trial_dir=tmp_path,
                       strategy=None, t0_ns=0, pid=1)
    probe = bandwidth.BandwidthProbe()
    assert probe.after_workload(type("M", (), {"device": "meta"})(), ctx) == BandwidthPayload(
        **copy, h2d_pinned_gb_s=3.0, membw_scope=bandwidth.device_scope("cpu"))  # whose figure it is
    probe.after_workload(object(), ctx)
    assert seen == ["cpu", "cpu"]


def test_worker_step_phases_are_the_workers_functions_and_the_samplers_map():
    for name, phase in WORKER_STEP_PHASES:
        fn = getattr(worker, name)
        assert callable(fn) and worker.phase_of(fn) == phase
    assert attribution.DEFAULT_PHASE_MAP[:len(WORKER_STEP_PHASES)] == WORKER_STEP_PHASES
    with pytest.raises(KeyError):
        worker.phase_of(worker.step_estimate)  # not a sampled step


def test_yaml_reference_probe_table_and_default_match_the_registry():
    text = YAML_REFERENCE.read_text()
    header = "| probe | in `probes:` | runs in | what it measures |"
    lines = text[text.index(header):].splitlines()[2:]
    rows = [tuple(c.strip() for c in ln.strip("|").split("|")) for ln in lines[:next(
        (i for i, ln in enumerate(lines) if not ln.startswith("|")), len(lines))]]
    assert rows == [(f"`{e.name}`", "yes" if e.selectable else "no", e.runs_in, e.description) for e in REGISTRY]
    default = re.search(r"`probes: \[([^\]]*)\]`", text)
    assert default and tuple(default.group(1).split(", ")) == Strategy(model=ModelSpec(path="/x")).probes
