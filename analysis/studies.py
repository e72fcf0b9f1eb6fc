"""Cross-trial studies: how one knob (max_new_tokens, batch size, quantization) moves the measurements.

Pure analysis over finished TrialResults, JSON-ready dicts with units in key names. It runs in the parent,
so it never imports torch or transformers. The questions come from the user's notes: why a larger
max_new_tokens made generation slower although answers stopped early (buffers sized by the cap before the
first token), how throughput scales with parallel sequences, and what quantization saves. The max_new_tokens
curve and its finding live in loadprof.analysis.cap_study; every trend, knee and spread comes from
loadprof.analysis.stats through loadprof.analysis.trend_claims.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import fields, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from loadprof.core import figures
from loadprof.analysis import trend_claims as tc
from loadprof.analysis.cap_study import covering_cap, curve_notes, head, max_new_tokens_curve, preallocation_findings
from loadprof.analysis.derive import prefill_tok_s
from loadprof.analysis.knobs import without
from loadprof.analysis.busy import trial_busy
from loadprof.core.payloads import AllocationsPayload
from loadprof.results.model import Study, TrialResult
from loadprof.strategies.model import Strategy

__all__ = ["batch_notes", "batch_scaling", "covering_cap", "max_new_tokens_curve", "preallocation_findings",
           "quantization_comparison", "series", "studies", "study_of", "traced_repeats"]

#: the allocation trace's figures: measured once per configuration (loadprof.probes.allocations)
ALLOCATION_KEYS = tuple(f.name for f in fields(AllocationsPayload) if f.name != "extra")

BATCH_FIGURES = (figures.DECODE_TOK_S, figures.PREFILL_TOK_S, figures.DECODE_TOK_S_PER_SEQ, figures.TTFT_MS)
BATCH_KEYS = tuple(f.key for f in BATCH_FIGURES)
QUANT_KEYS = (figures.DECODE_TOK_S.key, figures.TTFT_MS.key, figures.LOAD_S.key)
QUANT_ORDER = ("none", "bnb-8bit", "bnb-4bit-nf4", "bnb-4bit-fp4")
#: knobs named in a series' description (the varied one left out)
FIXED_KNOBS = ("load.dtype", "load.quantization", "load.device_map", "generate.prompt_tokens",
               "generate.max_new_tokens", "generate.batch_size", "generate.cache_implementation",
               "generate.stop_after")
#: paths that do not change what is measured (repeat_index lives on the trial, not the strategy)
IGNORED_PATHS = ("label", "generate.repeats")


# ---------------------------------------------------------------- grouping

def model_name(strategy: Strategy) -> str:
    return strategy.model.label


def _order(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    if v in QUANT_ORDER:
        return (1, float(QUANT_ORDER.index(v)), "")
    return (2, 0.0, json.dumps(v, sort_keys=True, default=str))


def _median(values: Sequence[Any]) -> Any:
    """Median of numbers, recursively of dicts, per (site, op) of allocation-site lists; else the first value."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return statistics.median(present)
    if all(isinstance(v, Mapping) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _median([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, list) and all(isinstance(s, Mapping) and "site" in s for s in v) for v in present):
        by_site: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for v in present:
            for s in v:
                by_site.setdefault((s["site"], str(s.get("op", ""))), []).append(s)
        return [_median(rows) for rows in by_site.values()]
    return first


def _describe(strategy: Strategy, vary: str) -> tuple[dict[str, Any], str]:
    fixed: dict[str, Any] = {"model": model_name(strategy)}
    fixed.update({k: strategy.at(k) for k in FIXED_KNOBS if k != vary and strategy.at(k) is not None})
    short = [fixed["model"]] + [f"{k.split('.')[-1]}={v}" for k, v in fixed.items() if k != "model"]
    return fixed, ", ".join(short)


def traced_repeats(trials: Iterable[TrialResult]) -> dict[str, str]:
    """Strategy id -> the trial whose allocation trace speaks for that configuration: its first ok repeat (by
    repeat index) that traced. The bytes are the same on every repeat, so the sweep traces once per
    configuration; in a file from before, where every repeat traced, the others are the same answer again and
    counting them would fit a curve to copies."""
    out: dict[str, tuple[int, str]] = {}
    for t in trials:
        if t.ok and any(k in t.metrics for k in ALLOCATION_KEYS):
            known = out.get(t.strategy_id)
            if known is None or t.repeat_index < known[0]:
                out[t.strategy_id] = (t.repeat_index, t.trial_id)
    return {sid: tid for sid, (_, tid) in out.items()}


def _sample(t: TrialResult, traced: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One trial's metrics, with the prompt rate derived where a report.json predates it; the allocation figures
    only on its configuration's traced repeat (``traced``: ``traced_repeats``; None keeps them)."""
    m = dict(t.metrics)
    if traced is not None and traced.get(t.strategy_id) != t.trial_id:
        for k in ALLOCATION_KEYS:
            m.pop(k, None)
    if figures.PREFILL_TOK_S.read(m) is None and (pp := prefill_tok_s(t)) is not None:
        m[figures.PREFILL_TOK_S.key] = pp
    return m


def series(trials: Iterable[TrialResult], vary: str) -> list[dict[str, Any]]:
    """Group ok trials that differ only in ``vary``; keep groups with >= 2 values: per point the medians over
    repeats (``metrics``) and every repeat's own metrics (``samples``, what trends are fitted to).

    Everything else in the strategy (model, load dtype, device map, prompt, cache...) is part of the key, so a
    4-bit point is compared with the unquantized one of the same compute dtype only.
    """
    groups: dict[str, dict[Any, list[TrialResult]]] = {}
    reps: dict[str, Strategy] = {}
    trials = list(trials)
    traced = traced_repeats(trials)
    for t in trials:
        value = t.strategy.at(vary)
        if not t.ok or value is None:
            continue
        key = json.dumps(without(t.strategy.to_dict(), (*IGNORED_PATHS, vary)), sort_keys=True)
        groups.setdefault(key, {}).setdefault(json.dumps(value, sort_keys=True, default=str), []).append(t)
        reps.setdefault(key, t.strategy)
    out = []
    for key, by_value in groups.items():
        if len(by_value) < 2:
            continue
        points = []
        for ts in by_value.values():
            samples = [_sample(t, traced) for t in ts]
            metric_keys = list(dict.fromkeys(k for m in samples for k in m))
            points.append({
                "value": ts[0].strategy.at(vary), "trial_ids": [t.trial_id for t in ts], "repeats": len(ts),
                "busy": sum(1 for t in ts if trial_busy(t)),
                "metrics": {k: _median([m.get(k) for m in samples]) for k in metric_keys}, "samples": samples,
                "new_tokens_seen": sorted({n for t in ts if (n := t.metrics.get("new_tokens")) is not None}),
            })
        points.sort(key=lambda p: _order(p["value"]))
        fixed, desc = _describe(reps[key], vary)
        out.append({"vary": vary, "description": desc, "fixed": fixed,
                    "trial_ids": [i for p in points for i in p["trial_ids"]], "points": points})
    out.sort(key=lambda g: g["description"])
    return out


# ---------------------------------------------------------------- studies

def _kv_tokens(settings: Mapping[str, Any], new_tokens: Any) -> int | None:
    """Tokens one sequence's KV cache holds: a static cache is sized by the cap, a dynamic one by what was made."""
    prompt, cap = settings.get("generate.prompt_tokens"), settings.get("generate.max_new_tokens")
    if prompt is None:
        return None
    if settings.get("generate.cache_implementation") == "static" and cap is not None:
        return prompt + cap
    if new_tokens is not None:
        return prompt + int(new_tokens)
    return prompt + min(cap, settings.get("generate.stop_after") or cap) if cap is not None else None


def _step_ms(batch: float) -> Callable[[Mapping[str, Any]], float | None]:
    """Milliseconds per decode step (one token for every sequence) from one trial's total decode rate."""
    def of(m: Mapping[str, Any]) -> float | None:
        tok = figures.DECODE_TOK_S.read(m)
        return 1e3 * batch / tok if isinstance(tok, (int, float)) and tok > 0 else None
    return of


def _batch_row(group: Mapping[str, Any], p: Mapping[str, Any], base_b: Any, base_tok: Any) -> dict[str, Any]:
    m, b = p["metrics"], p["value"]
    tok = figures.DECODE_TOK_S.read(m)
    speedup = tok / base_tok if tok is not None and base_tok else None
    per_tok = (m.get("estimate") or {}).get("kv_bytes_per_token")
    kv_tokens = _kv_tokens({**group["fixed"], group["vary"]: b}, m.get("new_tokens"))
    per_seq = per_tok * kv_tokens if per_tok is not None and kv_tokens is not None else None
    return {"batch_size": b, "trial_ids": p["trial_ids"], "repeats": p.get("repeats", len(p["trial_ids"])),
            **{f.key: f.read(m) for f in BATCH_FIGURES},
            "estimates": tc.point_estimates(p, BATCH_KEYS), "speedup": speedup,
            "efficiency_pct": 100.0 * speedup / (b / base_b) if speedup is not None else None,
            "kv_bytes_per_seq": per_seq, "kv_bytes_total": per_seq * b if per_seq is not None else None,
            "best_efficiency": False, "best_throughput": False}


def batch_scaling(group: Mapping[str, Any]) -> dict[str, Any]:
    """Throughput vs batch like a parallel-workers table and llama-bench: prompt processing (pp,
    ``figures.PREFILL_TOK_S``) and token generation (tg, ``figures.DECODE_TOK_S``) tok/s with their spread, speedup
    over the smallest batch, efficiency, KV size, and where the decode step time starts rising faster (throughput
    stops scaling).

    Efficiency = speedup / (batch / smallest batch). The best-efficiency row is chosen among the batches above
    the smallest (the baseline is 100% by construction).
    """
    pts = group["points"]
    base_b, base_tok = pts[0]["value"], figures.DECODE_TOK_S.read(pts[0]["metrics"])
    rows = [_batch_row(group, p, base_b, base_tok) for p in pts]
    tput = figures.DECODE_TOK_S.read
    best_tp = max((r for r in rows if tput(r) is not None), key=tput, default=None)
    best_eff = max((r for r in rows[1:] if r["efficiency_pct"] is not None), key=lambda r: r["efficiency_pct"],
                   default=None)
    for r, flag in ((best_tp, "best_throughput"), (best_eff, "best_efficiency")):
        if r is not None:
            r[flag] = True
    xs: list[float] = []
    ys: list[float] = []
    for p in pts:
        x, y = tc.over_repeats([p], "decode_step_ms", _step_ms(float(p["value"])))
        xs += x
        ys += y
    return {**head(group), "baseline_batch_size": base_b, "rows": rows,
            "best_throughput_batch_size": best_tp["batch_size"] if best_tp else None,
            "best_efficiency_batch_size": best_eff["batch_size"] if best_eff else None,
            "decode_step_knee": tc.knee_of(xs, ys, "batch_size", "ms_per_seq")}


def batch_notes(b: Mapping[str, Any]) -> tuple[str, ...]:
    """What a batch series allows to be said: where the decode step time starts rising faster."""
    text = tc.knee_text(b.get("decode_step_knee"), "decode step time", "batch_size", "ms_per_seq", tc.ms,
                        "per added sequence")
    return (f"{text}: throughput stops scaling beyond it",) if text else ()


def _pct_change(new: Any, old: Any) -> float | None:
    return 100.0 * (new - old) / old if new is not None and old else None


def _pct_saved(new: Any, old: Any) -> float | None:
    return 100.0 * (old - new) / old if new is not None and old else None


def quantization_comparison(group: Mapping[str, Any]) -> dict[str, Any]:
    """Each quantization against the unquantized point of the same model and dtype, like the user's summary."""
    pts = group["points"]
    base = next((p["metrics"] for p in pts if p["value"] == "none"), None)
    peak_key = figures.memory_figure(p["metrics"] for p in pts).key
    cuda = peak_key == figures.PEAK_CUDA_ALLOCATED_BYTES.key

    def weights(m: Mapping[str, Any]) -> float | None:
        w = m.get("weights_bytes")
        return None if w is None else w + (m.get("quant_state_bytes") or 0)

    rows = []
    for p in pts:
        m = p["metrics"]
        b = base or {}
        samples = [{"weights_bytes": weights(x), "peak_bytes": x.get(peak_key), **{k: x.get(k) for k in QUANT_KEYS}}
                   for x in p.get("samples", [m])]
        w, bw, peak, bpeak = weights(m), weights(b), m.get(peak_key), b.get(peak_key)
        tok, btok = figures.DECODE_TOK_S.read(m), figures.DECODE_TOK_S.read(b)
        load, bload = figures.LOAD_S.read(m), figures.LOAD_S.read(b)
        ttft, bttft = figures.TTFT_MS.read(m), figures.TTFT_MS.read(b)
        rows.append({
            "quantization": p["value"], "trial_ids": p["trial_ids"], "repeats": p.get("repeats", len(samples)),
            "estimates": tc.point_estimates({"samples": samples}, ("weights_bytes", "peak_bytes", *QUANT_KEYS)),
            "weights_bytes": w,
            "memory_saved_pct": _pct_saved(w, bw),
            "peak_bytes": peak, "peak_saved_bytes": bpeak - peak if peak is not None and bpeak is not None else None,
            "peak_saved_pct": _pct_saved(peak, bpeak),
            figures.DECODE_TOK_S.key: tok, "decode_speedup": tok / btok if tok is not None and btok else None,
            figures.TTFT_MS.key: ttft, "ttft_change_pct": _pct_change(ttft, bttft),
            figures.LOAD_S.key: load, "load_time_ratio": load / bload if load is not None and bload else None,
        })
    return {**head(group), "baseline": "none" if base is not None else None,
            "peak_source": "cuda_allocated" if cuda else "rss", "rows": rows}


STUDIES = (("max_new_tokens", "generate.max_new_tokens", max_new_tokens_curve),
           ("batch_size", "generate.batch_size", batch_scaling),
           ("quantization", "load.quantization", quantization_comparison))


NOTES: Mapping[str, Callable[[Mapping[str, Any]], tuple[str, ...]]] = {
    "max_new_tokens": curve_notes, "batch_size": batch_notes}


def study_of(kind: str, figures: Mapping[str, Any]) -> Study:
    """One series' figures (the JSON shape) as a ``Study``, with the notes its fits allow (``NOTES``)."""
    notes = NOTES.get(kind)
    return replace(Study.from_dict(kind, figures), notes=notes(figures) if notes else ())


def studies(trials: Iterable[TrialResult]) -> tuple[Study, ...]:
    """Every series of every study found in the trials, in report order (none for a knob never varied)."""
    trials = list(trials)
    return tuple(study_of(name, study(g)) for name, path, study in STUDIES for g in series(trials, path))
