"""The io probe's per-phase storage and read() bytes from scripted /proc/self/io readings."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from loadprof.core.clock import FakeClock
from loadprof.core.payloads import IOPayload, PhaseIO
from loadprof.core.phases import PhaseRecorder
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import ProbeContext
from loadprof.probes.io import IOProbe


class FakeIO:
    def __init__(self) -> None:
        self.now: dict[str, int] = {}

    def set(self, rchar: int, read_bytes: int) -> None:
        self.now = {"rchar": rchar, "read_bytes": read_bytes}

    def __call__(self) -> dict[str, int]:
        return dict(self.now)


def _ctx(tmp_path: Path, clock: FakeClock) -> ProbeContext:
    return ProbeContext(clock=clock, hooks=HookSet(), phase=lambda name: nullcontext(name), trial_dir=tmp_path,
                        strategy=None, t0_ns=0, pid=1)


def test_storage_bytes_per_phase_and_where_most_were_read(tmp_path):
    io, clock = FakeIO(), FakeClock()
    probe = IOProbe(read_io=io)
    rec = PhaseRecorder(clock, lambda ev: None, 0)
    io.set(rchar=1_000, read_bytes=4_096)
    assert probe.unavailable(_ctx(tmp_path, clock)) is None
    probe.start(_ctx(tmp_path, clock))
    rec.add_listener(probe.on_phase)

    rec.open("import")
    io.set(rchar=1_500, read_bytes=4_096)  # import: read() from the page cache, nothing from storage
    rec.close("import")
    rec.open("load")
    io.set(rchar=1_600, read_bytes=8_192)
    rec.open("weights")
    io.set(rchar=2_600, read_bytes=8_192 + 1_048_576)
    rec.close("weights")
    io.set(rchar=2_700, read_bytes=8_192 + 1_048_576 + 4_096)
    rec.close("load")
    rec.open("generate")
    io.set(rchar=2_750, read_bytes=8_192 + 1_048_576 + 4_096 + 65_536)  # mmap'd pages faulted in
    rec.close("generate")
    io.set(rchar=3_000, read_bytes=2_000_000)

    res = probe.stop()
    assert res.payload == IOPayload(storage_read_bytes=2_000_000 - 4_096, read_chars=2_000, per_phase={
        "import": PhaseIO(storage_read_bytes=0, read_chars=500),
        "load/weights": PhaseIO(storage_read_bytes=1_048_576, read_chars=1_000),
        "load": PhaseIO(storage_read_bytes=4_096 + 1_048_576 + 4_096, read_chars=1_200),
        "generate": PhaseIO(storage_read_bytes=65_536, read_chars=50),
    }, most_bytes_read_in="load")  # top-level phases only


def test_nothing_read_names_no_phase_and_unreadable_proc_is_a_reason(tmp_path):
    io, clock = FakeIO(), FakeClock()
    assert IOProbe(read_io=io).unavailable(_ctx(tmp_path, clock)) == "/proc/self/io is not readable on this system"
    io.set(rchar=10, read_bytes=0)
    probe = IOProbe(read_io=io)
    probe.start(_ctx(tmp_path, clock))
    probe.on_phase("load", "start", 0)
    probe.on_phase("load", "end", 5)
    probe.on_phase("never-started", "end", 6)  # an end without a start is ignored
    res = probe.stop()
    assert res.payload == IOPayload(storage_read_bytes=0, read_chars=0, most_bytes_read_in=None,
                                    per_phase={"load": PhaseIO(storage_read_bytes=0, read_chars=0)})
