"""Where the checkpoint's bytes were really read, and how long threads waited for them.

transformers 5 memory-maps safetensors: with no dtype conversion a "load"
only creates views, and the bytes are read from storage by page faults at
the first forward. Per phase this probe records:
- ``storage_read_bytes``: /proc/self/io ``read_bytes`` (bytes fetched from
  the block layer by any thread of the worker, page-fault reads included);
- ``read_chars``: ``rchar`` (read()-style calls, served from cache or not);
- ``io_wait_s``: thread-seconds spent in uninterruptible sleep (state ``D``,
  almost always waiting on storage), sampled every ``period_s`` over all the
  worker's threads: a statistical measure (resolution = period), which needs
  no kernel setting (delay accounting is off by default and loadprof does
  not change system settings).
RssFile growth and page faults per phase come from the memory probe.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from probes.base import Probe, ProbeContext, ProbeResult


def read_io() -> dict[str, int]:
    try:
        with open("/proc/self/io", "rb") as f:
            pairs = (line.split(b":") for line in f.read().splitlines() if b":" in line)
            return {k.decode(): int(v) for k, v in pairs}
    except OSError:
        return {}


def threads_in_d_state() -> int:
    """How many of this process's threads are in uninterruptible sleep right now."""
    n = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended between listdir and open
        if stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3] == b"D":
            n += 1
    return n


class IOProbe(Probe):
    NAME = "io"

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s

    def unavailable(self, ctx: ProbeContext) -> str | None:
        return None if read_io() else "/proc/self/io is not readable on this system"

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self.open: dict[str, dict[str, Any]] = {}
        self.per_phase: dict[str, dict[str, Any]] = {}
        self.wait_samples = 0
        self.samples = 0
        self.start_io = read_io()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="loadprof-io", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            d = threads_in_d_state()
            with self._lock:
                self.samples += 1
                self.wait_samples += d
                for rec in self.open.values():
                    rec["_wait"] += d

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        io = read_io()
        with self._lock:
            if edge == "start":
                self.open[phase] = {"_rb": io.get("read_bytes", 0), "_rc": io.get("rchar", 0), "_wait": 0}
            elif phase in self.open:
                rec = self.open.pop(phase)
                self.per_phase[phase] = {
                    "storage_read_bytes": io.get("read_bytes", 0) - rec["_rb"],
                    "read_chars": io.get("rchar", 0) - rec["_rc"],
                    "io_wait_s": rec["_wait"] * self.period_s,
                }

    def stop(self) -> ProbeResult:
        self._stop.set()
        self._thread.join(timeout=1.0)
        end = read_io()
        total = end.get("read_bytes", 0) - self.start_io.get("read_bytes", 0)
        metrics = {"storage_read_bytes": total, "read_chars": end.get("rchar", 0) - self.start_io.get("rchar", 0),
                   "io_wait_s": self.wait_samples * self.period_s, "io_wait_period_ms": self.period_s * 1e3,
                   "io_wait_samples": self.samples}
        top = {p: r for p, r in self.per_phase.items() if "/" not in p}
        if total and top:
            where = max(top, key=lambda p: top[p]["storage_read_bytes"])
            metrics["most_bytes_read_in"] = where
        notes = ("io_wait_s is sampled thread-seconds in state D (every "
                 f"{self.period_s * 1e3:g} ms, all threads): a statistical estimate, not a trace",)
        return ProbeResult(self.NAME, metrics=metrics, per_phase=self.per_phase, notes=notes)
