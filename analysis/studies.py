"""Cross-trial studies: how one knob (max_new_tokens, batch size, quantization) moves the measurements.

Pure analysis over finished TrialResults, JSON-ready dicts with units in key names. It runs in the parent,
so it never imports torch or transformers. The questions come from the user's notes: why a larger
max_new_tokens made generation slower although answers stopped early (buffers sized by the cap before the
first token), how throughput scales with parallel sequences, and what quantization saves.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from loadprof.results import Finding, Study, TrialResult
from loadprof.strategies.model import Strategy
from loadprof.units import bytes_h

MODELS = ("constant", "linear", "quadratic")
R2_TOLERANCE = 0.01          # the simplest model within this of the best R^2 wins
TREND_R2 = 0.8               # below this a time "trend" is run-to-run noise: no trend or saving is claimed
GROWTH_SHARE = 0.01          # bytes growing less than 1% of their mean over the cap range: no growth
GROWTH_MIN_BYTES = 64 * 2**10
HIGH_SAVING_SHARE = 0.10     # of the largest cap's generate call
HIGH_SAVING_BYTES = 256 * 2**20
QUANT_ORDER = ("none", "bnb-8bit", "bnb-4bit-nf4", "bnb-4bit-fp4")
#: knobs named in a series' description (the varied one left out)
FIXED_KNOBS = ("load.dtype", "load.quantization", "load.device_map", "generate.prompt_tokens",
               "generate.max_new_tokens", "generate.batch_size", "generate.cache_implementation",
               "generate.stop_after")
#: paths that do not change what is measured (repeat_index lives on the trial, not the strategy)
IGNORED_PATHS = ("label", "generate.repeats")


# ---------------------------------------------------------------- grouping

def _without(d: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(d, default=str))
    for path in paths:
        *head, last = path.split(".")
        node = out
        for part in head:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


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


def series(trials: Iterable[TrialResult], vary: str) -> list[dict[str, Any]]:
    """Group ok trials that differ only in ``vary``; keep groups with >= 2 values, medians over repeats.

    Everything else in the strategy (model, load dtype, device map, prompt, cache...) is part of the key, so a
    4-bit point is compared with the unquantized one of the same compute dtype only.
    """
    groups: dict[str, dict[Any, list[TrialResult]]] = {}
    reps: dict[str, Strategy] = {}
    for t in trials:
        value = t.strategy.at(vary)
        if not t.ok or value is None:
            continue
        key = json.dumps(_without(t.strategy.to_dict(), (*IGNORED_PATHS, vary)), sort_keys=True)
        groups.setdefault(key, {}).setdefault(json.dumps(value, sort_keys=True, default=str), []).append(t)
        reps.setdefault(key, t.strategy)
    out = []
    for key, by_value in groups.items():
        if len(by_value) < 2:
            continue
        points = []
        for ts in by_value.values():
            metric_keys = list(dict.fromkeys(k for t in ts for k in t.metrics))
            points.append({
                "value": ts[0].strategy.at(vary), "trial_ids": [t.trial_id for t in ts], "repeats": len(ts),
                "metrics": {k: _median([t.metrics.get(k) for t in ts]) for k in metric_keys},
                "new_tokens_seen": sorted({n for t in ts if (n := t.metrics.get("new_tokens")) is not None}),
            })
        points.sort(key=lambda p: _order(p["value"]))
        fixed, desc = _describe(reps[key], vary)
        out.append({"vary": vary, "description": desc, "fixed": fixed,
                    "trial_ids": [i for p in points for i in p["trial_ids"]], "points": points})
    out.sort(key=lambda g: g["description"])
    return out


def _head(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("vary", "description", "fixed", "trial_ids")}


# ---------------------------------------------------------------- fits

def fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any] | None:
    """Least-squares constant/linear/quadratic fits with R^2; the simplest within R2_TOLERANCE of the best wins.

    R^2 of the constant fit is 0 by definition (it is the mean); if every y is equal the constant is exact.
    Quadratic needs three distinct x. ``slope`` is the linear fit's, in y units per x unit.
    """
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    degrees = (0, 1, 2) if len(set(x.tolist())) >= 3 else (0, 1)
    coefs = {MODELS[d]: np.polyfit(x, y, d) for d in degrees}
    mean = float(y.mean())
    ss_tot = float(((y - mean) ** 2).sum())
    if float(np.ptp(y)) <= 1e-12 * max(1.0, abs(mean)):
        r2 = {MODELS[d]: 1.0 for d in degrees}
        model = "constant"
        coefs = {MODELS[d]: np.array([0.0] * d + [mean]) for d in degrees}  # exact; no rounding-noise slope
    else:
        r2 = {MODELS[d]: 0.0 if d == 0 else
              round(1.0 - float(((y - np.polyval(coefs[MODELS[d]], x)) ** 2).sum()) / ss_tot, 9) for d in degrees}
        best = max(r2.values())
        model = next(m for m in MODELS if m in r2 and r2[m] >= best - R2_TOLERANCE)
    return {"model": model, "r2": r2[model], "r2_by_model": r2, "n_points": len(pairs),
            "coefficients": {m: [float(c) for c in cs] for m, cs in coefs.items()},
            "slope": float(coefs["linear"][0]), "mean": mean}


def _predict(f: Mapping[str, Any], x: float) -> float:
    return float(np.polyval(f["coefficients"][f["model"]], x))


def _saving(f: Mapping[str, Any] | None, hi: float, lo: float) -> float | None:
    """What the chosen model predicts is saved by lowering the cap from hi to lo (None when nothing is)."""
    if f is None or lo >= hi:
        return None
    s = _predict(f, hi) - _predict(f, lo)
    return s if s > 0 else None


def covering_cap(observed: Iterable[int]) -> int | None:
    """Smallest power of two >= 1.25 x the longest observed answer, at least 16."""
    longest = max(observed, default=None)
    if longest is None:
        return None
    return max(16, 2 ** math.ceil(math.log2(max(1.0, 1.25 * longest))))


def _sites(points: Sequence[Mapping[str, Any]], total_slope: float | None) -> list[dict[str, Any]]:
    """Fit each allocation site's alive bytes vs the cap; the sites whose bytes grow, largest slope first."""
    measured = [p for p in points if isinstance(p["metrics"].get("generate_start_alloc_sites"), list)]
    rows: dict[tuple[str, str], dict[float, float]] = {}
    for p in measured:
        for s in p["metrics"]["generate_start_alloc_sites"]:
            alive = s.get("alive_bytes", s.get("bytes")) or 0
            rows.setdefault((s["site"], str(s.get("op", ""))), {})[float(p["value"])] = float(alive)
    caps = [float(p["value"]) for p in measured]
    found = []
    for (site, op), by_cap in rows.items():
        f = fit(caps, [by_cap.get(c, 0.0) for c in caps])  # a site missing at a cap allocated nothing there
        if f and f["slope"] > 0:
            found.append({"site": site, "op": op, "bytes_per_cap_token": f["slope"], "model": f["model"],
                          "r2": f["r2"], "alive_bytes_at_largest_cap": by_cap.get(caps[-1], 0.0)})
    denom = total_slope if total_slope and total_slope > 0 else sum(s["bytes_per_cap_token"] for s in found)
    for s in found:
        s["share"] = s["bytes_per_cap_token"] / denom if denom else None
    return sorted(found, key=lambda s: -s["bytes_per_cap_token"])


# ---------------------------------------------------------------- studies

def max_new_tokens_curve(group: Mapping[str, Any]) -> dict[str, Any]:
    """Time and pre-allocated bytes against the cap, fitted, attributed to sites, with the cap that would do."""
    pts = group["points"]
    rows = [{"cap": p["value"], "trial_ids": p["trial_ids"],
             **{k: p["metrics"].get(k) for k in ("generate_call_s", "ttft_ms", "per_token_ms_p50",
                                                  "generate_start_alloc_bytes", "new_tokens")}} for p in pts]
    caps = [r["cap"] for r in rows]
    fits = {k: fit(caps, [r[k] for r in rows]) for k in ("generate_call_s", "ttft_ms", "generate_start_alloc_bytes")}
    fb, fg, ft = fits["generate_start_alloc_bytes"], fits["generate_call_s"], fits["ttft_ms"]
    cap_range = max(caps) - min(caps)
    growth = None
    if fb is not None:
        small = fb["slope"] * cap_range < max(GROWTH_SHARE * fb["mean"], GROWTH_MIN_BYTES)
        growth = "none" if small else fb["model"]
    grows = growth in ("linear", "quadratic")
    time_trend = fg["model"] if fg and fg["model"] != "constant" and fg["r2"] >= TREND_R2 else "none"
    observed = sorted({n for p in pts for n in p.get("new_tokens_seen", [])})
    cover = covering_cap(observed)
    largest = max(caps)
    return {
        **_head(group), "points": rows, "fits": fits,
        "alloc_bytes_per_cap_token": fb["slope"] if fb else None,
        "generate_call_ms_per_cap_token": fg["slope"] * 1e3 if fg else None,
        "ttft_ms_per_cap_token": ft["slope"] if ft else None,
        "growth": growth, "generate_call_trend": time_trend, "trend_min_r2": TREND_R2,
        "sites": _sites(pts, fb["slope"] if fb else None) if grows else [],
        "observed_new_tokens": observed, "covering_cap": cover, "largest_cap": largest,
        "largest_cap_generate_call_s": rows[-1]["generate_call_s"],
        "saving_bytes": _saving(fb, largest, cover) if grows and cover else None,
        "saving_ms": (s * 1e3 if (s := _saving(fg, largest, cover)) else None)
        if cover and time_trend != "none" else None,
    }


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


def batch_scaling(group: Mapping[str, Any]) -> dict[str, Any]:
    """Throughput vs batch like a parallel-workers table: speedup over the smallest batch, efficiency, KV size.

    Efficiency = speedup / (batch / smallest batch). The best-efficiency row is chosen among the batches above
    the smallest (the baseline is 100% by construction).
    """
    pts = group["points"]
    base_b, base_tok = pts[0]["value"], pts[0]["metrics"].get("decode_tok_s")
    rows = []
    for p in pts:
        m, b = p["metrics"], p["value"]
        tok = m.get("decode_tok_s")
        speedup = tok / base_tok if tok is not None and base_tok else None
        per_tok = (m.get("estimate") or {}).get("kv_bytes_per_token")
        kv_tokens = _kv_tokens({**group["fixed"], group["vary"]: b}, m.get("new_tokens"))
        per_seq = per_tok * kv_tokens if per_tok is not None and kv_tokens is not None else None
        rows.append({"batch_size": b, "trial_ids": p["trial_ids"], "decode_tok_s": tok,
                     "decode_tok_s_per_seq": m.get("decode_tok_s_per_seq"), "ttft_ms": m.get("ttft_ms"),
                     "speedup": speedup,
                     "efficiency_pct": 100.0 * speedup / (b / base_b) if speedup is not None else None,
                     "kv_bytes_per_seq": per_seq, "kv_bytes_total": per_seq * b if per_seq is not None else None,
                     "best_efficiency": False, "best_throughput": False})
    best_tp = max((r for r in rows if r["decode_tok_s"] is not None), key=lambda r: r["decode_tok_s"], default=None)
    best_eff = max((r for r in rows[1:] if r["efficiency_pct"] is not None), key=lambda r: r["efficiency_pct"],
                   default=None)
    for r, flag in ((best_tp, "best_throughput"), (best_eff, "best_efficiency")):
        if r is not None:
            r[flag] = True
    return {**_head(group), "baseline_batch_size": base_b, "rows": rows,
            "best_throughput_batch_size": best_tp["batch_size"] if best_tp else None,
            "best_efficiency_batch_size": best_eff["batch_size"] if best_eff else None}


def _pct_change(new: Any, old: Any) -> float | None:
    return 100.0 * (new - old) / old if new is not None and old else None


def _pct_saved(new: Any, old: Any) -> float | None:
    return 100.0 * (old - new) / old if new is not None and old else None


def quantization_comparison(group: Mapping[str, Any]) -> dict[str, Any]:
    """Each quantization against the unquantized point of the same model and dtype, like the user's summary."""
    pts = group["points"]
    base = next((p["metrics"] for p in pts if p["value"] == "none"), None)
    cuda = all(p["metrics"].get("peak_cuda_allocated_bytes") is not None for p in pts)
    peak_key = "peak_cuda_allocated_bytes" if cuda else "peak_rss_bytes"

    def weights(m: Mapping[str, Any]) -> float | None:
        w = m.get("weights_bytes")
        return None if w is None else w + (m.get("quant_state_bytes") or 0)

    rows = []
    for p in pts:
        m = p["metrics"]
        b = base or {}
        w, bw, peak, bpeak = weights(m), weights(b), m.get(peak_key), b.get(peak_key)
        tok, btok, load, bload = m.get("decode_tok_s"), b.get("decode_tok_s"), m.get("load_s"), b.get("load_s")
        rows.append({
            "quantization": p["value"], "trial_ids": p["trial_ids"], "weights_bytes": w,
            "memory_saved_pct": _pct_saved(w, bw),
            "peak_bytes": peak, "peak_saved_bytes": bpeak - peak if peak is not None and bpeak is not None else None,
            "peak_saved_pct": _pct_saved(peak, bpeak),
            "decode_tok_s": tok, "decode_speedup": tok / btok if tok is not None and btok else None,
            "ttft_ms": m.get("ttft_ms"), "ttft_change_pct": _pct_change(m.get("ttft_ms"), b.get("ttft_ms")),
            "load_s": load, "load_time_ratio": load / bload if load is not None and bload else None,
        })
    return {**_head(group), "baseline": "none" if base is not None else None,
            "peak_source": "cuda_allocated" if cuda else "rss", "rows": rows}


STUDIES = (("max_new_tokens", "generate.max_new_tokens", max_new_tokens_curve),
           ("batch_size", "generate.batch_size", batch_scaling),
           ("quantization", "load.quantization", quantization_comparison))


def studies(trials: Iterable[TrialResult]) -> tuple[Study, ...]:
    """Every series of every study found in the trials, in report order (none for a knob never varied)."""
    trials = list(trials)
    return tuple(Study.from_dict(name, study(g)) for name, path, study in STUDIES for g in series(trials, path))


# ---------------------------------------------------------------- findings

def preallocation_findings(studies: Iterable[Study]) -> list[Finding]:
    """One finding per max_new_tokens series whose generate-start allocation grows with the cap."""
    out = []
    for study in studies:
        c = study.figures
        if study.kind != "max_new_tokens" or c.get("growth") not in ("linear", "quadratic"):
            continue
        per_tok, fb = c["alloc_bytes_per_cap_token"], c["fits"]["generate_start_alloc_bytes"]
        sites = c.get("sites") or []
        culprit = ", ".join(f"{s['site']} ({s['op']})" if s.get("op") else s["site"] for s in sites[:2])
        call_s, save_ms, save_b = c.get("largest_cap_generate_call_s"), c.get("saving_ms"), c.get("saving_bytes")
        high = bool((save_ms and call_s and save_ms > HIGH_SAVING_SHARE * call_s * 1e3)
                    or (save_b and save_b > HIGH_SAVING_BYTES))
        ms_tok = c.get("generate_call_ms_per_cap_token")
        static = study.fixed.get("generate.cache_implementation") == "static"
        cover, observed = c.get("covering_cap"), c.get("observed_new_tokens") or []
        what = f"pre-allocation in {culprit}" if culprit else "memory allocated before the first token"
        title = f"{what} grows {bytes_h(per_tok)} per token of max_new_tokens"
        detail = (f"allocated at generate start and alive at the first token: {fb['model']} in the cap "
                  f"(R^2 {fb['r2']:.3f}) over caps {c['points'][0]['cap']}..{c['largest_cap']}"
                  + (f"; the generate call grows {ms_tok:.3f} ms per token of cap"
                     if ms_tok is not None and c.get("generate_call_trend", "none") != "none" else
                     "; no trend in generate time above run-to-run noise")
                  + (f"; answers were {', '.join(map(str, observed))} tokens long" if observed else "")
                  + (f"; at cap {c['largest_cap']}, a cap of {cover} would save "
                     + " and ".join(x for x in (save_b and bytes_h(save_b), save_ms and f"{save_ms:.1f} ms") if x)
                     if cover and (save_b or save_ms) else "") + ".")
        alt = ("or use a dynamic cache (cache_implementation: dynamic) so nothing is sized by the cap" if static else
               "or make the culprit allocate as tokens arrive instead of sizing its buffers by max_new_tokens")
        fix = (f"set max_new_tokens to {cover} (covers the observed lengths), {alt}" if cover and observed
               else f"set max_new_tokens to the longest answer you need, {alt}")
        out.append(Finding(
            "max_new_tokens_preallocation", "high" if high else "medium", title, detail, fix,
            {"function": sites[0]["site"] if sites else "", "series": study.description, "growth": c["growth"],
             "fit_model": fb["model"], "r2": fb["r2"], "alloc_bytes_per_cap_token": per_tok,
             "generate_call_ms_per_cap_token": ms_tok, "ttft_ms_per_cap_token": c.get("ttft_ms_per_cap_token"),
             "observed_new_tokens": observed, "covering_cap": cover, "largest_cap": c["largest_cap"],
             "saving_bytes": save_b, "saving_ms": save_ms,
             "sites": [{k: s[k] for k in ("site", "op", "bytes_per_cap_token", "share")} for s in sites]},
            study.trial_ids, study.description, mistake=True, stake_s=save_ms / 1e3 if save_ms else None,
            stake_bytes=save_b, stake_basis="the chosen fit's prediction at the largest cap minus at the covering cap"))
    return out
