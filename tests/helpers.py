"""Test-side builders shared by several test modules."""

from __future__ import annotations

from typing import Any, Mapping

from loadprof.strategies.model import Strategy

BASE: dict[str, Any] = {"model": {"synthetic": {"shape": "tiny", "dtype": "bfloat16"}}}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def strategy_of(partial: Mapping[str, Any] | None = None) -> Strategy:
    """A real Strategy from the keys a test cares about, over a tiny synthetic model (a model must be given once:
    a partial ``model`` replaces the default one)."""
    partial = dict(partial or {})
    base = dict(BASE)
    if "model" in partial:
        base.pop("model")
    return Strategy.from_dict(_merge(base, partial))
