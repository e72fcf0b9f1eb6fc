"""What an untried model, dtype or placement will cost on this machine: the calibrated terms applied to its bytes.

Why: every ingredient of a prediction is already measured (storage and page-cache rates, memory bandwidth, the
matmul rate, per-step overhead); ``loadprof.analysis.calibrate`` fits them as named terms, and the bytes come from
the one byte model (``loadprof.analysis.estimate``, shared with ``loadprof estimate``). A prediction is the sum of
its terms at the target's drivers, each figure with an interval and the terms it came from:

- load cost (warm, cold) = import + setup(tensors) + weights(loaded bytes) + first_forward(loaded bytes), the terms
  of the group (device, page cache, converts); cold without cold trials: warm + checkpoint bytes / the measured
  sequential read rate;
- peak memory = memory(loaded + converted checkpoint + KV bytes); per device under a device map: ``place``;
- TTFT = prefill(2 x params x batch x prompt); decode tok/s = batch / decode(weights + KV bytes per step)
  (+ offloaded bytes / the host link or disk each step).

Intervals: the relative half-width is the widest of the terms' (``Line.half_width``: 2 x the RMS relative
residual of the fit, the repeats' own spread, at least 3%; 50% for a term fitted on one size or taken from the
machine's bounds), widened by ``EXTRAPOLATION`` per doubling beyond the largest calibrated size; for the load
cost, also 2 x the RMS relative residual of the summed terms against the calibration trials' own load cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from loadprof.analysis.calibrate import (UNFITTED_REL, Calibration, Line, group_of, prefill_flops, resident_bytes,
                                         step_bytes)
from loadprof.analysis.estimate import DTYPE_BYTES, SizeEstimate
from loadprof.analysis.placement import Placement, place
from loadprof.core import figures

#: interval widening per doubling of the driver beyond the largest calibrated one (a slope is only known where it
#: was measured; 10% per doubling is what the held-back validation showed it needs, see docs/guides/predict.md)
EXTRAPOLATION = 0.10
#: the base RSS when no trial measured it and the caller gave none: the interpreter with torch and transformers
DEFAULT_BASE_BYTES = 400 * 2**20


@dataclass(frozen=True)
class Target:
    """What to predict: the byte model's estimate, where it is placed and how it is stored."""

    estimate: SizeEstimate
    device_map: str = "cpu"      # cpu, auto, cuda, cuda:N
    stored_bytes: int = 0        # the checkpoint's tensors as stored (0: as loaded)
    device: str = "cpu"          # where the compute runs: cpu or cuda
    checkpoint_dtype: str | None = None  # the dtype most stored bytes are in (None: unknown, judged by the bytes)

    @property
    def dtype(self) -> str:
        e = self.estimate
        return e.quantization if e.quantization != "none" else e.dtype

    @property
    def loaded_bytes(self) -> int:
        return self.estimate.weight_bytes + self.estimate.buffers_bytes

    @property
    def converts(self) -> bool:
        """The load converts the checkpoint's dtype, as ``calibrate.Observation.converts`` judges a trial: by the
        dtypes; with the stored dtype unknown, by the bytes, beyond the buffers a checkpoint does not store
        (a rotary table is loaded, never stored: 512 B apart is no conversion)."""
        if self.checkpoint_dtype is not None:
            return self.checkpoint_dtype != self.dtype
        return bool(self.stored_bytes) and abs(self.stored_bytes - self.loaded_bytes) > self.estimate.buffers_bytes


@dataclass(frozen=True)
class TermValue:
    """One term's share of a figure and what it came from (``basis``: the fitted line or the machine's bound)."""

    name: str
    value: float
    basis: str


@dataclass(frozen=True)
class Predicted:
    """One predicted figure (a catalogue figure, under ``condition``: warm/cold, or a device), its interval and
    the terms that sum to it."""

    figure: figures.Figure
    condition: str
    value: float
    lo: float
    hi: float
    terms: tuple[TermValue, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    target: Target
    figures: tuple[Predicted, ...]
    placement: Placement
    notes: tuple[str, ...] = ()


def _basis(line: Line) -> str:
    timed = line.driver.endswith("bytes") and not line.name.startswith("memory") and line.per_unit
    rate = f"; {1e-9 / line.per_unit:.3g} GB/s" if timed else ""
    return (f"{line.name}: {line.fixed:.4g} + {line.per_unit:.4g} x {line.driver}{rate} ({line.source}, "
            f"+-{line.half_width:.0%})")


def _extrapolated(line: Line, x: float) -> float:
    """The extra relative width for using ``line`` at ``x`` beyond the largest (or below the smallest) driver it was
    fitted on: EXTRAPOLATION per doubling."""
    if line.x_max > 0 and x > line.x_max:
        return EXTRAPOLATION * math.log2(x / line.x_max)
    return EXTRAPOLATION * math.log2(line.x_min / x) if 0 < x < line.x_min else 0.0


def lookup(cal: Calibration, name: str, group: tuple[Any, ...]) -> tuple[Line | None, str]:
    """The term fitted for ``group``, else the nearest group on the same device (a difference in a later key costs
    less: conversion before page cache), marked as borrowed with a wider interval; (None, "") if none."""
    line = cal.line(name, group)
    if line is not None and line.n >= 2:
        return line, ""
    near = _nearest(cal, name, group, fitted=line is not None)
    if line is not None:  # one size only: the nearest group's line (fitted on two sizes), scaled through its point
        if near is None:
            return line, ""
        other = cal.lines[(name, near)]
        k = line.at(line.x_max) / other.at(line.x_max) if other.at(line.x_max) > 0 else 1.0
        return replace(line, fixed=other.fixed * k, per_unit=other.per_unit * k,
                       source=f"{line.source}, shaped like {near} (x {k:.3g})"), ""
    if near is None:
        return None, ""
    borrowed = cal.lines[(name, near)]
    note = f"{name}: no calibration trial in {group}; borrowed from {near}"
    return replace(borrowed, spread=max(borrowed.spread, UNFITTED_REL), source=borrowed.source + ", borrowed"), note


def _nearest(cal: Calibration, name: str, group: tuple[Any, ...], fitted: bool) -> tuple[Any, ...] | None:
    """The nearest other group of term ``name`` on the same device (``fitted``: only one fitted on two sizes)."""
    best = None
    for g in cal.groups(name):
        if g == group or len(g) != len(group) or (group and g[0] != group[0]):
            continue
        if fitted and cal.lines[(name, g)].n < 2:
            continue
        diff = sum(len(group) - i for i, (a, b) in enumerate(zip(g, group)) if a != b)
        if best is None or diff < best[0]:
            best = (diff, g)
    return best[1] if best else None


def _why(line: Line, x: float) -> str:
    """Why ``line``'s interval at ``x`` is as wide as it is: its largest source of width, in words."""
    ext = _extrapolated(line, x)
    if line.n < 2 or line.source.startswith("machine") or "borrowed" in line.source:
        return f"{line.name} is not fitted on two sizes here ({line.source})"
    if ext >= max(line.spread, line.rel_rms) * BAND_TERM:
        far = x / line.x_max if x > line.x_max else line.x_min / x
        return f"{line.name} is extrapolated {far:.3g}x beyond the calibrated sizes"
    if line.spread >= line.rel_rms:
        return f"{line.name}'s repeats spread +-{line.spread:.0%} (one run's own noise on this machine)"
    return f"{line.name}'s line misses its own calibration sizes by {line.rel_rms:.0%} (RMS)"


#: a term's residual and spread are standard deviations: BAND of them is its ~95% half-width (calibrate.BAND)
BAND_TERM = 2.0
#: an interval wider than this either way (x 1.5) is said to be wide, and why, in the figure's notes
WIDE = 0.5


@dataclass(frozen=True)
class Summed:
    """A figure as the sum of terms: its value, relative half-width and the term that sets most of the width."""

    value: float
    width: float
    terms: list[TermValue]
    why: str


def _sum(parts: Sequence[tuple[Line, float]], extra: Sequence[TermValue] = ()) -> Summed:
    """The terms at their drivers (plus already valued ones), summed; their absolute half-widths (each term's
    ``half_width`` + extrapolation) add in quadrature: independent errors of a sum, so a small noisy term does not
    make a large certain figure noisy."""
    terms = [TermValue(line.name, line.at(x), _basis(line)) for line, x in parts] + list(extra)
    value = sum(t.value for t in terms)
    spans = [(line.at(x) * (line.half_width + _extrapolated(line, x)), _why(line, x)) for line, x in parts]
    if not spans or value <= 0:
        return Summed(value, UNFITTED_REL, terms, "no fitted term")
    width = math.sqrt(sum(a * a for a, _ in spans)) / value
    return Summed(value, width, terms, max(spans)[1])


def _interval(fig: figures.Figure, condition: str, s: Summed, notes: Sequence[str] = (), floor: float = 0.0,
              floor_why: str = "") -> Predicted:
    """value / (1 + w) .. value x (1 + w): errors of a time, a rate or a size are relative, so the interval is
    symmetric in ratio and never reaches 0; the low end no lower than the physical ``floor`` (what the bytes
    alone take); a wide one says so and why."""
    lo, hi = s.value / (1 + s.width), s.value * (1 + s.width)
    notes = list(notes)
    if floor > lo:
        lo = min(floor, s.value)
        notes.append(f"low end: {floor_why}")
    if s.width > WIDE:
        notes.append(f"{fig.label}: wide interval (x{1 + s.width:.2g} either way): {s.why}")
    return Predicted(fig, condition, s.value, lo, hi, tuple(s.terms), tuple(n for n in notes if n))


def load_cost(cal: Calibration, t: Target, cache: str) -> Predicted | None:
    """The real load cost under a warm or cold page cache (seconds), or None with no load trial to go on."""
    group = (t.device, cache, t.converts)
    if cache == "cold" and not any(g[:2] == group[:2] for g in cal.groups("weights")):
        return _cold_from_warm(cal, t)
    imp = cal.line("import", ())
    setup, n1 = lookup(cal, "setup", (t.device,))
    weights, n2 = lookup(cal, "weights", group)
    first, n3 = lookup(cal, "first_forward", group)
    if imp is None or setup is None or weights is None or first is None:
        return None
    parts = [(imp, 1.0), (setup, t.estimate.tensor_count), (weights, t.loaded_bytes), (first, t.loaded_bytes)]
    s = _sum(parts)
    total = BAND_TOTAL * total_residual(cal, group)
    if total > s.width:
        s = replace(s, width=total, why="the summed terms miss the calibration trials' own load cost by "
                    f"{total / BAND_TOTAL:.0%} (RMS)")
    disk = cal.machine.disk_read_gb_s
    floor = (t.stored_bytes or t.loaded_bytes) / (disk * 1e9) if cache == "cold" and disk else 0.0
    return _interval(figures.LOAD_COST_S, cache, s, (n1, n2, n3), floor,
                     f"the checkpoint at the measured sequential read rate ({disk or 0:.3g} GB/s)")


LOAD_COST = figures.LOAD_COST_S.key
#: the load cost's summed terms: this many RMS relative residuals against the calibration trials' own load cost
BAND_TOTAL = 2.0


def total_residual(cal: Calibration, group: tuple[Any, ...]) -> float:
    """RMS relative residual of the summed load terms against the measured load cost of the group's trials."""
    errs = []
    for o in cal.observations:
        if group_of(o, ("device", "cache", "converts")) != group or LOAD_COST not in o.parts or o.busy:
            continue
        lines = [cal.line("import", ()), cal.line("setup", (o.device,)), cal.line("weights", group),
                 cal.line("first_forward", group)]
        if any(line is None for line in lines):
            continue
        xs = (1.0, o.tensors, o.loaded_bytes, o.loaded_bytes)
        pred = sum(line.at(x) for line, x in zip(lines, xs))  # type: ignore[union-attr]
        errs.append(o.parts[LOAD_COST] / pred - 1 if pred > 0 else 0.0)
    return math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else 0.0


def _cold_from_warm(cal: Calibration, t: Target) -> Predicted | None:
    """No cold trial: the warm prediction plus the checkpoint read from storage at the measured sequential rate."""
    warm = load_cost(cal, t, "warm")
    disk = cal.machine.disk_read_gb_s
    if warm is None or not disk:
        return None
    stored = t.stored_bytes or t.loaded_bytes
    read = TermValue("storage_read", stored / (disk * 1e9),
                     f"storage_read: {stored:,} B / {disk:.3g} GB/s sequential read (machine bound, +-"
                     f"{UNFITTED_REL:.0%})")
    width = max(warm.hi / warm.value - 1 if warm.value else 0.0, UNFITTED_REL)
    s = Summed(warm.value + read.value, width, list(warm.terms) + [read], "storage_read is the machine's bound, "
               "not fitted on a cold trial")
    return _interval(figures.LOAD_COST_S, "cold", s, warm.notes + ("cold: no cold trial in the calibration; warm + "
                                                                   "storage read",), read.value, "the storage read")


def peak_memory(cal: Calibration, t: Target, base_bytes: int | None = None) -> Predicted:
    """Peak RSS (bytes) with the whole model in host memory: the fitted base + per resident byte, else the caller's
    measured base (``base_bytes``: this process with torch and transformers imported) + the bytes themselves."""
    e = t.estimate
    kv = e.kv_cache_bytes
    x = resident_bytes(t.loaded_bytes, t.stored_bytes, t.converts, kv)
    line = cal.line("memory", ())
    if line is None:
        base = base_bytes or DEFAULT_BASE_BYTES
        line = Line("memory", "resident_bytes", float(base), 1.0, 0, 0.0, 0.0, 0.0,
                    "machine: no trial; base RSS of this process + 1 byte per resident byte")
    return _interval(figures.PEAK_RSS_BYTES, "cpu", _sum([(line, x)]), (), t.loaded_bytes + kv,
                     "the loaded weights and the KV cache themselves")


def gpu_memory(cal: Calibration, t: Target, placement: Placement) -> list[Predicted]:
    """Peak CUDA allocated bytes per GPU: its placed bytes (+ the KV cache on the first) through the fitted
    ``memory_cuda`` term, else the bytes themselves (not fitted: activations and the allocator's rounding come on
    top, so a lower bound)."""
    out = []
    fitted = cal.line("memory_cuda", ())
    for i, (dev, placed) in enumerate(d for d in placement.bytes_by_device.items() if d[0].startswith("cuda")):
        x = placed + (t.estimate.kv_cache_bytes if i == 0 else 0)
        line = fitted or Line("memory_cuda", "loaded_bytes", 0.0, 1.0, 0, 0.0, 0.0, 0.0,
                              "machine: no CUDA trial; placed bytes + KV (bound)")
        out.append(_interval(figures.PEAK_CUDA_ALLOCATED_BYTES, dev, _sum([(line, x)]), (), x,
                             "the placed bytes themselves"))
    return out


def ttft(cal: Calibration, t: Target) -> Predicted | None:
    """TTFT (ms): the prefill term at the prompt's FLOPs, else FLOPs / the measured matmul rate (a bound)."""
    e = t.estimate
    flops = prefill_flops(e.param_count, e.batch_size, e.prompt_tokens)
    line, note = lookup(cal, "prefill", (t.device, t.dtype))
    if line is None:
        rate = cal.machine.matmul_gflops.get(t.dtype) or cal.machine.matmul_gflops.get("float32")
        if not rate:
            return None
        line = Line("prefill", "flops", 0.0, 1 / (rate * 1e9), 0, 0.0, 0.0, 0.0,
                    f"machine: {rate:.3g} GFLOP/s matmul (bound)")
    prompts = {o.prompt_tokens * o.batch for o in cal.observations}
    if prompts and e.prompt_tokens * e.batch_size not in prompts:
        note = (note + "; " if note else "") + "prefill: calibrated at other batch x prompt sizes"
    s = _sum([(line, flops)])
    s = replace(s, value=s.value * 1e3, terms=[TermValue(x.name, x.value * 1e3, x.basis) for x in s.terms])
    peak = max(cal.machine.matmul_gflops.values(), default=0.0)
    floor = flops / (peak * 1e9) * 1e3 if peak else 0.0
    return _interval(figures.TTFT_MS, "", s, (note,), floor, f"the FLOPs at the measured matmul rate ({peak:.3g} "
                     "GFLOP/s)")


def decode(cal: Calibration, t: Target, placement: Placement) -> Predicted | None:
    """Decode tok/s (all sequences): batch / (per-step overhead + bytes per step / effective bandwidth), plus what
    an offloaded part costs each step (host link on CUDA, the disk's read rate)."""
    e = t.estimate
    gen = e.generated_tokens
    x = step_bytes(t.loaded_bytes, e.kv_bytes_per_token, e.batch_size, e.prompt_tokens, gen)
    line, note = lookup(cal, "decode", (t.device, t.dtype))
    if line is None:
        bw = cal.machine.membw_gb_s
        if not bw:
            return None
        line = Line("decode", "step_bytes", 0.0, 1 / (bw * 1e9), 0, 0.0, 0.0, 0.0,
                    f"machine: {bw:.3g} GB/s copy bandwidth (bound)")
    s = _sum([(line, x)], _offload_terms(cal, t, placement))
    if s.value <= 0:
        return None
    step = _interval(figures.DECODE_TOK_S, "", s, (note,))  # on the step time: a rate's interval is its inverse
    return replace(step, value=e.batch_size / step.value, lo=e.batch_size / step.hi, hi=e.batch_size / step.lo)


def _offload_terms(cal: Calibration, t: Target, placement: Placement) -> list[TermValue]:
    out = []
    host = placement.bytes_by_device.get("cpu", 0) if t.device == "cuda" else 0
    if host and cal.machine.h2d_gb_s:
        out.append(TermValue("offload_h2d", host / (cal.machine.h2d_gb_s * 1e9),
                             f"{host:,} B on the host / {cal.machine.h2d_gb_s:.3g} GB/s pageable copy, each step"))
    disk = placement.bytes_by_device.get("disk", 0)
    if disk and cal.machine.disk_read_gb_s:
        out.append(TermValue("offload_disk", disk / (cal.machine.disk_read_gb_s * 1e9),
                             f"{disk:,} B on disk / {cal.machine.disk_read_gb_s:.3g} GB/s read, each step"))
    return out


def stored_bytes_for(e: SizeEstimate, checkpoint_dtype: str | None) -> int:
    """The checkpoint's tensor bytes when stored in ``checkpoint_dtype`` (None: as loaded, no conversion)."""
    if checkpoint_dtype is None or checkpoint_dtype not in DTYPE_BYTES:
        return e.weight_bytes + e.buffers_bytes
    return e.param_count * DTYPE_BYTES[checkpoint_dtype] + e.buffers_bytes


def predict(cal: Calibration, target: Target, budgets: Mapping[str, int], base_bytes: int | None = None
            ) -> Prediction:
    """Every figure of one target: load cost warm and cold, peak memory (host, and each GPU's bytes), TTFT,
    decode; a figure nothing calibrates (no trial and no machine bound) is left out and named in ``notes``."""
    placement = place(target.estimate, target.device_map, budgets)
    out: list[Predicted | None] = [load_cost(cal, target, "warm"), load_cost(cal, target, "cold")]
    out.append(peak_memory(cal, target, base_bytes))
    out += gpu_memory(cal, target, placement)
    out += [ttft(cal, target), decode(cal, target, placement)]
    notes = [placement.note] if placement.note else []
    if out[0] is None:
        notes.append("load cost: no load trial to calibrate from (give --from a finished run)")
    if out[1] is None and out[0] is not None:
        notes.append("cold load: no cold trial and no measured storage read rate")
    if not cal.observations:
        notes.append("no calibration trials: machine bounds only, a lower bound on time (wide intervals)")
    return Prediction(target, tuple(p for p in out if p is not None), placement, tuple(notes))
