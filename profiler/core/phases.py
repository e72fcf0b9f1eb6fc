"""Phases: named intervals on the trial's one monotonic clock.

Worker side, ``PhaseRecorder`` opens nested phases and emits start/end events
with a '/'-joined path. Runner side, ``build_tree`` turns those events back
into ``PhaseTiming`` trees; a phase left open by a crash is closed at the last
timestamp seen and flagged ``incomplete``. Time that no child covers is
reported as ``other`` (see ``PhaseTiming.other_s``), never hidden.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from loadprof.core import events
from loadprof.core.clock import Clock

@dataclass(frozen=True)
class PhaseTiming:
    """A named interval [start_s, end_s] relative to the trial's t0; children nest inside."""

    name: str
    start_s: float
    end_s: float
    children: tuple["PhaseTiming", ...] = ()
    incomplete: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def other_s(self) -> float:
        """Time inside this phase that no child covers (0 for a leaf: it has nothing to explain)."""
        if not self.children:
            return 0.0
        return max(0.0, self.duration_s - sum(c.duration_s for c in self.children))

    def find(self, path: str) -> "PhaseTiming | None":
        head, _, rest = path.partition("/")
        if head != self.name:
            return None
        if not rest:
            return self
        for c in self.children:
            hit = c.find(rest)
            if hit is not None:
                return hit
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "start_s": self.start_s, "end_s": self.end_s,
                             "duration_s": self.duration_s}
        if self.children:
            d["other_s"] = self.other_s
            d["children"] = [c.to_dict() for c in self.children]
        if self.incomplete:
            d["incomplete"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseTiming":
        return cls(
            name=d["name"], start_s=d["start_s"], end_s=d["end_s"],
            children=tuple(cls.from_dict(c) for c in d.get("children", ())),
            incomplete=bool(d.get("incomplete", False)),
        )


def find_phase(phases: Iterable[PhaseTiming], path: str) -> PhaseTiming | None:
    for p in phases:
        hit = p.find(path)
        if hit is not None:
            return hit
    return None


PhaseListener = Callable[[str, str, int], None]

#: top-level phases that are loadprof's own work after the workload (the traced generate call, the bandwidth
#: copy, a loading method's logits check against from_pretrained, the estimate): shown on the trial's clock, but
#: never part of the workload's peak memory
HARNESS_PHASES = ("trace", "membw", "check", "estimate")
#: the child phase each outermost import the workload itself triggers becomes (``load/lazy_import``: the
#: modeling module a first from_pretrained imports, a tokenizer's, the loader's own), apart from loadprof's
#: own top-level ``import`` phase
LAZY_IMPORT_PHASE = "lazy_import"


def cuda_sync() -> None:
    """Wait for queued GPU work, so a phase edge is stamped when the work is done, not when it was queued.

    A no-op until the workload has initialised CUDA (torch is never imported here), and while a CUDA graph is
    being captured (synchronising would break the capture).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    cuda = torch.cuda
    if cuda.is_initialized() and not cuda.is_current_stream_capturing():
        cuda.synchronize()


class PhaseRecorder:
    def __init__(self, clock: Clock, emit: Callable[[dict[str, Any]], None], t0_ns: int) -> None:
        self.clock = clock
        self._emit = emit
        self.t0_ns = t0_ns
        self._stack: list[str] = []
        self._listeners: list[PhaseListener] = []

    def add_listener(self, fn: PhaseListener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: PhaseListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    @property
    def current(self) -> str:
        return "/".join(self._stack)

    def _edge(self, path: str, edge: str, t_ns: int | None = None) -> int:
        if t_ns is None:
            cuda_sync()
        t = self.clock.now_ns() if t_ns is None else t_ns
        self._emit(events.make("phase", name=path, edge=edge, t_ns=t - self.t0_ns))
        for fn in list(self._listeners):
            fn(path, edge, t)
        return t

    def open(self, name: str, t_ns: int | None = None) -> str:
        """Start ``name`` under the current phase, at ``t_ns`` (absolute) or now."""
        if "/" in name:
            raise ValueError("phase names may not contain '/'")
        self._stack.append(name)
        path = self.current
        self._edge(path, "start", t_ns)
        return path

    def close(self, name: str, t_ns: int | None = None) -> None:
        """End the innermost phase, which must be ``name``; ``t_ns`` lets a boundary seen late be placed exactly."""
        if not self._stack or self._stack[-1] != name:
            raise RuntimeError(f"closing phase {name!r} but the open one is {self.current!r}")
        self._edge(self.current, "end", t_ns)
        self._stack.pop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[str]:
        """Open ``name`` under the current phase; re-entering the same name (recursion) is not nested again."""
        if self._stack and self._stack[-1] == name:
            yield self.current
            return
        path = self.open(name)
        try:
            yield path
        finally:
            self.close(name)


def build_tree(phase_events: Iterable[dict[str, Any]], end_ns: int | None = None) -> tuple[PhaseTiming, ...]:
    """Phase events (t_ns relative to the trial's t0) -> top-level PhaseTiming tuple in start order."""
    open_: dict[str, tuple[int, list]] = {}
    last = 0
    roots: list[PhaseTiming] = []
    child_lists: dict[str, list[PhaseTiming]] = {}
    for ev in phase_events:
        path, edge, t = ev["name"], ev["edge"], int(ev["t_ns"])
        last = max(last, t)
        if edge == "start":
            open_[path] = (t, [])
            child_lists[path] = []
        elif edge == "end" and path in open_:
            start, _ = open_.pop(path)
            node = PhaseTiming(
                name=path.rsplit("/", 1)[-1],
                start_s=start / 1e9,
                end_s=t / 1e9,
                children=_ordered(child_lists.pop(path, [])),
            )
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            (roots if parent == "" else child_lists.setdefault(parent, [])).append(node)
    # close what a crash left open, deepest first
    stop = last if end_ns is None else max(last, end_ns)
    for path in sorted(open_, key=lambda p: -p.count("/")):
        start, _ = open_[path]
        node = PhaseTiming(
            name=path.rsplit("/", 1)[-1],
            start_s=start / 1e9,
            end_s=stop / 1e9,
            children=_ordered(child_lists.pop(path, [])),
            incomplete=True,
        )
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        (roots if parent == "" else child_lists.setdefault(parent, [])).append(node)
    return tuple(sorted(roots, key=lambda p: p.start_s))


def _ordered(nodes: list[PhaseTiming]) -> tuple[PhaseTiming, ...]:
    return tuple(sorted(nodes, key=lambda p: p.start_s))
