"""Ranked diagnoses with evidence, drawn from finished trials (pure: reads TrialResults only).

Each rule looks at one kind of evidence and, when it fires, states the figures
it saw, a fix, and the seconds and bytes at stake with how they were found.
Severity comes from the stake (loadprof.analysis.stake). Ranking: trials that did not finish first, then
severity, then definite mistakes, then stake (``Finding.rank_key``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

from loadprof.core import figures
from loadprof.analysis.busy import trial_busy
from loadprof.analysis.derive import decode_call_s, first_forward_s, load_cost_s
from loadprof.analysis.lazy_import import RULES as LAZY_IMPORT_RULES
from loadprof.analysis.load_methods import RULES as LOAD_METHOD_RULES
from loadprof.analysis.precision_rules import RULES as PRECISION_RULES
from loadprof.analysis.settings import RULES as SETTINGS_RULES, effective_batch
from loadprof.analysis.stake import FAILED_KIND, failed_trials, graded, references
from loadprof.analysis.user_code import dominant_user_function, generate_user_code, memory_culprit
from loadprof.core.payloads import LoadPhasesPayload, MemoryPayload, SamplingPayload
from loadprof.core.phases import HARNESS_PHASES, LAZY_IMPORT_PHASE
from loadprof.results.model import Finding, TrialResult  # Finding lives with the result model; re-exported
from loadprof.core.units import bytes_h, pct

FIXED_DEVICE_MAPS_NEEDING_NO_MAX_MEMORY = ("cpu", "cuda", "mps")
VALIDATION_SHARE_MEDIUM, VALIDATION_SHARE_HIGH = 0.10, 0.50
READ_FRACTION_LOW = 0.5
LAZY_READ_SHARE = 0.5


_f = TrialResult.finding  # rules read as _f(trial, kind, severity, title, detail, fix, ...)
NOT_SAMPLED = SamplingPayload(ok=False)  # what a trial without the sampling probe's payload reads as


def _sampling(t: TrialResult) -> SamplingPayload:
    return t.payload(SamplingPayload) or NOT_SAMPLED


def _from_pretrained_calls(t: TrialResult) -> tuple[Any, ...]:
    lp = t.payload(LoadPhasesPayload)
    return lp.from_pretrained_calls if lp is not None else ()


def ignored_kwargs(t: TrialResult) -> Iterable[Finding]:
    lp = t.payload(LoadPhasesPayload)
    for name, where in ((lp.ignored_kwargs if lp is not None else None) or {}).items():
        yield _f(t, "ignored_kwarg", "low", f"`{name}` is ignored by the installed transformers",
                 f"from_pretrained received {name}=..., which transformers {t.env.get('transformers', '?')} pops and "
                 f"discards ({where}); it changes nothing.", f"remove `{name}` from the loader's kwargs",
                 mistake=True, basis="nothing at stake: the kwarg has no effect, whatever its author expected",
                 kwarg=name, source=where)


def needless_max_memory(t: TrialResult) -> Iterable[Finding]:
    for call in _from_pretrained_calls(t):
        kw = call.kwargs
        dm = kw.get("device_map")
        if "max_memory" in kw and isinstance(dm, str) and dm.split(":")[0] in FIXED_DEVICE_MAPS_NEEDING_NO_MAX_MEMORY:
            yield _f(t, "needless_max_memory", "low", f"max_memory has no effect with device_map={dm!r}",
                     f"max_memory={kw['max_memory']} was passed with the fixed device_map {dm!r}; it only steers "
                     "placement for auto/balanced/sequential maps (and never caps the loading peak).",
                     "drop max_memory, or use device_map='auto' if you want it to place layers", mistake=True,
                     basis="nothing at stake: max_memory has no effect here", device_map=dm, max_memory=kw["max_memory"])


def repeated_loads(t: TrialResult) -> Iterable[Finding]:
    calls = _from_pretrained_calls(t)
    if len(calls) > 1:
        load = figures.LOAD_S.read(t.metrics)
        extra = load * (len(calls) - 1) / len(calls) if load else None
        yield _f(t, "repeated_load", "medium", f"the model was loaded {len(calls)} times in one load",
                 f"from_pretrained ran {len(calls)} times during the `load` phase"
                 + (f": about {extra:.2f} s of the {load:.2f} s load went to the extra loads." if extra else "."),
                 "load once and reuse the model object", mistake=True, stake_s=extra,
                 basis=f"{figures.LOAD_S.key} x (calls - 1) / calls", calls=len(calls))


def validation_share(t: TrialResult) -> Iterable[Finding]:
    v, load = t.metrics.get("validate_s"), figures.LOAD_S.read(t.metrics)
    if not v or not load:
        return
    share = v / (v + load)
    if share < VALIDATION_SHARE_MEDIUM:
        return
    m = t.metrics
    yield _f(t, "validation_share", "high" if share >= VALIDATION_SHARE_HIGH else "medium",
             f"post-load validation is {pct(share)} of load + validate",
             f"validation {m.get('validation_mode')} took {v:.2f} s over {m.get('validation_modules_checked')} modules "
             f"(median {m.get('validation_per_module_median_ms', 0):.3f} ms per module) after a {load:.2f} s load.",
             "validate a sample (validation: sample:10 checks the first and last 10 modules) or not at all: "
             "from_pretrained already reports missing keys", mistake=True, stake_s=v, basis="validate_s (measured)",
             share=share, validate_s=v, load_s=load)


def meta_left(t: TrialResult) -> Iterable[Finding]:
    n = max(t.metrics.get("meta_tensors", 0) or 0, t.metrics.get("validation_meta_tensors", 0) or 0)
    if n:
        yield _f(t, "meta_tensors", "high", f"{n} tensors were left on the meta device",
                 f"after loading, {n} parameters/buffers have no data (e.g. "
                 f"{', '.join((t.metrics.get('meta_tensor_examples') or t.metrics.get('validation_meta_examples') or [])[:3])})"
                 ". Tensors offloaded to disk are expected on meta and not counted.",
                 "check the checkpoint's keys against the model (missing keys) and the device_map", mistake=True,
                 basis="the model cannot run: those weights have no data", tensors=n)


def _wall(t: TrialResult, name: str) -> float:
    """Summed wall seconds of the top-level phases named ``name``."""
    return sum(p.duration_s for p in t.phases if p.name == name)


UNCOVERED_SHARE, UNCOVERED_MIN_S, UNCOVERED_ALWAYS_S = 0.10, 0.05, 0.5
LOADPROF_PHASES = (*HARNESS_PHASES, "cleanup")  # loadprof's own steps after the workload
#: children that mark a moment inside their parent rather than split it into steps (prefill's preallocate: the
#: cache allocated at generate start; an import the step happened to trigger); a phase whose children are all
#: markers has no steps to leave time over
MARKER_PHASES = ("preallocate", LAZY_IMPORT_PHASE)


#: where loadprof's own code shows in a sampled frame (editable checkout or installed package)
_OWN_FRAMES = ("(probes/", "(profiler/", "(loadprof/", "/loadprof/")


def _own(function: str) -> str:
    """A tag for loadprof's own frames among the workload's (a probe's hook running inside the phase)."""
    return " [loadprof's probe]" if any(m in function for m in _OWN_FRAMES) else ""


def uncovered_time(t: TrialResult) -> Iterable[Finding]:
    """Time inside a phase that none of its named steps covers (``other``), over 10% of it (and 50 ms) or over
    0.5 s: say what the samples saw there, or that nothing was sampled."""
    def walk(nodes: Iterable[Any], prefix: str) -> Iterable[tuple[str, Any]]:
        for p in nodes:
            yield prefix + p.name, p
            yield from walk(p.children, prefix + p.name + "/")
    sv = _sampling(t)
    for path, node in walk(t.phases, ""):
        # the user's own functions sampled right in this phase have their own findings (dominant_user_function,
        # user_wait), named down to the call: their time is not uncovered, only unexplained time is
        yours = sum(u.own_s for u in sv.user_functions_in(path)) if "/" not in path else 0.0
        other, dur = max(0.0, node.other_s - yours), node.duration_s
        if path.split("/")[0] in LOADPROF_PHASES or all(c.name in MARKER_PHASES for c in node.children) \
                or not (other > UNCOVERED_ALWAYS_S or (other > UNCOVERED_SHARE * dur
                                                                    and other > UNCOVERED_MIN_S)):
            continue
        seen = (sv.phases or {}).get(path)
        if seen and seen.seconds > 0:
            what = "; ".join(f"{x['function']}{_own(x['function'])} {x['state']} {x['seconds']:.2f} s" for x in seen.top)
            saw = (f"the samples there ({seen.seconds:.2f} s: {seen.running_s:.2f} s running, {seen.waiting_s:.2f} s "
                   f"waiting) saw: {what}")
            fix = "look at those functions; the per-phase table in report.json (sampling.phases) has the rest"
        else:
            saw = ("nothing was sampled there" if sv.ok else "sampling was off, so nothing says what ran there")
            fix = "turn on sampling (sampling_hz: 100 in the YAML) to see what runs there"
        yield _f(t, "uncovered_time", "medium" if other >= UNCOVERED_ALWAYS_S else "low",
                 f"{other:.2f} s of {path} ({pct(other / dur)}) is in none of its named steps",
                 f"{path} took {dur:.2f} s; its steps ({', '.join(dict.fromkeys(c.name for c in node.children))}) cover "
                 f"{dur - node.other_s:.2f} s" + (f", your code's own {yours:.2f} s more (its own finding)"
                                                  if yours >= 0.01 else "") + f"; {saw}.", fix, stake_s=other,
                 basis="the phase's wall minus its children's and your code's own time in it",
                 subject=path, other_s=other, phase_s=dur, share=other / dur)


def slow_cold_read(t: TrialResult) -> Iterable[Finding]:
    frac = t.metrics.get("read_bandwidth_fraction")
    if frac is None or frac >= READ_FRACTION_LOW:
        return
    m = t.metrics
    yield _f(t, "slow_cold_read", "medium", f"the cold load read at {pct(frac)} of the disk's sequential bandwidth",
             f"{bytes_h(m['storage_read_bytes'])} read at >= {m['achieved_read_gb_s']:.2f} GB/s in "
             f"{', '.join(m.get('reading_phases', []))}; the same files read sequentially at {m['disk_seq_read_gb_s']:.2f} GB/s.",
             "reads are scattered or serialized (small shards, page faults at first use): fewer, larger shards, or "
             "read the files ahead (warm the page cache) before loading",
             stake_s=m["storage_read_bytes"] / 1e9 * (1 / m["achieved_read_gb_s"] - 1 / m["disk_seq_read_gb_s"]),
             basis="bytes read / achieved rate - bytes read / sequential rate", fraction=frac)


def lazy_load(t: TrialResult) -> Iterable[Finding]:
    payload = t.payload(MemoryPayload)
    mem = payload.per_phase if payload is not None else {}
    load, warm = mem.get("load"), mem.get("warmup/forward") or mem.get("warmup")
    weights = t.metrics.get("weights_bytes") or 0
    if not (load and warm and weights):
        return
    at_warmup, at_load = warm.file_growth_bytes, load.file_growth_bytes
    if at_warmup >= LAZY_READ_SHARE * weights and at_warmup > at_load:
        yield _f(t, "lazy_load", "low", "the load only mapped the weights: they were read at the first forward",
                 f"file-backed memory grew {bytes_h(at_load)} during load and {bytes_h(at_warmup)} during the first "
                 f"forward (weights {bytes_h(weights)}): load {figures.LOAD_S.read(t.metrics) or 0:.2f} s looks fast, "
                 "but the real load cost "
                 f"(load + validation + first forward) is {load_cost_s(t) or 0:.2f} s.",
                 "compare strategies on the real load cost (load + validation + first forward), not load alone",
                 stake_s=first_forward_s(t),
                 basis="the first forward's seconds, where the weights were read: the time a look at load alone "
                       "misses (the mapped pages are page cache, not memory the load costs)",
                 file_rss_load_bytes=at_load, file_rss_warmup_bytes=at_warmup)


def estimate_discrepancy(t: TrialResult) -> Iterable[Finding]:
    for row in t.metrics.get("estimate_vs_measured", []) or []:
        if not row.get("discrepancy"):
            continue
        fig = row["figure"]
        yield _f(t, "estimate_discrepancy", "medium",
                 f"measured {fig} is {row['ratio']:.2f}x the estimate from the config",
                 f"{fig}: measured {bytes_h(row['measured'])}, estimated {bytes_h(row['estimate'])} "
                 f"(likely: {row.get('likely_cause')}).",
                 "check the load dtype (an upcast doubles the weights), tied embeddings, and copies kept during load",
                 stake_bytes=abs(row["measured"] - row["estimate"]), basis="|measured - estimated|", figure=fig,
                 ratio=row["ratio"],
                 likely_cause=row.get("likely_cause"))


OFFLOAD_DEVICES = ("cpu", "disk")


def offload(t: TrialResult) -> Iterable[Finding]:
    """Layers that device_map placed on the CPU or disk while a faster main device held the rest."""
    placement: Mapping[str, Mapping[str, int]] = t.metrics.get("placement") or {}
    if not placement:
        return
    main = next((d for d in placement if d not in OFFLOAD_DEVICES), "cpu")
    off = {d: p for d, p in placement.items() if d in OFFLOAD_DEVICES and d != main}
    if not off:
        return
    total_layers = sum(p.get("layers", 0) for p in placement.values())
    parts = [f"{p.get('layers', 0)} of {total_layers} layers ({bytes_h(p.get('bytes', 0))}) on {d}" for d, p in off.items()]
    moved = sum(p.get("bytes", 0) for p in off.values())
    seq = t.harness.get("disk_read", {}).get("gb_s")
    cost = (f"; at this disk's {seq:.2f} GB/s, streaming them costs >= {moved / seq / 1e9:.2f} s per forward, "
            "i.e. per generated token" if seq and "disk" in off else
            "; every forward (every generated token) must bring them to the main device again")
    yield _f(t, "offload", "high", f"device_map put {' and '.join(parts)}",
             f"main device {main}; {', '.join(parts)}" + cost + ".",
             "give the main device more memory (max_memory), quantize, or pick a smaller dtype so the model fits",
             mistake=True, stake_bytes=moved, stake_s=moved / seq / 1e9 if seq and "disk" in off else None,
             basis="bytes placed off the main device" + ("; per forward: bytes / disk sequential rate"
                                                        if seq and "disk" in off else ""),
             layers={d: p.get("layers", 0) for d, p in off.items()}, total_layers=total_layers,
             bytes={d: p.get("bytes", 0) for d, p in off.items()}, main_device=main,
             subject="+".join(sorted(off)))  # CPU offload and disk offload are two diagnoses, never merged


ROOFLINE_LOW = 0.25
#: below this many weight bytes the bandwidth bound is meaningless: per-step overhead dwarfs reading the weights
ROOFLINE_MIN_WEIGHTS_BYTES = 8 * 2**20


PY_OVERHEAD_AREAS = ("generation utils", "python stdlib", "transformers", "model code", "cache", "attention masks",
                     "logits processing", "stopping criteria", "streamer", "accelerate hooks", "your code")


def _decode_limits(t: TrialResult) -> tuple[list[str], list[str]]:
    """What holds decode below its bound, from what was measured: the sampler's split of the decode steps
    (Python per-step work vs torch kernels), the batch size, a half-precision matmul slower than float32 here."""
    why: list[str] = []
    fixes: list[str] = []
    areas = (_sampling(t).areas or {}).get("generate/decode") or {}
    total = sum(areas.values())
    if total > 0:
        py = sum(v for k, v in areas.items() if k in PY_OVERHEAD_AREAS)
        torch_s = areas.get("torch ops", 0.0)
        why.append(f"the sampled decode steps ({total:.2f} s) were {pct(py / total)} Python per-step work "
                   f"(generation loop, model code, processors) and {pct(torch_s / total)} torch ops")
        if py / total >= 0.5:
            fixes.append("cut per-step Python work (on GPU a static cache lets transformers compile decoding)")
    else:
        fixes.append("turn on sampling (sampling_hz: 100) to see whether Python per-step work or kernels dominate")
    gen, eff = t.strategy.generate, effective_batch(t)
    if gen is not None and eff == 1:
        why.append("batch 1: every step reads all the weights for one token")
        fixes.append("batch requests (batch_size > 1) to amortise the weight reads")
    elif gen is not None and eff != gen.batch_size:
        why.append(f"{eff} sequences per step (batch {gen.batch_size} x beams / returned sequences)")
    rates = t.metrics.get("matmul_gflops") or {}
    half = next((k for k in ("bfloat16", "float16") if k in rates), None)
    if half and rates.get("float32") and rates[half] < rates["float32"]:
        why.append(f"{half} matmul runs at {rates[half]:.1f} GFLOP/s vs {rates['float32']:.1f} for float32 on this "
                   "CPU")
        fixes.append("load float32 on this CPU")
    return why, fixes


def decode_below_roofline(t: TrialResult) -> Iterable[Finding]:
    frac = t.metrics.get("roofline_fraction")
    if frac is None or frac >= ROOFLINE_LOW:
        return
    if (t.metrics.get("generate_settings") or {}).get("use_cache") is False:
        return  # the bound assumes a KV cache: the gap is use_cache=False's (analysis.settings.no_kv_cache says so)
    if trial_busy(t):
        return  # beside a neighbour the decode rate is not the model's alone: the busy-machine line says so
    m = t.metrics
    weights = m.get("weights_bytes") or m.get("decode_bytes_per_step") or 0
    if weights < ROOFLINE_MIN_WEIGHTS_BYTES:
        return
    why, fixes = _decode_limits(t)
    share = pct(frac) if frac >= 0.01 or frac == 0 else f"{100 * frac:.1f}%"
    yield _f(t, "decode_below_roofline", "low", f"decode runs at {share} of its memory-bandwidth bound",
             f"{m[figures.DECODE_TOK_S.key]:.1f} tok/s against a bound of {m['roofline_tok_s']:.1f} tok/s "
             f"({bytes_h(m['decode_bytes_per_step'])} read per step at the measured {m['membw_gb_s']:.1f} GB/s copy "
             "bandwidth)" + (": " + "; ".join(why) if why else "") + ".", "; ".join(fixes),
             stake_s=decode * (1 - frac) if (decode := decode_call_s(m)) is not None else None,
             basis="decode time per call x (1 - fraction of the bound)", fraction=frac)


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (
    offload, dominant_user_function, generate_user_code, memory_culprit, uncovered_time, validation_share, meta_left,
    repeated_loads, estimate_discrepancy,
    slow_cold_read, lazy_load, decode_below_roofline, ignored_kwargs, needless_max_memory, *PRECISION_RULES,
    *LAZY_IMPORT_RULES, *SETTINGS_RULES, *LOAD_METHOD_RULES,
)


def trial_findings(t: TrialResult) -> list[Finding]:
    """Every rule's findings on one finished trial, each graded by its stake (loadprof.analysis.stake)."""
    return [graded(f, references([t]), t) for f in _ungraded(t)]


def _ungraded(t: TrialResult) -> list[Finding]:
    return [f for rule in RULES for f in _applied(rule, t)] if t.ok else []


def _applied(rule: Any, t: TrialResult) -> list[Finding]:
    """One rule's findings; a trial whose figures do not hang together (a forged event, a hand-edited
    report.json) gives that rule nothing to say instead of taking the whole report down."""
    try:
        return list(rule(t))
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        return []


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Merge one diagnosis across repeats and strategies, then order: mistakes, severity, stake.

    The same kind about the same subject (kwarg, function, or a rule's own ``subject``, such as where weights
    were offloaded to) is one finding; it keeps the worst case's figures and lists every strategy it was seen in.
    """
    merged: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.kind, str(f.evidence.get("kwarg") or f.evidence.get("function") or f.evidence.get("subject") or ""))
        if key in merged:
            old = merged[key]
            worst = f if f.rank_key < old.rank_key else old
            labels = list(dict.fromkeys([*old.label.split(", "), f.label]))
            merged[key] = replace(worst, trial_ids=old.trial_ids + f.trial_ids,
                                  label=", ".join(x for x in labels if x))
        else:
            merged[key] = f
    return sorted(merged.values(), key=lambda f: (f.kind != FAILED_KIND, f.rank_key))


def sweep_findings(trials: Iterable[TrialResult], extra: Iterable[Finding] = ()) -> list[Finding]:
    """Per-trial findings plus sweep-level ones (``extra``, e.g. from loadprof.analysis.studies), ranked together;
    trials that did not finish lead."""
    trials = list(trials)
    refs = references(trials)  # one denominator for the sweep: a larger stake is never graded lower
    return rank([*failed_trials(trials), *(graded(f, refs, t) for t in trials for f in _ungraded(t)), *extra])
