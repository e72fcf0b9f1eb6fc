"""Ranked diagnoses with evidence, drawn from finished trials (pure: reads TrialResults only).

Each rule looks at one kind of evidence and, when it fires, states the figures
it saw and a fix. Ranking: severity first, then ``score`` (seconds at stake,
where a rule can say; otherwise a share).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from loadprof.results import Finding, TrialResult  # Finding lives with the result model; re-exported

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
FIXED_DEVICE_MAPS_NEEDING_NO_MAX_MEMORY = ("cpu", "cuda", "mps")
VALIDATION_SHARE_MEDIUM, VALIDATION_SHARE_HIGH = 0.10, 0.50
USER_FN_SHARE_MEDIUM, USER_FN_SHARE_HIGH = 0.20, 0.50
USER_FN_MIN_S = 0.2  # below this a user function's share rests on a handful of samples
READ_FRACTION_LOW = 0.5
LAZY_READ_SHARE = 0.5


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _f(t: TrialResult, kind: str, severity: str, title: str, detail: str, fix: str,
       score: float = 0.0, **evidence: Any) -> Finding:
    return Finding(kind, severity, title, detail, fix, evidence, (t.trial_id,), t.label, score)


def ignored_kwargs(t: TrialResult) -> Iterable[Finding]:
    for name, where in t.views.load_phases.ignored_kwargs.items():
        yield _f(t, "ignored_kwarg", "low", f"`{name}` is ignored by the installed transformers",
                 f"from_pretrained received {name}=..., which transformers {t.env.get('transformers', '?')} pops and "
                 f"discards ({where}); it changes nothing.", f"remove `{name}` from the loader's kwargs",
                 kwarg=name, source=where)


def needless_max_memory(t: TrialResult) -> Iterable[Finding]:
    for call in t.views.load_phases.from_pretrained_calls:
        kw = call.kwargs
        dm = kw.get("device_map")
        if "max_memory" in kw and isinstance(dm, str) and dm.split(":")[0] in FIXED_DEVICE_MAPS_NEEDING_NO_MAX_MEMORY:
            yield _f(t, "needless_max_memory", "low", f"max_memory has no effect with device_map={dm!r}",
                     f"max_memory={kw['max_memory']} was passed with the fixed device_map {dm!r}; it only steers "
                     "placement for auto/balanced/sequential maps (and never caps the loading peak).",
                     "drop max_memory, or use device_map='auto' if you want it to place layers",
                     device_map=dm, max_memory=kw["max_memory"])


def repeated_loads(t: TrialResult) -> Iterable[Finding]:
    calls = t.views.load_phases.from_pretrained_calls
    if len(calls) > 1:
        yield _f(t, "repeated_load", "medium", f"the model was loaded {len(calls)} times in one load",
                 f"from_pretrained ran {len(calls)} times during the `load` phase.",
                 "load once and reuse the model object", calls=len(calls))


def validation_share(t: TrialResult) -> Iterable[Finding]:
    v, load = t.metrics.get("validate_s"), t.metrics.get("load_s")
    if not v or not load:
        return
    share = v / (v + load)
    if share < VALIDATION_SHARE_MEDIUM:
        return
    m = t.metrics
    yield _f(t, "validation_share", "high" if share >= VALIDATION_SHARE_HIGH else "medium",
             f"post-load validation is {_pct(share)} of load + validate",
             f"validation {m.get('validation_mode')} took {v:.2f} s over {m.get('validation_modules_checked')} modules "
             f"(median {m.get('validation_per_module_median_ms', 0):.3f} ms per module) after a {load:.2f} s load.",
             "validate a sample (validation: sample:10 checks the first and last 10 modules) or not at all: "
             "from_pretrained already reports missing keys", score=v, share=share, validate_s=v, load_s=load)


def meta_left(t: TrialResult) -> Iterable[Finding]:
    n = max(t.metrics.get("meta_tensors", 0) or 0, t.metrics.get("validation_meta_tensors", 0) or 0)
    if n:
        yield _f(t, "meta_tensors", "high", f"{n} tensors were left on the meta device",
                 f"after loading, {n} parameters/buffers have no data (e.g. "
                 f"{', '.join((t.metrics.get('meta_tensor_examples') or t.metrics.get('validation_meta_examples') or [])[:3])})"
                 ". Tensors offloaded to disk are expected on meta and not counted.",
                 "check the checkpoint's keys against the model (missing keys) and the device_map", tensors=n)


def dominant_user_function(t: TrialResult) -> Iterable[Finding]:
    users = t.views.sampling.user_functions
    if not users:
        return
    top = users[0]
    share = top.own_share_of_load  # own: outside transformers' named loading steps
    if share < USER_FN_SHARE_MEDIUM or top.own_s < USER_FN_MIN_S:
        return
    yield _f(t, "dominant_user_function", "high" if share >= USER_FN_SHARE_HIGH else "medium",
             f"your function {top.name} is {_pct(share)} of the load",
             f"{top.name} ({top.file}:{top.line}) took {top.own_s:.2f} s of the load phase outside transformers' own "
             f"loading steps ({top.own_samples} py-spy samples)"
             + (f"; hottest line {top.hottest_line}" if top.hottest_line else "") + ".",
             "this is time in your loader, not in transformers: remove or sample that work",
             score=top.own_s, function=top.name, file=top.file, line=top.line, share=share)


def slow_cold_read(t: TrialResult) -> Iterable[Finding]:
    frac = t.metrics.get("read_bandwidth_fraction")
    if frac is None or frac >= READ_FRACTION_LOW:
        return
    m = t.metrics
    yield _f(t, "slow_cold_read", "medium", f"the cold load read at {_pct(frac)} of the disk's sequential bandwidth",
             f"{_mib(m['storage_read_bytes'])} read at >= {m['achieved_read_gb_s']:.2f} GB/s in "
             f"{', '.join(m.get('reading_phases', []))}; the same files read sequentially at {m['disk_seq_read_gb_s']:.2f} GB/s.",
             "reads are scattered or serialized (small shards, page faults at first use): fewer, larger shards, or "
             "read the files ahead (warm the page cache) before loading", fraction=frac)


def lazy_load(t: TrialResult) -> Iterable[Finding]:
    mem = t.views.memory.per_phase
    load, warm = mem.get("load"), mem.get("warmup/forward") or mem.get("warmup")
    weights = t.metrics.get("weights_bytes") or 0
    if not (load and warm and weights):
        return
    at_warmup, at_load = warm.file_growth_bytes, load.file_growth_bytes
    if at_warmup >= LAZY_READ_SHARE * weights and at_warmup > at_load:
        yield _f(t, "lazy_load", "low", "the load only mapped the weights: they were read at the first forward",
                 f"file-backed memory grew {_mib(at_load)} during load and {_mib(at_warmup)} during the first forward "
                 f"(weights {_mib(weights)}): load {t.metrics.get('load_s', 0):.2f} s looks fast, but the real cost "
                 f"is load + warmup = {t.metrics.get('load_s', 0) + t.metrics.get('warmup_s', 0):.2f} s.",
                 "compare strategies on load + warmup, not load alone", file_rss_load_bytes=at_load,
                 file_rss_warmup_bytes=at_warmup)


def estimate_discrepancy(t: TrialResult) -> Iterable[Finding]:
    for row in t.metrics.get("estimate_vs_measured", []) or []:
        if not row.get("discrepancy"):
            continue
        fig = row["figure"]
        yield _f(t, "estimate_discrepancy", "medium",
                 f"measured {fig} is {row['ratio']:.2f}x the estimate from the config",
                 f"{fig}: measured {_mib(row['measured'])}, estimated {_mib(row['estimate'])} "
                 f"(likely: {row.get('likely_cause')}).",
                 "check the load dtype (an upcast doubles the weights), tied embeddings, and copies kept during load",
                 score=abs(row["measured"] - row["estimate"]) / 2**30, figure=fig, ratio=row["ratio"],
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
    parts = [f"{p.get('layers', 0)} of {total_layers} layers ({_mib(p.get('bytes', 0))}) on {d}" for d, p in off.items()]
    moved = sum(p.get("bytes", 0) for p in off.values())
    seq = t.harness.get("disk_read", {}).get("gb_s")
    cost = (f"; at this disk's {seq:.2f} GB/s, streaming them costs >= {moved / seq / 1e9:.2f} s per forward, "
            "i.e. per generated token" if seq and "disk" in off else
            "; every forward (every generated token) must bring them to the main device again")
    yield _f(t, "offload", "high", f"device_map put {' and '.join(parts)}",
             f"main device {main}; {', '.join(parts)}" + cost + ".",
             "give the main device more memory (max_memory), quantize, or pick a smaller dtype so the model fits",
             score=moved / 2**30, layers={d: p.get("layers", 0) for d, p in off.items()},
             bytes={d: p.get("bytes", 0) for d, p in off.items()}, main_device=main,
             subject="+".join(sorted(off)))  # CPU offload and disk offload are two diagnoses, never merged


ROOFLINE_LOW = 0.25


def decode_below_roofline(t: TrialResult) -> Iterable[Finding]:
    frac = t.metrics.get("roofline_fraction")
    if frac is None or frac >= ROOFLINE_LOW:
        return
    m = t.metrics
    yield _f(t, "decode_below_roofline", "low", f"decode runs at {_pct(frac)} of its memory-bandwidth bound",
             f"{m['decode_tok_s']:.1f} tok/s against a bound of {m['roofline_tok_s']:.1f} tok/s "
             f"({_mib(m['decode_bytes_per_step'])} read per step at the measured {m['membw_gb_s']:.1f} GB/s copy "
             "bandwidth): decode is limited by compute or per-step overhead, not by moving the weights.",
             "larger batches amortise the weight reads; on GPU a static cache lets transformers compile decoding",
             fraction=frac)


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (
    offload, dominant_user_function, validation_share, meta_left, repeated_loads, estimate_discrepancy,
    slow_cold_read, lazy_load, decode_below_roofline, ignored_kwargs, needless_max_memory,
)


def trial_findings(t: TrialResult) -> list[Finding]:
    if not t.ok:
        return []
    return [f for rule in RULES for f in rule(t)]


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Merge one diagnosis across repeats and strategies, then order by severity and score.

    The same kind about the same subject (kwarg, function, or a rule's own ``subject``, such as where weights
    were offloaded to) is one finding; it keeps the worst case's figures and lists every strategy it was seen in.
    """
    merged: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.kind, str(f.evidence.get("kwarg") or f.evidence.get("function") or f.evidence.get("subject") or ""))
        if key in merged:
            old = merged[key]
            worst = f if f.score > old.score else old
            labels = list(dict.fromkeys([*old.label.split(", "), f.label]))
            merged[key] = Finding(worst.kind, worst.severity, worst.title, worst.detail, worst.fix, worst.evidence,
                                  old.trial_ids + f.trial_ids, ", ".join(x for x in labels if x), worst.score)
        else:
            merged[key] = f
    return sorted(merged.values(), key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), -f.score, f.kind, f.label))


def sweep_findings(trials: Iterable[TrialResult], extra: Iterable[Finding] = ()) -> list[Finding]:
    """Per-trial findings plus sweep-level ones (``extra``, e.g. from loadprof.analysis.studies), ranked together."""
    return rank([*(f for t in trials for f in trial_findings(t)), *extra])
