"""What the phase charts draw, as plain data: per trial, named segments of seconds with a tooltip each.

The load chart names what the time went to: transformers' loading steps (the phase tree), then the load time
no step covers split by what the sampler saw there (your functions by their own time, then library areas),
then ``warmup/forward``, where memory-mapped weights are really read (with the bytes it read). Segments under
``SMALL_SHARE`` of every trial's bar fold into one ``other (n phases < 1%)``. Reads the result model only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from loadprof.core import figures
from loadprof.core.payloads import IOPayload, MemoryPayload, SamplingPayload
from loadprof.core.phases import HARNESS_PHASES
from loadprof.reports.sections import children_s
from loadprof.results.model import TrialResult
from loadprof.core.units import bytes_h

#: loadprof's own steps after the workload: shaded in memory timelines, never part of the workload's peak
LOADPROF_PHASES = (*HARNESS_PHASES, "cleanup")
SMALL_SHARE = 0.01
UNEXPLAINED = "other: not sampled"
FORWARD = "warmup/forward (weights read)"
#: the largest trial bar over the smallest beyond which the chart adds a panel of shares
DWARF_RATIO = 20.0
MiB = 2**20


@dataclass(frozen=True)
class Segment:
    name: str
    seconds: float
    tip: str = ""


def forward_read_bytes(t: TrialResult) -> int | None:
    """Bytes ``warmup/forward`` read: storage bytes (io probe) or, when larger, file-backed RSS it paged in."""
    io_payload, mem_payload = t.payload(IOPayload), t.payload(MemoryPayload)
    io = io_payload.per_phase.get("warmup/forward") if io_payload is not None else None
    mem = mem_payload.per_phase.get("warmup/forward") if mem_payload is not None else None
    vals = [v for v in (io and io.storage_read_bytes, mem and mem.file_growth_bytes) if isinstance(v, int)]
    return max(vals) if vals and max(vals) > 0 else None


def _split_other(t: TrialResult, other_s: float) -> list[Segment]:
    """The load's uncovered time as your functions (own time) and library areas the samples saw there."""
    sv = t.payload(SamplingPayload) or SamplingPayload(ok=False)
    parts: list[Segment] = []
    for u in sorted(sv.user_functions_in("load"), key=lambda u: -u.own_s):
        if u.own_s > 0:
            where = f"{u.file.rsplit('/', 1)[-1]}:{u.hottest_line or u.line}" if u.file != "?" else ""
            wait = f"; waiting {u.waiting_s:.2f} s ({u.main_wait})" if u.waiting_s and u.main_wait else ""
            parts.append(Segment(f"your code: {u.name}", u.own_s,
                                 f"your function {u.name} ({where}): {u.own_s:.2f} s of its own in the load{wait}"))
    for area, s in sorted(((sv.areas or {}).get("load") or {}).items(), key=lambda kv: -kv[1]):
        if area != "your code" and s > 0:
            parts.append(Segment(f"load: {area}", s, f"sampled in the load outside transformers' steps: {area}"))
    named = sum(p.seconds for p in parts)
    if named > other_s > 0:  # sampled seconds are counts x interval: never let them outgrow the gap they explain
        parts = [Segment(p.name, p.seconds * other_s / named, p.tip) for p in parts]
        named = other_s
    rest = other_s - named
    if rest > 0:
        parts.append(Segment(UNEXPLAINED, rest, "load time no transformers step covers and no sample explained"))
    return parts


def load_segments(t: TrialResult) -> list[Segment] | None:
    """The load's steps, its uncovered time by what the samples saw, and ``warmup/forward``; None without a load."""
    parts = children_s(t, "load")
    if parts is None:
        return None
    segs = [Segment(n, s, f"transformers step load/{n}") for n, s in parts if n != "other"]
    segs += _split_other(t, dict(parts).get("other", 0.0))
    fwd = sum(c.duration_s for p in t.phases if p.name == "warmup" for c in p.children if c.name == "forward")
    if fwd > 0:
        read = forward_read_bytes(t)
        segs.append(Segment(FORWARD, fwd, "the first forward pass: memory-mapped weights are read when first touched"
                            + (f"; it read {bytes_h(read)}" if read else "")))
    return segs


def generate_segments(t: TrialResult) -> list[Segment] | None:
    parts = children_s(t, "generate")
    if parts is None:
        return None
    return [Segment(n, s, f"generate/{n}, summed over the measured calls" if n != "other" else
                    "generate time no child phase covers") for n, s in parts]


def fold_small(rows: Sequence[tuple[str, list[Segment]]], share: float = SMALL_SHARE
               ) -> tuple[list[tuple[str, list[Segment]]], list[str]]:
    """Fold the segments under ``share`` of their trial's bar in every trial into one ``other (n phases < 1%)``;
    returns the rows and the legend order (largest first, the folded bucket last)."""
    big: dict[str, float] = {}
    for _, segs in rows:
        total = sum(s.seconds for s in segs) or 1.0
        for s in segs:
            if s.seconds >= share * total:
                big[s.name] = max(big.get(s.name, 0.0), s.seconds)
    names = [n for _, segs in rows for n in (s.name for s in segs)]
    small = [n for n in dict.fromkeys(names) if n not in big]
    folded = f"other ({len(small)} phase{'s' if len(small) != 1 else ''} < {share:.0%})"
    out = []
    for label, segs in rows:
        keep = [s for s in segs if s.name in big]
        rest = [s for s in segs if s.name not in big]
        if rest:
            tip = ", ".join(f"{s.name} {s.seconds * 1e3:.1f} ms" for s in rest if s.seconds > 0) or "all zero"
            keep.append(Segment(folded, sum(s.seconds for s in rest), tip))
        out.append((label, keep))
    order = list(dict.fromkeys(n for n in names if n in big))
    return out, order + ([folded] if small else [])


def dwarfed(totals: Sequence[float]) -> bool:
    """Whether one bar dwarfs another: largest / smallest > DWARF_RATIO."""
    pos = [x for x in totals if x > 0]
    return len(pos) > 1 and max(pos) / min(pos) > DWARF_RATIO


def harness_spans(t: TrialResult) -> list[tuple[float, float, str]]:
    """(start, end, name) of loadprof's own top-level phases in the trial, in order."""
    return [(p.start_s, p.end_s, p.name) for p in sorted(t.phases, key=lambda p: p.start_s)
            if p.name in LOADPROF_PHASES]


def workload_peak_bytes(t: TrialResult, rows: Sequence[Sequence[float]]) -> float | None:
    """The workload's peak RSS (exact VmHWM figure when recorded; else the timeline outside loadprof's phases)."""
    exact = figures.PEAK_RSS_BYTES.read(t.metrics)
    if isinstance(exact, (int, float)) and exact > 0:
        return float(exact)
    spans = harness_spans(t)
    vals = [r[1] + r[2] for r in rows if not any(a <= r[0] <= b for a, b, _ in spans)]
    return max(vals) if vals else None
