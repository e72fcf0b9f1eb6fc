"""Number formatting shared by every renderer (units always shown)."""

from __future__ import annotations

from typing import Any


def bytes_h(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def pct(share: float) -> str:
    """A 0-1 share as a whole percent ('0.8' -> '80%'): how every finding title prints a share."""
    return f"{100 * share:.0f}%"
