"""The one value formatter: how every finding title, trade-off, report, table and CLI line writes a number.

One module so a figure reads the same wherever it appears (``853.2 MiB`` in a finding's title, the summary table
and ``loadprof diff``). Units are always shown; a missing value is ``-``; a value of the wrong type (a hand-edited
report) is ``-`` too, never a traceback. Binary byte units (KiB, MiB, GiB), three significant digits for
seconds, never an exponent.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"
#: keys whose unit suffix says their value is a number (a metric, a figure in report.json)
NUMBER_SUFFIXES = ("_s", "_ms", "_ns", "_bytes", "_tok_s", "_pct")


def is_number(v: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bytes_h(n: Any) -> str:
    """``512 B``, ``853.2 MiB``, ``1.5 GiB``: binary units, one decimal above bytes."""
    if not is_number(n):
        return MISSING
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def seconds(v: Any) -> str:
    """Three significant digits, never an exponent: ``0.341 s``, ``12.2 s``, ``1460 s``, ``0.012 ms``."""
    if not is_number(v):
        return MISSING
    if abs(v) >= 100 or v == 0:
        return f"{v:.0f} s"
    if abs(v) < 0.001:
        return f"{v * 1e3:.3f} ms"
    return f"{float(f'{v:.3g}'):g} s"


def ms(v: Any) -> str:
    """``41.5 ms``: a latency (TTFT, a step) to a tenth of a millisecond."""
    return f"{v:.1f} ms" if is_number(v) else MISSING


def rate(v: Any) -> str:
    """``12.35 tok/s``."""
    return f"{v:.2f} tok/s" if is_number(v) else MISSING


def gb_s(v: Any) -> str:
    """``1.23 GB/s`` (decimal gigabytes, as storage and bus rates are quoted)."""
    return f"{v:.2f} GB/s" if is_number(v) else MISSING


def value(v: Any, unit: str) -> str:
    """A figure in its unit (``bytes``, ``s``, ``ms``, ``tok/s``, anything else printed after ``%g``); a string
    (a status, in a diff) as itself."""
    if isinstance(v, str):
        return v
    if not is_number(v):
        return MISSING
    shown = {"bytes": bytes_h, "s": seconds, "ms": ms, "tok/s": rate, "GB/s": gb_s, "fraction": pct}.get(unit)
    return shown(v) if shown else f"{v:g} {unit}".strip()


def estimate(est: Any, unit: str, *, repeats: bool = True) -> str:
    """A figure over its repeats (``loadprof.core.conclusions.Estimate``): ``1.23 s ± 40.0 ms (n=3)``, the
    median and half its IQR; one repeat shows the bare value (its spread would be a fake 0). ``repeats=False``
    leaves out ``(n=...)`` where a column already says it."""
    if est is None or not is_number(getattr(est, "median", None)):
        return MISSING
    n = est.n if isinstance(est.n, int) else 0
    count = f" (n={max(n, 1)})" if repeats else ""
    if n < 2:
        return value(est.median, unit) + count
    return f"{value(est.median, unit)} ± {value(est.spread, unit)}{count}"


def pct(share: Any) -> str:
    """A 0-1 share as a whole percent ('0.8' -> '80%'): how every finding title prints a share."""
    return f"{100 * share:.0f}%" if is_number(share) else MISSING


def percent(p: Any) -> str:
    """A value already in percent, to a tenth: ``12.5%``."""
    return f"{p:.1f}%" if is_number(p) else MISSING


def signed_pct(p: Any) -> str:
    """A percent change to a tenth: ``+12.5%``, ``-3.0%``."""
    return f"{p:+.1f}%" if is_number(p) else MISSING


def ratio(p: Any, *, signed: bool = False) -> str:
    """A percent change as people say it: ``35%`` (``+35%`` signed) below +100%, ``4.8x`` from there on."""
    if not is_number(p):
        return MISSING
    if p >= 100:
        return f"{1 + p / 100:.1f}x"
    return f"{p:+.0f}%" if signed else f"{p:.0f}%"


def change(delta: Any, unit: str, noise: Any = None) -> str:
    """A difference with its noise band: ``+1.52 s (±80.0 ms)``; the bare difference without repeats."""
    if not is_number(delta):
        return MISSING
    band = f" (±{value(noise, unit)})" if is_number(noise) else ""
    return f"{'+' if delta >= 0 else '-'}{value(abs(delta), unit)}{band}"


def num(v: Any, fmt: str = ".2f") -> str:
    """A bare number in a table cell whose heading names the unit (``load s``)."""
    return format(v, fmt) if is_number(v) else MISSING
