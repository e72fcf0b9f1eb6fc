"""The max_new_tokens study: time and pre-allocated bytes against the cap, and the finding it makes.

Every figure is fitted over every repeat with loadprof.analysis.stats.trend (never over the medians alone); a
time trend is claimed only when its slope interval excludes 0, the allocation growth (deterministic bytes) is
explained by its formula (the static KV cache, a (prompt + cap)² mask or bias), and a knee says where time per
token starts rising faster. Pure: runs in the parent over JSON-ready dicts, never imports torch.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence


from loadprof.core import figures
from loadprof.analysis import trend_claims as tc
from loadprof.analysis.stats import TREND_METHOD, predict
from loadprof.results.model import Finding, Study
from loadprof.core.units import bytes_h, ms, pct

GROWTH_SHARE = 0.01          # bytes growing less than 1% of their mean over the cap range: no growth
GROWTH_MIN_BYTES = 64 * 2**10
HIGH_SAVING_SHARE = 0.10     # of the largest cap's generate call
HIGH_SAVING_BYTES = 256 * 2**20
FIT_KEYS = (figures.GENERATE_CALL_S.key, figures.TTFT_MS.key, "per_token_ms_p50", "generate_start_alloc_bytes")
POINT_KEYS = (*FIT_KEYS, "new_tokens")


def covering_cap(observed: Iterable[int]) -> int | None:
    """Smallest power of two >= 1.25 x the longest observed answer, at least 16."""
    longest = max(observed, default=None)
    if longest is None:
        return None
    return max(16, 2 ** math.ceil(math.log2(max(1.0, 1.25 * longest))))


def head(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("vary", "description", "fixed", "trial_ids")}


def _saving(f: Mapping[str, Any] | None, hi: float, lo: float, model: str | None = None) -> float | None:
    """What the fit predicts is saved by lowering the cap from hi to lo (None when nothing is)."""
    if f is None or lo >= hi:
        return None
    s = predict(f, hi, model) - predict(f, lo, model)
    return s if s > 0 else None


def _sites(points: Sequence[Mapping[str, Any]], total_slope: float | None) -> list[dict[str, Any]]:
    """Fit each allocation site's alive bytes vs the cap (every repeat); the sites whose bytes grow."""
    measured: list[tuple[float, dict[tuple[str, str], float]]] = []
    for p in points:
        for m in p.get("samples", [p["metrics"]]):
            if isinstance(m.get("generate_start_alloc_sites"), list):
                by_site = {(s["site"], str(s.get("op", ""))): float(s.get("alive_bytes", s.get("bytes")) or 0)
                           for s in m["generate_start_alloc_sites"]}
                measured.append((float(p["value"]), by_site))
    if not measured:
        return []
    caps = [c for c, _ in measured]
    largest = max(caps)
    found = []
    for site, op in dict.fromkeys(k for _, by in measured for k in by):
        ys = [by.get((site, op), 0.0) for _, by in measured]  # a site missing in a trial allocated nothing there
        f = tc.trend_of(caps, ys)
        if f and f["slope"] > 0 and f["model"] != "constant":
            found.append({"site": site, "op": op, "bytes_per_cap_token": f["slope"], "model": f["model"],
                          "r2": f["r2"], "effect": f["effect"],
                          "alive_bytes_at_largest_cap": max(y for c, y in zip(caps, ys) if c == largest)})
    denom = total_slope if total_slope and total_slope > 0 else sum(s["bytes_per_cap_token"] for s in found)
    for s in found:
        s["share"] = s["bytes_per_cap_token"] / denom if denom else None
    return sorted(found, key=lambda s: -s["bytes_per_cap_token"])


def _growth(fb: Mapping[str, Any] | None, cap_range: float) -> str | None:
    """None without the metric; the model when the bytes grow (claimed, or an exact fit), else "none"."""
    if fb is None:
        return None
    small = fb["slope"] * cap_range < max(GROWTH_SHARE * abs(fb["mean"]), GROWTH_MIN_BYTES)
    grows = fb["model"] != "constant" and (fb.get("effect") is True or fb.get("exact", False))
    return fb["model"] if grows and not small else "none"


def _config(pts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    est = next((p["metrics"].get("estimate") for p in pts if isinstance(p["metrics"].get("estimate"), Mapping)), {})
    return {"heads": est.get("num_attention_heads") or None, "kv": est.get("kv_bytes_per_token"),
            "kv_formula": (est.get("formulas") or {}).get("kv_bytes_per_token")}


def max_new_tokens_curve(group: Mapping[str, Any]) -> dict[str, Any]:
    """Time and pre-allocated bytes against the cap, fitted over every repeat, with intervals, knees, the formula
    behind the growth, the allocation sites and the cap that would do."""
    pts = group["points"]
    rows = [{"cap": p["value"], "trial_ids": p["trial_ids"], "repeats": p.get("repeats", len(p["trial_ids"])),
             **{k: p["metrics"].get(k) for k in POINT_KEYS}, "estimates": tc.point_estimates(p, POINT_KEYS)}
            for p in pts]
    caps = [r["cap"] for r in rows]
    obs = {k: tc.over_repeats(pts, k) for k in FIT_KEYS}
    fits = {k: tc.trend_of(*obs[k]) for k in FIT_KEYS}
    fb, fg, ft = fits["generate_start_alloc_bytes"], fits[figures.GENERATE_CALL_S.key], fits[figures.TTFT_MS.key]
    growth = _growth(fb, max(caps) - min(caps))
    grows = growth in ("linear", "quadratic")
    busy = sum(p.get("busy", 0) for p in pts)
    if busy and fg:  # a neighbour's load drifts with the run order, which a knob's values follow: no time claim
        fg = fits[figures.GENERATE_CALL_S.key] = {
            **fg, "effect": None, "withheld": f"{busy} of {len(group['trial_ids'])} trials ran on a busy machine"}
        if ft:
            ft = fits[figures.TTFT_MS.key] = {**ft, "effect": None, "withheld": fg["withheld"]}
    time_trend = (fg["model"] if fg["model"] != "constant" else "linear") if tc.claimed(fg) else "none"
    observed = sorted({n for p in pts for n in p.get("new_tokens_seen", [])})
    cover, largest = covering_cap(observed), max(caps)
    cfg = _config(pts)
    batch = int(group["fixed"].get("generate.batch_size") or 1)
    alloc_knee = (tc.knee_of(*obs["generate_start_alloc_bytes"], "cap", "bytes_per_cap_token")
                  if fb and not (fb["model"] == "quadratic" and fb["exact"]) else None)
    saving_ms = None
    if cover and time_trend != "none":
        s = _saving(fg, largest, cover, time_trend)
        saving_ms = s * 1e3 if s else None
    return {
        **head(group), "points": rows, "fits": fits, "trend_method": TREND_METHOD,
        **tc.slope_keys(fb, "alloc_bytes_per_cap_token"),
        **tc.slope_keys(fg, "generate_call_ms_per_cap_token", 1e3),
        **tc.slope_keys(ft, "ttft_ms_per_cap_token"),
        **tc.slope_keys(fits["per_token_ms_p50"], "per_token_ms_per_cap_token"),
        "alloc_effect": fb["effect"] if fb else None, "generate_call_effect": fg["effect"] if fg else None,
        "ttft_effect": ft["effect"] if ft else None, "busy_trials": busy,
        "growth": growth, "generate_call_trend": time_trend,
        "alloc_formula": tc.alloc_formula(fb, batch, cfg["heads"], cfg["kv"], cfg["kv_formula"]) if grows else None,
        "per_token_knee": tc.knee_of(*obs["per_token_ms_p50"], "cap", "ms_per_cap_token"),
        "alloc_knee": alloc_knee,
        "sites": _sites(pts, fb["slope"] if fb else None) if grows else [],
        "observed_new_tokens": observed, "covering_cap": cover, "largest_cap": largest,
        "largest_cap_generate_call_s": rows[-1][figures.GENERATE_CALL_S.key],
        "saving_bytes": _saving(fb, largest, cover) if grows and cover else None,
        "saving_ms": saving_ms,
    }


def time_claim(c: Mapping[str, Any]) -> str:
    """What the generate call does with the cap, as the fit over every repeat allows it to be said."""
    f = (c.get("fits") or {}).get(figures.GENERATE_CALL_S.key)
    return tc.claim(f, lambda v: tc.ms(v * 1e3))


def per_token_knee_text(c: Mapping[str, Any]) -> str | None:
    return tc.knee_text(c.get("per_token_knee"), "time per token", "cap", "ms_per_cap_token", tc.ms,
                        "per token of cap")


def curve_notes(c: Mapping[str, Any]) -> tuple[str, ...]:
    """What a max_new_tokens curve allows to be said, in report order: each trend as its fit allows it, the
    knees, the formula behind the growth, the growing sites and the covering cap."""
    fits = c.get("fits", {})
    fb = fits.get("generate_start_alloc_bytes")
    lines: list[str | None] = [
        f"generate call: {time_claim(c)}" if figures.GENERATE_CALL_S.read(fits) else None,
        f"TTFT: {tc.claim(figures.TTFT_MS.read(fits), tc.ms)}" if figures.TTFT_MS.read(fits) else None,
        per_token_knee_text(c),
        f"alloc at generate start: {tc.claim(fb, bytes_h)}; growth: {c.get('growth')}" if fb else None,
        (c.get("alloc_formula") or {}).get("text"),
        tc.knee_text(c.get("alloc_knee"), "alloc at generate start", "cap", "bytes_per_cap_token", bytes_h,
                     "per token of cap"),
    ]
    for s in c.get("sites", [])[:5]:
        share = f", {pct(s['share'])} of the growth" if s.get("share") is not None else ""
        lines.append(f"{s['site']} {s['op']}: {bytes_h(s['bytes_per_cap_token'])} per token of cap{share}")
    if c.get("observed_new_tokens"):
        save = [x for x in (c.get("saving_bytes") and bytes_h(c["saving_bytes"]),
                            c.get("saving_ms") and ms(c["saving_ms"])) if x]
        lines.append(f"observed new tokens: {', '.join(map(str, c['observed_new_tokens']))}; covering cap "
                     f"{c.get('covering_cap')}"
                     + (f" saves {' and '.join(save)} vs cap {c.get('largest_cap')}" if save else ""))
    return tuple(line.strip() for line in lines if line)


# ---------------------------------------------------------------- finding

def _title(c: Mapping[str, Any], what: str) -> str:
    form = c.get("alloc_formula") or {}
    if c["growth"] == "quadratic" and form.get("bytes_per_cap2"):
        return f"{what} grows with the square of max_new_tokens: {bytes_h(form['bytes_per_cap2'])} per cap\u00b2"
    return f"{what} grows {bytes_h(c['alloc_bytes_per_cap_token'])} per token of max_new_tokens"


def _detail(c: Mapping[str, Any], fb: Mapping[str, Any]) -> str:
    form = c.get("alloc_formula") or {}
    cover, observed = c.get("covering_cap"), c.get("observed_new_tokens") or []
    save_b, save_ms = c.get("saving_bytes"), c.get("saving_ms")
    r2 = f" (R^2 {fb['r2']:.3f})" if "r2" in fb else ""
    knee = per_token_knee_text(c)
    return (f"allocated at generate start and alive at the first token: {fb['model']} in the cap{r2} over caps "
            f"{c['points'][0]['cap']}..{c['largest_cap']}"
            + (f"; {form['text']}" if form.get("text") else "")
            + f"; generate call: {time_claim(c)}"
            + (f"; {knee}" if knee else "")
            + (f"; answers were {', '.join(map(str, observed))} tokens long" if observed else "")
            + (f"; at cap {c['largest_cap']}, a cap of {cover} would save "
               + " and ".join(x for x in (save_b and bytes_h(save_b), save_ms and ms(save_ms)) if x)
               if cover and (save_b or save_ms) else "") + ".")


def _evidence(c: Mapping[str, Any], fb: Mapping[str, Any], study: Study) -> dict[str, Any]:
    sites = c.get("sites") or []
    form = c.get("alloc_formula") or {}
    keys = ("alloc_bytes_per_cap_token", "generate_call_ms_per_cap_token", "generate_call_ms_per_cap_token_lo",
            "generate_call_ms_per_cap_token_hi", "generate_call_effect", "ttft_ms_per_cap_token",
            "observed_new_tokens", "covering_cap", "largest_cap", "saving_bytes", "saving_ms", "per_token_knee")
    return {"function": sites[0]["site"] if sites else "", "series": study.description, "growth": c["growth"],
            "fit_model": fb["model"], "r2": fb.get("r2"), **{k: c.get(k) for k in keys},
            "alloc_bytes_per_cap2": form.get("bytes_per_cap2"), "alloc_formula": form.get("text"),
            "sites": [{k: s[k] for k in ("site", "op", "bytes_per_cap_token", "share")} for s in sites]}


def preallocation_findings(studies: Iterable[Study]) -> list[Finding]:
    """One finding per max_new_tokens series whose generate-start allocation grows with the cap."""
    out = []
    for study in studies:
        c = study.figures
        if study.kind != "max_new_tokens" or c.get("growth") not in ("linear", "quadratic"):
            continue
        fb = c["fits"]["generate_start_alloc_bytes"]
        sites = c.get("sites") or []
        culprit = ", ".join(f"{s['site']} ({s['op']})" if s.get("op") else s["site"] for s in sites[:2])
        call_s, save_ms, save_b = c.get("largest_cap_generate_call_s"), c.get("saving_ms"), c.get("saving_bytes")
        high = bool((save_ms and call_s and save_ms > HIGH_SAVING_SHARE * call_s * 1e3)
                    or (save_b and save_b > HIGH_SAVING_BYTES))
        static = study.fixed.get("generate.cache_implementation") == "static"
        cover, observed = c.get("covering_cap"), c.get("observed_new_tokens") or []
        what = f"pre-allocation in {culprit}" if culprit else "memory allocated before the first token"
        alt = ("or use a dynamic cache (cache_implementation: dynamic) so nothing is sized by the cap" if static else
               "or make the culprit allocate as tokens arrive instead of sizing its buffers by max_new_tokens")
        fix = (f"set max_new_tokens to {cover} (covers the observed lengths), {alt}" if cover and observed
               else f"set max_new_tokens to the longest answer you need, {alt}")
        out.append(Finding(
            "max_new_tokens_preallocation", "high" if high else "medium", _title(c, what), _detail(c, fb), fix,
            _evidence(c, fb, study), study.trial_ids, study.description, mistake=True,
            stake_s=save_ms / 1e3 if save_ms else None, stake_bytes=save_b,
            stake_basis="the fit's prediction at the largest cap minus at the covering cap (time only when its "
                        "trend is claimed)"))
    return out
