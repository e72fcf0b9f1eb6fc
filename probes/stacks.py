"""py-spy's stacks as data: per-thread stack timelines from its chrometrace, joined with the kernel's thread
states (loadprof.probes.threadstate) into weighted samples, and written back out as a speedscope profile.

py-spy 0.4.3's chrometrace is a JSON list of B/E events (``ts`` in microseconds since py-spy started,
``tid`` = the thread's pthread id, ``args`` = {filename, line}); with ``--threads`` every stack starts with a
frame named 'thread (<native tid>): <name>'. The stack of a thread at time t is the set of frames open at t.
pthread ids are reused by new threads and a dead thread's last frames stay open until its id is reused, so
durations are never taken from spans: the thread-state poller's readings say when and how long; the
timeline only answers "which stack was native thread N in at time t".
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from loadprof.probes.threadstate import StateRow

_THREAD_FRAME = re.compile(r"^thread \((\d+)\)(?::\s*(.*))?$")
_PROFILE_NAME = re.compile(r'^Thread (\d+)(?: "(.*)")?')


@dataclass(frozen=True)
class Frame:
    function: str  # qualname as py-spy reports it
    file: str
    line: int


@dataclass(frozen=True)
class Sample:
    thread: str  # "MainThread (1234)", "ThreadPoolExecutor-0_1 (1240)", "thread 1241"
    stack: tuple[Frame, ...]  # root first, without py-spy's synthetic thread frame
    weight_s: float
    main: bool = False
    state: str = "running"  # a loadprof.probes.threadstate KIND; "unknown" where no thread state was read
    t_s: float | None = None  # on the trial's clock, where known
    cpu_wait_s: float = 0.0  # of weight_s, runnable but not on a CPU: another process held it (threadstate)


@dataclass
class Timeline:
    """One native thread's stacks over time (seconds since py-spy started), as change points."""

    name: str | None = None
    times: list[float] = field(default_factory=list)
    stacks: list[tuple[Frame, ...]] = field(default_factory=list)

    def at(self, t: float) -> tuple[Frame, ...] | None:
        i = bisect.bisect_right(self.times, t) - 1
        return self.stacks[i] if i >= 0 else None


def parse_chrometrace(events: Sequence[Mapping[str, Any]]) -> dict[int, Timeline]:
    """Chrometrace events -> {native tid: Timeline}; a stack is recorded once per (thread, timestamp)."""
    open_: dict[Any, list[Frame]] = {}
    out: dict[int, Timeline] = {}
    for ev in events:
        ph = ev.get("ph")
        if ph not in ("B", "E"):
            continue
        stack = open_.setdefault(ev.get("tid"), [])
        if ph == "B":
            args = ev.get("args") or {}
            stack.append(Frame(str(ev.get("name", "?")), str(args.get("filename") or ""), int(args.get("line") or 0)))
        elif stack:
            stack.pop()
        m = _THREAD_FRAME.match(stack[0].function) if stack and not stack[0].file else None
        if m is None:
            continue
        tl = out.setdefault(int(m.group(1)), Timeline())
        tl.name = m.group(2) or tl.name
        t = float(ev.get("ts", 0)) / 1e6
        frames = tuple(stack[1:])
        if tl.times and tl.times[-1] == t:
            tl.stacks[-1] = frames
        else:
            tl.times.append(t)
            tl.stacks.append(frames)
    return out


def load_chrometrace(path: Path | str) -> dict[int, Timeline]:
    doc = json.loads(Path(path).read_text())
    return parse_chrometrace(doc.get("traceEvents", []) if isinstance(doc, Mapping) else doc)


def _label(tid: int, name: str | None, main: bool) -> str:
    name = name or ("MainThread" if main else None)
    return f"{name} ({tid})" if name else f"thread {tid}"


def join(timelines: Mapping[int, Timeline], rows: Iterable[StateRow], *, pid: int, spy_t0_ns: int,
         trial_t0_ns: int | None = None) -> tuple[list[Sample], float]:
    """Each thread-state reading becomes a sample: its weight the reading's gap, its state the reading's kind,
    its stack the one py-spy saw that thread in at that moment. Threads py-spy never saw with a Python stack
    (native pools: OpenMP, CUDA) are left out; their seconds are returned so the report can say so. The main
    thread is kept even where py-spy had not attached yet (an empty stack)."""
    out: list[Sample] = []
    native_s = 0.0
    for r in rows:
        tl = timelines.get(r.tid)
        main = r.tid == pid
        if tl is None and not main:
            native_s += r.dt_s
            continue
        stack = tl.at((r.t_ns - spy_t0_ns) / 1e9) if tl is not None else None
        t_s = (r.t_ns - trial_t0_ns) / 1e9 if trial_t0_ns is not None else None
        out.append(Sample(_label(r.tid, tl.name if tl else None, main), stack or (), r.dt_s, main, r.kind, t_s,
                          min(r.dt_s, r.cpu_wait_s)))
    return out, native_s


def from_timelines(timelines: Mapping[int, Timeline], *, pid: int, end_s: float | None = None) -> list[Sample]:
    """Without thread states (no /proc): one sample per stack change point, weighted by the time to the next
    one (the last one up to ``end_s``), state "unknown". Coarser: a dead thread's last stack lingers."""
    out = []
    for tid, tl in timelines.items():
        ends = tl.times[1:] + [end_s if end_s is not None else tl.times[-1]]
        for t, nxt, stack in zip(tl.times, ends, tl.stacks):
            if nxt > t:
                out.append(Sample(_label(tid, tl.name, tid == pid), stack, nxt - t, tid == pid, "unknown"))
    return out


def parse_speedscope(doc: Mapping[str, Any], pid: int | None = None) -> tuple[Sample, ...]:
    """A speedscope JSON of py-spy's shape -> samples (state "running": py-spy records busy stacks by default).
    The main thread is the one named MainThread, else the one whose tid is ``pid``, else the first profile."""
    frames = [Frame(str(f.get("name", "?")), str(f.get("file") or ""), int(f.get("line") or 0))
              for f in doc["shared"]["frames"]]
    threads: list[tuple[str | None, str | None, list[tuple[tuple[Frame, ...], float]]]] = []
    for prof in doc.get("profiles", []):
        m = _PROFILE_NAME.match(str(prof.get("name", "")))
        tid, name = (m.group(1), m.group(2) or None) if m else (None, None)
        rows = []
        for idx, w in zip(prof.get("samples", []), prof.get("weights") or [0.0] * len(prof.get("samples", []))):
            stack = tuple(frames[i] for i in idx)
            while stack and not stack[0].file and (tm := _THREAD_FRAME.match(stack[0].function)):
                tid, name, stack = tid or tm.group(1), name or tm.group(2), stack[1:]
            rows.append((stack, float(w)))
        threads.append((tid, name, rows))
    main_idx = next((i for i, t in enumerate(threads) if t[1] == "MainThread"), None)
    if main_idx is None:
        main_idx = next((i for i, t in enumerate(threads) if pid is not None and t[0] == str(pid)), 0)
    out: list[Sample] = []
    for i, (tid, name, rows) in enumerate(threads):
        name = name or ("MainThread" if i == main_idx and tid else None)
        label = f"{name} ({tid})" if name and tid else (f"thread {tid}" if tid else f"profile {i}")
        out += [Sample(label, stack, w, i == main_idx) for stack, w in rows]
    return tuple(out)


def to_speedscope(samples: Iterable[Sample], name: str = "loadprof") -> dict[str, Any]:
    """Samples -> a speedscope document (one sampled profile per thread, weights in seconds). A waiting sample
    ends in a frame '[waiting: <kind>]', so the flame graph shows where the time was spent waiting too."""
    frames: list[dict[str, Any]] = []
    index: dict[tuple[str, str, int], int] = {}

    def idx(fn: str, file: str, line: int) -> int:
        key = (fn, file, line)
        if key not in index:
            index[key] = len(frames)
            frames.append({"name": fn, "file": file, "line": line})
        return index[key]

    by_thread: dict[str, list[Sample]] = {}
    for s in samples:
        by_thread.setdefault(s.thread, []).append(s)
    profiles = []
    for thread, ss in by_thread.items():
        stacks = [[idx(f.function, f.file, f.line) for f in s.stack]
                  + ([idx(f"[waiting: {s.state}]", "", 0)] if s.state not in ("running", "unknown") else [])
                  for s in ss]
        weights = [s.weight_s for s in ss]
        profiles.append({"type": "sampled", "name": thread, "unit": "seconds", "startValue": 0,
                         "endValue": sum(weights), "samples": stacks, "weights": weights})
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "name": name,
            "shared": {"frames": frames}, "profiles": profiles, "exporter": "loadprof"}
