"""The memory probe's per-phase figures from scripted /proc readings: exact, on a fake clock, no thread."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loadprof.core.clock import FakeClock
from loadprof.core.payloads import MemoryTimeline, PhaseMemory
from loadprof.core.phases import PhaseRecorder
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import ProbeContext
from loadprof.probes.memory import SOURCES_NOTE, MemoryProbe

T0 = 1_000_000


class FakeProc:
    """What /proc says right now: the test sets it between phase edges."""

    def __init__(self, hwm_reset: bool = True) -> None:
        self.status: dict[str, int] = {}
        self.statm: tuple[int, int] | None = None
        self.faults = (0, 0)
        self.resets = 0
        self.hwm_reset = hwm_reset

    def set(self, rss: int, anon: int, file: int, hwm: int, minflt: int, majflt: int) -> None:
        self.status = {"rss": rss, "anon": anon, "file": file, "hwm": hwm}
        self.faults = (minflt, majflt)

    def read_status(self) -> dict[str, int]:
        return dict(self.status)

    def read_statm(self) -> tuple[int, int] | None:
        return self.statm

    def reset_hwm(self) -> bool:
        self.resets += 1
        return self.hwm_reset

    def getrusage(self) -> Any:
        return SimpleNamespace(ru_minflt=self.faults[0], ru_majflt=self.faults[1])


def make(proc: FakeProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampler: bool = False
         ) -> tuple[MemoryProbe, PhaseRecorder, FakeClock]:
    clock = FakeClock(T0)
    probe = MemoryProbe(read_status=proc.read_status, read_statm=proc.read_statm, reset_hwm=proc.reset_hwm,
                        getrusage=proc.getrusage, sampler=sampler)
    monkeypatch.setattr(probe, "_cuda_mod", lambda: None)  # CPU figures only, even where a test initialised CUDA
    ctx = ProbeContext(clock=clock, hooks=HookSet(), phase=lambda name: nullcontext(name), trial_dir=tmp_path,
                       strategy=None, t0_ns=T0, pid=1)
    probe.start(ctx)
    rec = PhaseRecorder(clock, lambda ev: None, T0)
    rec.add_listener(probe.on_phase)
    return probe, rec, clock


def test_per_phase_start_end_peak_and_faults_are_exact(tmp_path, monkeypatch):
    proc = FakeProc()
    probe, rec, clock = make(proc, tmp_path, monkeypatch)
    assert probe._thread is None and proc.resets == 1  # reset once at start

    proc.set(rss=100, anon=60, file=40, hwm=100, minflt=10, majflt=1)
    rec.open("load")
    proc.statm = (300, 120)  # a spike between edges, seen by the sampler only
    assert probe.sample_once()
    clock.advance(0.5)
    proc.set(rss=250, anon=150, file=100, hwm=400, minflt=25, majflt=4)  # VmHWM since the last edge: 400
    rec.open("weights")
    proc.statm = (260, 100)
    assert probe.sample_once()
    proc.set(rss=200, anon=120, file=80, hwm=270, minflt=40, majflt=9)
    rec.close("weights")
    proc.set(rss=180, anon=100, file=80, hwm=210, minflt=50, majflt=9)
    rec.close("load")

    assert probe.per_phase == {k: PhaseMemory(**v) for k, v in {
        "load/weights": {"start_rss_bytes": 250, "start_anon_bytes": 150, "start_file_bytes": 100,
                         "peak_rss_bytes": 270, "peak_sampled_rss_bytes": 260, "peak_anon_bytes": 160,
                         "end_rss_bytes": 200, "end_anon_bytes": 120, "end_file_bytes": 80,
                         "minor_faults": 15, "major_faults": 5},
        "load": {"start_rss_bytes": 100, "start_anon_bytes": 60, "start_file_bytes": 40,
                 "peak_rss_bytes": 400, "peak_sampled_rss_bytes": 300, "peak_anon_bytes": 180,
                 "end_rss_bytes": 180, "end_anon_bytes": 100, "end_file_bytes": 80,
                 "minor_faults": 40, "major_faults": 8},
    }.items()}
    assert proc.resets == 1 + 4  # and once after every edge

    proc.set(rss=170, anon=90, file=80, hwm=220, minflt=50, majflt=9)
    res = probe.stop()
    rows = [[0.0, 180, 120], [0.5, 160, 100]]
    m = res.payload
    assert m.per_phase == probe.per_phase
    assert (m.trial_peak_rss_bytes, m.end_rss_bytes, m.end_anon_bytes, m.end_file_bytes) == (400, 170, 90, 80)
    assert m.samples == 2 and m.period_ms == 10.0 and m.trial_peak_cuda_allocated_bytes is None
    assert m.timeline == MemoryTimeline(columns=("t_s", "rss_anon_bytes", "rss_file_bytes"),
                                        rows=tuple(map(tuple, rows)), every_nth_sample=1)
    assert res.notes == (SOURCES_NOTE,) and res.artifacts == {"memory_timeline": "memory_timeline.json"}
    assert json.loads((tmp_path / "memory_timeline.json").read_text())["rows"] == rows


def test_no_hwm_reset_is_noted_and_not_retried(tmp_path, monkeypatch):
    proc = FakeProc(hwm_reset=False)
    probe, rec, _ = make(proc, tmp_path, monkeypatch)
    proc.set(rss=100, anon=60, file=40, hwm=500, minflt=0, majflt=0)
    with rec.phase("import"):
        pass
    assert proc.resets == 1
    assert probe.per_phase["import"].peak_rss_bytes == 500  # the unreset HWM is all there is
    res = probe.stop()
    assert any("could not reset VmHWM" in n for n in res.notes)
    assert res.payload.trial_peak_rss_bytes == 500


def test_unreadable_statm_stops_sampling_and_the_thread_is_joined(tmp_path, monkeypatch):
    proc = FakeProc()  # statm None: the sampler thread ends at its first reading
    probe, rec, _ = make(proc, tmp_path, monkeypatch, sampler=True)
    assert not probe.sample_once()
    res = probe.stop()
    assert probe._thread is not None and not probe._thread.is_alive()
    assert res.payload.samples == 0 and res.payload.timeline.rows == ()


class FakeCuda:
    """torch.cuda as the probe reads it: two devices, the allocator's bytes per device set by the test."""

    def __init__(self) -> None:
        self.allocated = [0, 0]

    def device_count(self) -> int:
        return 2

    def memory_allocated(self, device: int | None = None) -> int:
        return self.allocated[device or 0]

    def max_memory_allocated(self, device: int | None = None) -> int:
        return sum(self.allocated)

    def memory_reserved(self, device: int | None = None) -> int:
        return sum(self.allocated)

    def reset_peak_memory_stats(self, device: int | None = None) -> None:
        pass


def test_the_timeline_gets_the_cuda_allocators_bytes_once_cuda_is_up(tmp_path, monkeypatch):
    """Once CUDA is initialised each reading also holds the allocator's bytes over every device (the sampler
    thread's current device is not the loader's); readings from before hold 0: nothing was allocated yet."""
    proc = FakeProc()
    probe, rec, clock = make(proc, tmp_path, monkeypatch)
    proc.set(rss=100, anon=60, file=40, hwm=100, minflt=0, majflt=0)
    proc.statm = (100, 40)
    assert probe.sample_once()  # before CUDA
    cuda = FakeCuda()
    cuda.allocated = [100, 300]
    monkeypatch.setattr(probe, "_cuda_mod", lambda: cuda)
    clock.advance(0.5)
    assert probe.sample_once()
    cuda.memory_allocated = lambda device=None: 1 / 0  # a failed reading is 0, never the sampler's end
    assert probe.sample_once()
    m = probe.stop().payload
    assert m.timeline.columns == ("t_s", "rss_anon_bytes", "rss_file_bytes", "cuda_allocated_bytes")
    assert [r[3] for r in m.timeline.rows] == [0, 400, 0]
    assert json.loads((tmp_path / "memory_timeline.json").read_text())["columns"][3] == "cuda_allocated_bytes"
