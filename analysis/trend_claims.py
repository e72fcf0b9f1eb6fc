"""What a study may say about a trend, from loadprof.analysis.stats: fits over every repeat, the sentence a fit
allows, knees, point estimates, and the formula that explains an allocation growing with the cap.

One place for the wording, so the finding, the tables and every renderer state a trend the same way: a trend is
claimed only when its 95% slope interval excludes 0 (``effect is True``); an interval containing 0 reads "no
effect measurable at this noise (±X)", too few observations read "too few points to claim a trend".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from loadprof.analysis import stats
from loadprof.core.units import bytes_h

#: parameters of the line whose slope is claimed
LINE_PARAMS = 2
#: a quadratic coefficient this close (relative) to batch x heads x element bytes is that mask/bias
FORMULA_REL = 0.02
#: a linear allocation this close (relative) to batch x the config's KV bytes per token is the static KV cache
KV_REL = 0.02
ELEMENT_BYTES = ((4, "fp32"), (2, "half (fp16/bf16)"), (1, "bool/int8"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def over_repeats(points: Sequence[Mapping[str, Any]], key: str,
                 y_of: Callable[[Mapping[str, Any]], Any] | None = None) -> tuple[list[float], list[float]]:
    """(x, y) for every repeat of every point: each trial's own value, not the point's median."""
    xs: list[float] = []
    ys: list[float] = []
    for p in points:
        samples = p.get("samples", [p.get("metrics", {})])
        for m in samples:
            y = y_of(m) if y_of else m.get(key)
            if _number(y):
                xs.append(float(p["value"]))
                ys.append(float(y))
    return xs, ys


def point_estimates(point: Mapping[str, Any], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Median, IQR, bootstrap CI and n of each figure over the point's repeats (figures no repeat has are left out)."""
    samples = point.get("samples", [point.get("metrics", {})])
    out = {}
    for k in keys:
        e = stats.estimate(m.get(k) for m in samples)
        if e is not None:
            out[k] = e.to_dict()
    return out


def trend_of(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any] | None:
    """stats.trend as a JSON-ready dict (None below two distinct x)."""
    f = stats.trend(xs, ys)
    return f.to_dict() if f is not None else None


def slope_keys(f: Mapping[str, Any] | None, name: str, scale: float = 1.0) -> dict[str, Any]:
    """``name``, ``name_lo``, ``name_hi`` (the slope and its 95% interval, times ``scale``) and the effect."""
    if not f:
        return {name: None, f"{name}_lo": None, f"{name}_hi": None}
    lo, hi = f.get("slope_lo"), f.get("slope_hi")
    return {name: f["slope"] * scale, f"{name}_lo": lo * scale if lo is not None else None,
            f"{name}_hi": hi * scale if hi is not None else None}


def claimed(f: Mapping[str, Any] | None) -> bool:
    """A trend is claimed only when the slope's interval excludes 0."""
    return bool(f) and f.get("effect") is True


def claim(f: Mapping[str, Any] | None, unit: Callable[[float], str], per: str = "per token of cap") -> str:
    """The sentence a fit allows: the slope with its interval, "no effect measurable", or "too few points"."""
    if not f:
        return "not measured"
    if "effect" not in f:  # a report written before trends had intervals
        return f"{f.get('model')} (R^2 {f.get('r2', 0.0):.3f}; no interval in this report)"
    if f.get("withheld"):
        return f"not claimed: {f['withheld']} (timings drift with the run order there); rerun on an idle machine"
    if f["effect"] is None:
        n = f.get("n_obs", 0)
        return (f"too few points to claim a trend: {n} observation{'s' if n != 1 else ''} for "
                f"{LINE_PARAMS} parameters")
    lo, hi, slope = f["slope_lo"], f["slope_hi"], f["slope"]
    if f.get("exact") and f.get("model") == "constant":
        return "the same at every point (exact): no trend"
    if not f["effect"]:
        return f"no effect measurable at this noise (\u00b1{unit((hi - lo) / 2)} {per})"
    verb = "grows" if slope > 0 else "falls"
    ci = "exact" if lo == hi else f"95% CI {unit(lo)} .. {unit(hi)}"
    shape = f", {f['model']}" if f.get("model") == "quadratic" else ""
    return f"{verb} {unit(abs(slope))} {per} ({ci}{shape})"


def ms(v: float) -> str:
    """Milliseconds to 3 decimals, or 2 significant digits below 0.01 ms (a slope per token of cap is small)."""
    return f"{v:.3f} ms" if v == 0 or abs(v) >= 0.01 else f"{v:.2g} ms"


def knee_of(xs: Sequence[float], ys: Sequence[float], x_name: str, slope_name: str) -> dict[str, Any] | None:
    """stats.knee with unit-named keys: ``at_<x_name>``, ``<slope_name>_before`` / ``_after``, ``aicc_gain``."""
    k = stats.knee(xs, ys)
    if k is None:
        return None
    at = int(k.at) if float(k.at).is_integer() else k.at
    return {f"at_{x_name}": at, f"{slope_name}_before": k.slope_before, f"{slope_name}_after": k.slope_after,
            "aicc_gain": k.aicc_gain}


def knee_text(k: Mapping[str, Any] | None, what: str, x_name: str, slope_name: str, unit: Callable[[float], str],
              per: str) -> str | None:
    """e.g. "time per token starts rising faster at cap 512 (0.010 ms -> 0.090 ms per token of cap)"."""
    if not k:
        return None
    return (f"{what} starts rising faster at {x_name.replace('_', ' ')} {k[f'at_{x_name}']} "
            f"({unit(k[f'{slope_name}_before'])} -> {unit(k[f'{slope_name}_after'])} {per})")


# ---------------------------------------------------------------- allocation formulas

def _quadratic_formula(a: float, batch: int, heads: int | None) -> dict[str, Any]:
    cands = [(batch * heads * e, e, True, name) for e, name in ELEMENT_BYTES if heads] + \
            [(batch * e, e, False, name) for e, name in ELEMENT_BYTES]
    best = min(cands, key=lambda c: abs(a - c[0]) / c[0])
    out: dict[str, Any] = {"model": "quadratic", "bytes_per_cap2": a, "batch_size": batch,
                           "num_attention_heads": heads, "explained": False}
    lead = f"bytes \u2248 {bytes_h(a)}\u00b7cap\u00b2"
    if abs(a - best[0]) > FORMULA_REL * best[0]:
        out["text"] = (f"{lead}: not batch x heads x 4/2/1 B (an attention mask or bias); a per-cap\u00b2 buffer "
                       "of another shape")
        return out
    value, elem, per_head, name = best
    parts = ([f"batch {batch}"] if batch != 1 else []) + ([f"{heads} heads"] if per_head else []) + [f"{elem} B"]
    mask = "mask" if elem == 1 else "bias"
    out.update(explained=True, element_bytes=elem, per_head=per_head, formula_bytes_per_cap2=value,
               text=f"{lead} = {' x '.join(parts)}: a{'n' if name[0] in 'aefhio' else ''} {name} "
                    f"(prompt + cap)\u00b2 {mask} {'per head' if per_head else 'shared by the heads'}")
    return out


def alloc_formula(f: Mapping[str, Any] | None, batch: int, heads: int | None, kv_per_token: Any,
                  kv_formula: str | None) -> dict[str, Any] | None:
    """Explain a growing allocation: a quadratic coefficient as batch x heads x {4,2,1} B or batch x {4,2,1} B
    ((prompt + cap)² attention mask/bias per head or shared), a linear slope as batch x the KV bytes per token."""
    if not f or f.get("model") not in ("linear", "quadratic"):
        return None
    if f["model"] == "quadratic":
        a = f["coefficients"]["quadratic"][0]
        return _quadratic_formula(a, batch, heads) if a > 0 else None
    slope = f["slope"]
    out: dict[str, Any] = {"model": "linear", "bytes_per_cap_token": slope, "batch_size": batch,
                           "kv_bytes_per_token": kv_per_token, "explained": False}
    if _number(kv_per_token) and kv_per_token > 0:
        expect = batch * kv_per_token
        out["formula_bytes_per_cap_token"] = expect
        if abs(slope - expect) <= KV_REL * expect:
            exact = "exactly " if abs(slope - expect) < 0.5 else ""
            how = f" ({kv_formula})" if kv_formula else ""
            out.update(explained=True, text=f"{bytes_h(slope)} per token of cap is {exact}the static KV cache: "
                                            f"batch {batch} x {bytes_h(kv_per_token)} per token{how}")
            return out
    out["text"] = f"{bytes_h(slope)} per token of cap (not the KV cache formula: a buffer sized by the cap)"
    return out
