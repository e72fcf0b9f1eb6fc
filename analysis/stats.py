"""Spread, significance and trends over repeated measurements: the one place decisions get their statistics.

Pure and deterministic (numpy only, a fixed bootstrap seed): the same report.json always gives the same
verdicts. Three questions, one rule each, so every renderer and decision states the same method:

- how noisy is a figure: median with its IQR and a bootstrap CI of the median (``estimate``);
- do two sets of repeats differ: a bootstrap CI of the difference of medians that must exclude 0, with at
  least ``MIN_REPEATS`` per side (``compare``). At n = 3 per side this amounts to "every repeat of one beats
  every repeat of the other"; fewer repeats never decide anything;
- does a figure trend over a knob: least squares over every repeat (not medians), a t-interval on the slope
  from the residuals, and a richer model (quadratic, a knee) only when AICc prefers it by more than
  ``AICC_MARGIN`` and there are at least two observations per parameter (``trend``, ``knee``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from loadprof.core.conclusions import Estimate

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
#: repeats per side before two figures may be called different
MIN_REPEATS = 3
#: AICc points a richer model must gain (the usual "substantial support" threshold)
AICC_MARGIN = 2.0
#: observations per fitted parameter before a model may be claimed
OBS_PER_PARAM = 2
#: a fit this close to exact, relative to the data's scale, counts as exact (byte counts are deterministic)
EXACT_REL = 1e-9
#: a knee: the right segment's slope at least this many times the left's
KNEE_RATIO = 2.0

COMPARE_METHOD = (f"bootstrap {CONFIDENCE:.0%} CI of the difference of medians ({RESAMPLES} resamples, seed {SEED}); "
                  f"different only when it excludes 0, with >= {MIN_REPEATS} repeats per side")
TREND_METHOD = (f"least squares over every repeat, {CONFIDENCE:.0%} t-interval on the slope from the residuals; "
                f"quadratic or a knee only when AICc improves by > {AICC_MARGIN:g} with >= {OBS_PER_PARAM} "
                "observations per parameter (or the richer model is exact with a point to spare)")

# two-sided 97.5% quantiles of Student's t, df 1..30; beyond, the Cornish-Fisher expansion (error < 1e-3)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The t quantile for a two-sided 95% interval with ``df`` degrees of freedom."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _clean(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _boot_medians(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(x), size=(RESAMPLES, len(x)))
    return np.median(x[idx], axis=1)


def _ci(samples: np.ndarray) -> tuple[float, float]:
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


# ---------------------------------------------------------------- one figure

def estimate(values: Iterable[Any]) -> Estimate | None:
    """Median, IQR and a bootstrap CI of the median of the numbers in ``values`` (None when there are none)."""
    xs = _clean(values)
    if not xs:
        return None
    x = np.array(xs)
    q1, q3 = (float(v) for v in np.quantile(x, [0.25, 0.75]))
    lo = hi = None
    if len(xs) >= 2:
        lo, hi = _ci(_boot_medians(x, np.random.default_rng(SEED)))
    return Estimate(statistics.median(xs), q1, q3, len(xs), lo, hi)


# ---------------------------------------------------------------- two figures

@dataclass(frozen=True)
class Comparison:
    """B against A: the difference of medians (b - a) with its CI and whether the repeats can tell them apart.

    ``distinguishable`` is None when either side has fewer than MIN_REPEATS repeats: not enough data to decide.
    """

    a: Estimate
    b: Estimate
    diff: float
    lo: float | None
    hi: float | None
    distinguishable: bool | None

    @property
    def rel_diff(self) -> float | None:
        return self.diff / abs(self.a.median) if self.a.median else None

    @property
    def noise(self) -> float | None:
        """Half the CI's width: the ``±`` of the difference (None without repeats)."""
        return (self.hi - self.lo) / 2 if self.lo is not None and self.hi is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "diff": self.diff, "lo": self.lo, "hi": self.hi,
                "distinguishable": self.distinguishable, "method": COMPARE_METHOD}


def compare_repeats(a: Iterable[Any], b: Iterable[Any]) -> Comparison | None:
    """Do the repeats in ``b`` differ from those in ``a``? None when a side has no number."""
    xa, xb = _clean(a), _clean(b)
    ea, eb = estimate(xa), estimate(xb)
    if ea is None or eb is None:
        return None
    diff = eb.median - ea.median
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(ea, eb, diff, None, None, None)
    rng = np.random.default_rng(SEED)
    d = _boot_medians(np.array(xb), rng) - _boot_medians(np.array(xa), rng)
    lo, hi = _ci(d)
    decided = None if min(len(xa), len(xb)) < MIN_REPEATS else not (lo <= 0.0 <= hi)
    if decided and diff == 0.0:
        decided = False
    return Comparison(ea, eb, diff, lo, hi, decided)


# ---------------------------------------------------------------- many comparisons at once (a CI gate)

FAMILY_ALPHA = 0.05
GATE_METHOD = (f"Student's t-test on log values per figure, Holm's correction across every gated comparison "
               f"(family-wise error {FAMILY_ALPHA:.0%}), >= {MIN_REPEATS} repeats per side")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_test_p(a: Iterable[Any], b: Iterable[Any], log: bool = True) -> float | None:
    """Two-sided p of Student's two-sample t-test, on log values when ``log`` and every value is positive;
    None below MIN_REPEATS per side.

    Timings and rates vary by ratios, so on the log scale the two sides' spreads are alike and the pooled
    variance is the right one; it keeps n_a + n_b - 2 degrees of freedom, where Welch's correction leaves about
    2 at three repeats a side and could not clear a Holm threshold even for a 5x slowdown."""
    xa, xb = _clean(a), _clean(b)
    if min(len(xa), len(xb)) < MIN_REPEATS:
        return None
    if log and all(v > 0 for v in xa + xb):
        xa, xb = [math.log(v) for v in xa], [math.log(v) for v in xb]
    na, nb = len(xa), len(xb)
    ma, mb = statistics.fmean(xa), statistics.fmean(xb)
    pooled = ((na - 1) * statistics.variance(xa) + (nb - 1) * statistics.variance(xb)) / (na + nb - 2)
    if pooled == 0.0:
        return 1.0 if ma == mb else 0.0
    t = (mb - ma) / math.sqrt(pooled * (1 / na + 1 / nb))
    return t_two_sided_p(t, na + nb - 2)


def holm(pvalues: Sequence[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Which of the hypotheses Holm's step-down procedure rejects at family-wise error ``alpha``."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        out[i] = True
    return out


# ---------------------------------------------------------------- trends

MODELS = ("constant", "linear", "quadratic")


@dataclass(frozen=True)
class Fit:
    """A trend of y over x fitted to every observation.

    ``model`` is the simplest supported one; ``slope`` (the linear fit's, y per x) with its CI ``slope_lo`` ..
    ``slope_hi``; ``effect`` is True when that interval excludes 0, False when it contains it, None when there
    are too few observations to say. ``coefficients`` per model, highest power first (numpy.polyval order).
    """

    model: str
    slope: float
    slope_lo: float | None
    slope_hi: float | None
    effect: bool | None
    n_obs: int
    n_x: int
    r2: float
    r2_by_model: Mapping[str, float]
    aicc_by_model: Mapping[str, float | None]
    coefficients: Mapping[str, tuple[float, ...]]
    mean: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coefficients"] = {k: list(v) for k, v in self.coefficients.items()}
        d["method"] = TREND_METHOD
        return d


def predict(fit: Mapping[str, Any], x: float, model: str | None = None) -> float:
    """A fitted trend (``Fit.to_dict()``, as studies keep it) at ``x``, by its chosen model or the one named."""
    return float(np.polyval(fit["coefficients"][model or fit["model"]], x))


def _aicc(rss: float, n: int, k: int, floor: float) -> float | None:
    if n - k - 1 <= 0:
        return None
    return n * math.log(max(rss, floor, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)  # all-zero y: floor 0


def _slope_ci(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> tuple[float | None, float | None]:
    n = len(x)
    if n < 3:
        return None, None
    resid = y - np.polyval(coef, x)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx <= 0:
        return None, None
    se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / sxx)
    half = t975(n - 2) * se
    return float(coef[0]) - half, float(coef[0]) + half


def trend(xs: Sequence[Any], ys: Sequence[Any]) -> Fit | None:
    """Constant, linear or quadratic fit of ``ys`` over ``xs`` (pairs with a None y dropped); None below 2 x."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys)
             if y is not None and x is not None and math.isfinite(float(y))]
    n_x = len({p[0] for p in pairs})
    if n_x < 2:
        return None
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    n, mean = len(pairs), float(y.mean())
    scale = max(float(np.abs(y).max()), 1e-300)
    floor = n * (EXACT_REL * scale) ** 2
    degrees = [d for d in (0, 1, 2) if n_x > d]
    coefs = {MODELS[d]: np.polyfit(x, y, d) if d else np.array([mean]) for d in degrees}
    rss = {MODELS[d]: float(((y - np.polyval(coefs[MODELS[d]], x)) ** 2).sum()) for d in degrees}
    ss_tot = rss["constant"]
    r2 = {m: (1.0 if ss_tot <= floor else 1.0 - r / ss_tot) for m, r in rss.items()}
    if ss_tot > floor:
        r2["constant"] = 0.0
    aicc = {m: _aicc(rss[m], n, d + 1, floor) for d, m in enumerate(MODELS) if m in rss}
    exact = {m: rss[m] <= floor for m in rss}
    model = "constant"
    for d in degrees[1:]:
        m, prev = MODELS[d], model
        k = d + 1
        if exact[prev]:
            break
        if exact[m] and n_x >= k + 1:  # an exact fit with a point to spare confirms itself
            model = m
            continue
        a_new, a_old = aicc[m], aicc[prev]
        if n >= OBS_PER_PARAM * k and a_new is not None and a_old is not None and a_new < a_old - AICC_MARGIN:
            model = m
    slope = float(coefs["linear"][0]) if "linear" in coefs else 0.0
    lo, hi = _slope_ci(x, y, coefs["linear"]) if "linear" in coefs else (None, None)
    if exact.get("linear") and "linear" in coefs:
        lo = hi = slope
    if exact["constant"]:  # every y equal: no slope, not a rounding-noise one (which an exact "linear" would claim)
        slope = lo = hi = 0.0
    effect: bool | None
    if lo is None or hi is None or n < OBS_PER_PARAM * 2:
        effect = None
    else:
        effect = not (lo <= 0.0 <= hi) and (exact.get("linear", False) or not exact["constant"])
    return Fit(model, slope, lo, hi, effect, n, n_x, r2[model], r2, aicc,
               {m: tuple(float(c) for c in cs) for m, cs in coefs.items()}, mean, exact[model])


@dataclass(frozen=True)
class Knee:
    """Where a curve starts rising faster: slopes left and right of ``at`` (y per x), both fitted."""

    at: float
    slope_before: float
    slope_after: float
    aicc_gain: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def knee(xs: Sequence[Any], ys: Sequence[Any]) -> Knee | None:
    """A continuous two-segment fit with its break at an observed x, kept when AICc prefers it over the line
    by AICC_MARGIN, the right slope is positive and at least KNEE_RATIO times the left (>= 4 distinct x)."""
    pairs = sorted((float(x), float(y)) for x, y in zip(xs, ys) if y is not None and x is not None)
    xs_d = sorted({p[0] for p in pairs})
    if len(xs_d) < 4:
        return None
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    n = len(pairs)
    scale = max(float(np.abs(y).max()), 1e-300)
    floor = n * (EXACT_REL * scale) ** 2
    line = np.polyfit(x, y, 1)
    a_line = _aicc(float(((y - np.polyval(line, x)) ** 2).sum()), n, 2, floor)
    best: Knee | None = None
    for b in xs_d[1:-1]:
        design = np.column_stack([np.ones(n), x, np.maximum(x - b, 0.0)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        rss = float(((y - design @ coef) ** 2).sum())
        a = _aicc(rss, n, 3, floor)
        if a is None or a_line is None or n < OBS_PER_PARAM * 3:
            continue
        left, right = float(coef[1]), float(coef[1] + coef[2])
        gain = a_line - a
        if gain > AICC_MARGIN and right > 0 and right >= KNEE_RATIO * max(left, 0.0) and (
                best is None or gain > best.aicc_gain):
            best = Knee(b, left, right, gain)
    return best
