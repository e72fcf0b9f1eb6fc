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


# ------------------------------------------------------------------ probe payloads as a test states them
# A payload is read strictly (loadprof.core.payloads): these fill the fields a test does not care about with
# neutral values (zeros, empty tables), so a test names only the figures its rule reads.

_PHASE_MEMORY = ("start_rss_bytes", "end_rss_bytes", "peak_rss_bytes", "peak_sampled_rss_bytes", "start_anon_bytes",
                 "end_anon_bytes", "peak_anon_bytes", "start_file_bytes", "end_file_bytes", "minor_faults",
                 "major_faults")


def memory_payload(per_phase: Mapping[str, Mapping[str, Any]], **kw: Any) -> dict[str, Any]:
    """The memory probe's payload with these per-phase figures (others 0)."""
    return {"per_phase": {p: {**dict.fromkeys(_PHASE_MEMORY, 0), **r} for p, r in per_phase.items()},
            "timeline": {"columns": ["t_s", "rss_anon_bytes", "rss_file_bytes"], "rows": [], "every_nth_sample": 1},
            "trial_peak_rss_bytes": 0, "end_rss_bytes": 0, "end_anon_bytes": 0, "end_file_bytes": 0, "samples": 0,
            "period_ms": 10.0, **kw}


def phases_payload(from_pretrained_calls: list[Mapping[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    """The phases probe's payload; each call ``{"kwargs": {...}}`` (its class defaults to "Model")."""
    calls = [{"class": "Model", "kwargs": {}, **c} for c in from_pretrained_calls or ()]
    return {"hooks_installed": 0, "hook_calls": {}, "from_pretrained_calls": calls, **kw}


def user_function(**kw: Any) -> dict[str, Any]:
    """One row of the sampling payload's ``user_functions`` (a load-phase function with no time, unless given)."""
    return {"name": "f", "file": "/home/u/f.py", "line": 1, "phase": "load", "samples": 1, "seconds": 0.0,
            "own_s": 0.0, "running_s": 0.0, **kw}


def phase_samples(**kw: Any) -> dict[str, Any]:
    """One row of the sampling payload's ``phases``."""
    return {"seconds": 0.0, "samples": 0, "inclusive_s": 0.0, "running_s": 0.0, "waiting_s": 0.0, "waits": {},
            "unknown_state_s": 0.0, "top": [], **kw}


def sampling_payload(*, user_functions: list[Mapping[str, Any]] | None = None,
                     phases: Mapping[str, Mapping[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    """The sampling probe's payload, sampled (ok), with these user functions and phase rows filled out."""
    return {"ok": True, "user_functions": [user_function(**u) for u in user_functions or ()],
            "phases": {p: phase_samples(**r) for p, r in (phases or {}).items()}, **kw}


def default_stop_signals() -> None:
    """A subprocess's preexec_fn: the stop signals at their defaults, as a terminal's loadprof has them. A shell's
    background job inherits SIGINT ignored (a test run started with '&' without job control), nohup SIGHUP."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)

