"""Where the checkpoint's bytes were really read, and how long threads waited for them.

transformers 5 memory-maps safetensors: with no dtype conversion a "load"
only creates views, and the bytes are read from storage by page faults at
the first forward. Per phase this probe records:
- ``storage_read_bytes``: /proc/self/io ``read_bytes`` (bytes fetched from
  the block layer by any thread of the worker, page-fault reads included);
- ``read_chars``: ``rchar`` (read()-style calls, served from cache or not).
Read only at phase edges: no background thread, so it costs nothing between
edges. Time *blocked* on reads is not measured here: per-thread I/O wait needs
kernel delay accounting, which is off by default, and loadprof does not change
system settings; a sampled thread-state estimate missed most mmap reads in
tests and cost CPU on small machines, so it was dropped. The read time shows as
the phase time of the reading phases and, inside ``materialize``, as the worker
threads' ``read`` busy time. RssFile growth and page faults per phase come
from the memory probe.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from loadprof.core.payloads import IOPayload, PhaseIO
from loadprof.probes.base import Probe, ProbeContext, ProbeResult


def read_io() -> dict[str, int]:
    """read_bytes and rchar of this process (empty where /proc/self/io is not readable); runs at every edge."""
    try:
        with open("/proc/self/io", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for key, name in ((b"rchar: ", "rchar"), (b"\nread_bytes: ", "read_bytes")):
        i = data.find(key)
        if i >= 0:
            j = data.find(b"\n", i + len(key))
            out[name] = int(data[i + len(key): j if j >= 0 else None])
    return out


class IOProbe(Probe):
    """The reader is an argument (``read_io`` by default) so a test can script what /proc/self/io says."""

    NAME = "io"
    PAYLOAD = IOPayload

    def __init__(self, read_io: Callable[[], dict[str, int]] = read_io) -> None:
        self._read_io = read_io

    def unavailable(self, ctx: ProbeContext) -> str | None:
        return None if self._read_io() else "/proc/self/io is not readable on this system"

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self.open: dict[str, dict[str, Any]] = {}
        self.per_phase: dict[str, PhaseIO] = {}
        self.start_io = self._read_io()

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        io = self._read_io()
        with self._lock:
            if edge == "start":
                self.open[phase] = {"_rb": io.get("read_bytes", 0), "_rc": io.get("rchar", 0)}
            elif phase in self.open:
                rec = self.open.pop(phase)
                self.per_phase[phase] = PhaseIO(storage_read_bytes=io.get("read_bytes", 0) - rec["_rb"],
                                                read_chars=io.get("rchar", 0) - rec["_rc"])

    def stop(self) -> ProbeResult:
        end = self._read_io()
        total = end.get("read_bytes", 0) - self.start_io.get("read_bytes", 0)
        top = {p: r for p, r in self.per_phase.items() if "/" not in p}
        where = max(top, key=lambda p: top[p].storage_read_bytes) if total and top else None
        return ProbeResult(IOPayload(storage_read_bytes=total, read_chars=end.get("rchar", 0) - self.start_io.get("rchar", 0),
                                     per_phase=dict(self.per_phase), most_bytes_read_in=where))
