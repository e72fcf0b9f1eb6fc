"""Trial-level figures derived from phases and probe payloads (pure: no measuring, no rendering).

The one place a trial's figures are computed (the runner only classifies how a trial ended), so renderers,
findings and tests share one definition of each derived number.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable, Iterable, Mapping

from loadprof.core import figures
from loadprof.core.phases import LAZY_IMPORT_PHASE
from loadprof.core.payloads import ImportsPayload, IOPayload, LoadPhasesPayload, MemoryPayload
from loadprof.core.phases import HARNESS_PHASES
from loadprof.results.model import PhaseTiming, TrialResult

#: a leaf phase that read at least this share of the trial's storage bytes counts as a reading phase
READING_SHARE = 0.05
#: below this many storage bytes a read rate is noise (config files, page-cache misses of a warm load)
MIN_RATE_BYTES = 16 * 2**20


def _leaves(phases: Iterable[PhaseTiming], prefix: str = "") -> Iterable[tuple[str, PhaseTiming]]:
    for p in phases:
        path = f"{prefix}/{p.name}" if prefix else p.name
        if p.children:
            yield from _leaves(p.children, path)
        else:
            yield path, p


def io_summary(trial: TrialResult) -> dict[str, Any]:
    """Bytes read from storage, where, and the achieved rate against the disk's sequential limit.

    achieved_read_gb_s = storage bytes / wall time of the leaf phases that read >= 5% of them. Those phases
    also compute, so it is a lower bound on the rate the reads ran at.
    """
    io = trial.payload(IOPayload)
    if io is None:
        return {}
    total, per = io.storage_read_bytes, io.per_phase
    out: dict[str, Any] = {"storage_read_bytes": total,
                           "storage_read_bytes_by_phase": {p: r.storage_read_bytes for p, r in per.items()
                                                           if "/" not in p and r.storage_read_bytes}}
    leaves = dict(_leaves(trial.phases))
    reading = [p for p, r in per.items() if p in leaves and total and r.storage_read_bytes >= READING_SHARE * total]
    if reading and total >= MIN_RATE_BYTES:
        secs = sum(leaves[p].duration_s for p in reading)
        out["reading_phases"] = reading
        out["achieved_read_gb_s"] = total / secs / 1e9 if secs > 0 else None
    seq = trial.harness.get("disk_read", {}).get("gb_s")
    if seq and out.get("achieved_read_gb_s"):
        out["disk_seq_read_gb_s"] = seq
        out["read_bandwidth_fraction"] = out["achieved_read_gb_s"] / seq
    phases_probe = trial.payload(LoadPhasesPayload)
    busy = phases_probe.materialize_worker_threads_busy_s if phases_probe is not None else None
    if busy:
        out["load_read_thread_s"] = busy.get("read", busy.get("materialize"))
        out["load_convert_thread_s"] = busy.get("convert")
    return {k: v for k, v in out.items() if v is not None}


def phase_totals(trial: TrialResult) -> dict[str, float]:
    """Top-level phase totals, ``<phase>_s`` for each top-level phase (a name may repeat: summed)."""
    totals: dict[str, float] = {}
    for p in trial.phases:
        totals[f"{p.name}_s"] = totals.get(f"{p.name}_s", 0.0) + p.duration_s
    return totals


def workload_peaks(trial: TrialResult) -> dict[str, int]:
    """Peak RSS / CUDA memory of the workload's phases only: loadprof's own later phases (a 512 MiB bandwidth
    copy, the traced call) must not inflate the figure users compare. Falls back to the whole-trial peak when
    no per-phase figures arrived (a crash before the first phase ended)."""
    memory = trial.payload(MemoryPayload)
    if memory is None:
        return {}
    per = [r for p, r in memory.per_phase.items() if "/" not in p and p not in HARNESS_PHASES]
    out: dict[str, int] = {}
    rss = [r.peak_rss_bytes for r in per]
    cuda = [r.peak_cuda_allocated_bytes for r in per if r.peak_cuda_allocated_bytes is not None]
    for key, vals, whole in ((figures.PEAK_RSS_BYTES.key, rss, memory.trial_peak_rss_bytes),
                             (figures.PEAK_CUDA_ALLOCATED_BYTES.key, cuda, memory.trial_peak_cuda_allocated_bytes)):
        if vals:
            out[key] = max(vals)
        elif whole is not None:
            out[key] = whole
    return out


def first_forward_s(t: TrialResult) -> float | None:
    """The ``warmup/forward`` phase; ``warmup_s`` only for trials without phases (it also holds warmup generates)."""
    for p in t.phases:
        if p.name == "warmup":
            fwd = [c.duration_s for c in p.children if c.name == "forward"]
            if fwd:
                return sum(fwd)
    return t.metrics.get("warmup_s")


def load_cost_s(t: TrialResult) -> float | None:
    """The real load cost (``figures.LOAD_COST_S``): load + validate + first forward, the time until the model
    can really serve.

    The one definition findings, recommendations, diff and report.json's metrics all use.

    The first forward counts because with memory-mapped safetensors ``from_pretrained`` returns before the weights
    are read: the page faults land in the first forward, so the load phase alone flatters lazy loads (and penalises
    eager ones). Only the forward counts, not the whole ``warmup`` phase: that also runs ``generate.warmup`` full
    generate calls, whose cost grows with batch size and max_new_tokens and is no part of loading.
    """
    load = figures.LOAD_S.read(t.metrics)
    if load is None:
        return None
    return load + shared_import_s(t) + (first_forward_s(t) or 0.0) + (t.metrics.get("validate_s") or 0.0)


def shared_import_record(t: TrialResult) -> Mapping[str, Any]:
    """The shared lazy import's record a trial carries (``shared_import``: seconds, modules, pid, others' CPU while
    it ran; loadprof.worker.shared_import), or {} where the trial paid its own import or the file holds something
    else: the one reader of that untrusted metric."""
    record = t.metrics.get("shared_import")
    return record if isinstance(record, dict) else {}


def shared_import_s(t: TrialResult) -> float:
    """Seconds of the load's lazy import done once for the trial's repeat round and shared (``SHARED_IMPORT_S``,
    loadprof.worker.shared_import); 0.0 where the trial paid its own (or the file says nothing usable)."""
    v = figures.SHARED_IMPORT_S.read(t.metrics)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else 0.0


#: the top-level phases, and the warmup child, that make up the real load cost (load_cost_s)
_LOAD_COST_PHASES = ("load", "validate", "warmup/forward")


def _import_s(node: PhaseTiming) -> float:
    """Seconds of the ``import`` phases below ``node`` (outermost imports only, so never counted twice)."""
    return sum(c.duration_s if c.name == LAZY_IMPORT_PHASE else _import_s(c) for c in node.children)


def phase_import_s(t: TrialResult, path: str) -> float:
    """Seconds of the ``import`` phases inside the top-level phase(s) at ``path`` (0.0 where none ran)."""
    return sum(_import_s(n) for n in _all(t.phases, path))


def load_import_s(t: TrialResult) -> float | None:
    """Seconds of the real load cost spent importing what the load imported lazily (the model's modeling module
    inside the first from_pretrained, a tokenizer's, the loader's own): the ``import`` phases inside ``load``,
    ``validate`` and the first forward. None where no import was timed (a file from before the imports probe);
    0.0 where the probe ran and the load imported nothing new. A fresh process pays this once, a warm one not.
    With a shared import (``figures.SHARED_IMPORT_S``: measured once per repeat round by the forkserver's
    sub-zygote, loadprof.worker.shared_import) it is counted here as it is in the real load cost."""
    nodes = [n for path in _LOAD_COST_PHASES for n in _all(t.phases, path)]
    if not nodes:
        return None
    total = sum(_import_s(n) for n in nodes) + shared_import_s(t)
    return total if total or t.payload(ImportsPayload) is not None else None


def _all(phases: Iterable[PhaseTiming], path: str) -> list[PhaseTiming]:
    """Every node at ``path`` (a name can repeat at one level)."""
    head, _, rest = path.partition("/")
    hits = [p for p in phases if p.name == head]
    return hits if not rest else [n for h in hits for n in _all(h.children, rest)]


def decode_call_s(metrics: Any) -> float | None:
    """Seconds one measured generate call spends decoding: new tokens / decode rate (None where either is
    missing); the time a decode-side finding puts at stake is a share of it."""
    n, rate = metrics.get("new_tokens"), figures.DECODE_TOK_S.read(metrics)
    return n / rate if n and rate else None


def roofline(trial: TrialResult) -> dict[str, Any]:
    """Decode against its memory-bandwidth bound.

    A decode step reads every weight once plus each sequence's KV cache, so
    bytes_per_step = weights (+ bnb scales) + batch x kv_bytes_per_token x mean context during decode
    (prompt + new_tokens / 2), and tokens/s <= membw / bytes_per_step x batch.
    """
    m = trial.metrics
    gen = trial.strategy.generate
    kv_tok = (m.get("estimate") or {}).get("kv_bytes_per_token")
    bw, tok = m.get("membw_gb_s"), figures.DECODE_TOK_S.read(m)
    if not (gen is not None and kv_tok is not None and bw and tok and m.get("weights_bytes")):
        return {}
    batch = gen.batch_size
    context = gen.prompt_tokens + m.get("new_tokens", 0) / 2
    per_step = m["weights_bytes"] + m.get("quant_state_bytes", 0) + batch * kv_tok * context
    bound = bw * 1e9 / per_step * batch
    return {"decode_bytes_per_step": per_step, "roofline_tok_s": bound, "roofline_fraction": tok / bound}


def transfer(trial: TrialResult) -> dict[str, Any]:
    """The load's host -> device rate: weight bytes that ended on a GPU / wall time of the phase that placed them.

    That phase (``load/weights/materialize``, else ``load/weights``) also reads and converts, so the rate is a
    lower bound on the link's; it is held against the synchronised pageable host -> device copy rate measured
    in the same process (``h2d_pageable_gb_s``).
    """
    m = trial.metrics
    on_gpu = sum(v for d, v in (m.get("bytes_by_device") or {}).items() if str(d).startswith("cuda"))
    phase = trial.phase("load/weights/materialize") or trial.phase("load/weights")
    if not on_gpu or phase is None or phase.duration_s <= 0:
        return {}
    out: dict[str, Any] = {"load_h2d_bytes": on_gpu, "load_h2d_phase": phase.name,
                           "load_h2d_gb_s": on_gpu / phase.duration_s / 1e9}
    if m.get("h2d_pageable_gb_s"):
        out["load_h2d_fraction"] = out["load_h2d_gb_s"] / m["h2d_pageable_gb_s"]
    return out


def cold_call(trial: TrialResult) -> dict[str, Any]:
    """What the process's first generate call cost beyond a warm one.

    On CUDA with a static cache transformers compiles decoding on the first call, so this is where compile
    time lands (and a larger cap in the same process would compile again); on CPU it is first-use overhead.
    """
    m = trial.metrics
    cold, warm = m.get("cold_generate_s"), figures.GENERATE_CALL_S.read(m)
    if cold is None or warm is None or not m.get("generate_calls_warmup"):
        return {}  # without a warmup call the cold call is the measured one: nothing to compare
    gen = trial.strategy.generate
    on_cuda = bool(trial.env.get("cuda_available")) and trial.strategy.load.device_map != "cpu"
    out = {"cold_call_extra_s": cold - warm}
    if on_cuda and gen is not None and gen.cache_implementation == "static":
        out["cold_call_extra_includes"] = "torch.compile of decoding (static cache on CUDA)"
    return out


def prefill_tok_s(trial: TrialResult) -> float | None:
    """Prompt processing rate (llama-bench's ``pp``): batch x prompt tokens / the median measured call's
    ``generate/prefill`` phase (the forward over the prompt that ends at the first token)."""
    gen = trial.strategy.generate
    calls = [c.duration_s for p in trial.phases if p.name == "generate" for c in p.children if c.name == "prefill"]
    if gen is None or not calls:
        return None
    mid = statistics.median(calls)
    return gen.batch_size * gen.prompt_tokens / mid if mid > 0 else None


#: the read bound of each page-cache state: the harness record of the rate measured before the trial, its name
READ_BOUNDS = {"cold": ("disk_read", "storage sequential read"), "warm": ("page_cache_read", "page-cache read")}


def load_read_bytes(t: TrialResult) -> int | None:
    """Bytes the load read from the checkpoint: a state-dict method's ``read`` step (its tensors' bytes), else
    the checkpoint files' bytes as the page-cache step counted them, else the loaded weights' bytes."""
    per = t.metrics.get("load_bytes_by_step") or {}
    cache = t.harness.get("file_cache") or {}
    return per.get("read") or cache.get("bytes_total") or t.metrics.get("weights_bytes") or None


def read_bound(t: TrialResult) -> tuple[float, str] | None:
    """(GB/s, name) of the limit a load's read is held against: the storage's sequential rate on a cold load, the
    page-cache read rate on a warm one (both measured by the parent before the trial); None for ``as-is``."""
    key, name = READ_BOUNDS.get(t.strategy.load.file_cache, (None, ""))
    rate = (t.harness.get(key) or {}).get("gb_s") if key else None
    return (rate, name) if rate else None


def load_gb_s(t: TrialResult) -> float | None:
    """``figures.LOAD_GB_S``: bytes the load read / the real load cost (a lazily mapped read pays its page faults
    in the first forward, which the real load cost holds: every method is held to the same window)."""
    n, cost = load_read_bytes(t), load_cost_s(t)
    return n / cost / 1e9 if n and cost and cost > 0 else None


def load_bound_fraction(t: TrialResult) -> float | None:
    """``figures.LOAD_BOUND_FRACTION``: the load rate / the read bound (``read_bound``)."""
    rate, bound = load_gb_s(t), read_bound(t)
    return rate / bound[0] if rate and bound else None


def load_bounds(t: TrialResult) -> dict[str, Any]:
    """Each data step of the load against its bound: bytes, GB/s per child phase of ``load`` (a state-dict method's
    read, place, convert, assign; from_pretrained's ``weights``, which reads, converts and places in one), the read
    step's share of the read bound and a placement's share of the pageable host -> device rate."""
    m = t.metrics
    per = dict(m.get("load_bytes_by_step") or {})
    if not per and m.get("weights_bytes"):
        per = {"weights": m["weights_bytes"]}
    rates = {name: n / ph.duration_s / 1e9 for name, n in per.items()
             if n and (ph := t.phase(f"load/{name}")) is not None and ph.duration_s > 0}
    out: dict[str, Any] = {"load_read_bytes": load_read_bytes(t), "load_placed_bytes": per.get("assign")
                           or m.get("weights_bytes")}
    if rates:
        out["load_gb_s_by_step"] = rates
    bound = read_bound(t)
    if bound:
        out.update(load_bound_gb_s=bound[0], load_bound=bound[1])
        step = rates.get("read", rates.get("weights"))
        if step:
            out["load_read_step_fraction"] = step / bound[0]
    if rates.get("place") and m.get("h2d_pageable_gb_s"):
        out["load_place_fraction"] = rates["place"] / m["h2d_pageable_gb_s"]
    return {k: v for k, v in out.items() if v is not None}


#: the catalogue's derived figures (``figures.Figure.derived``), each computed here from a trial's phases
DERIVATIONS: Mapping[str, Callable[[TrialResult], float | None]] = {
    figures.LOAD_COST_S.key: load_cost_s, figures.PREFILL_TOK_S.key: prefill_tok_s,
    figures.LOAD_GB_S.key: load_gb_s, figures.LOAD_BOUND_FRACTION.key: load_bound_fraction}


def value(t: TrialResult, f: figures.Figure) -> Any:
    """One trial's figure ``f``: a derived figure as today's derivation computes it (a report.json written before
    the figure existed lacks it in ``metrics``), else, or where the phases cannot give it, as ``metrics`` holds it.
    The one way analysis reads a catalogue figure off a trial."""
    derivation = DERIVATIONS.get(f.key)
    v = derivation(t) if derivation is not None else None
    return f.read(t.metrics) if v is None else v


def load_figures(trial: TrialResult) -> dict[str, Any]:
    """The first forward and the derived figures, under the keys report.json, diff and the reports share."""
    out = {"first_forward_s": first_forward_s(trial), "load_import_s": load_import_s(trial),
           **{k: fn(trial) for k, fn in DERIVATIONS.items()}}
    return {k: v for k, v in out.items() if v is not None}


def enrich(trial: TrialResult) -> TrialResult:
    """The trial with its derived figures merged into ``metrics``: first what phases and payloads say directly
    (phase totals, workload peaks), then what is derived from those."""
    base = {**phase_totals(trial), **workload_peaks(trial)}
    trial = dataclasses.replace(trial, metrics={**trial.metrics, **base}) if base else trial
    extra = {**io_summary(trial), **roofline(trial), **transfer(trial), **cold_call(trial), **load_bounds(trial),
             **load_figures(trial)}
    return dataclasses.replace(trial, metrics={**trial.metrics, **extra}) if extra else trial
