"""Older trial records (report.json trials, results.jsonl lines) in today's shape, before they are read.

Versions:
  1  the memory probe's whole-trial peaks had the same names as the workload's peaks in ``metrics`` (the
     catalogue's RSS and CUDA peak figures): renamed ``trial_<name>``.
  2  ``probes[name]`` held the probe's envelope ``{name, metrics, per_phase, notes, artifacts}`` (notes and
     artifacts were already copied into the trial's), and the machine record was ``harness.machine``.
  3  ``probes[name]`` is the probe's payload (``loadprof.core.payloads``), flat: the envelope's ``metrics`` with
     ``per_phase`` beside them (memory, io); ``probes.machine`` is the machine probe's. Every trial record
     carries its own ``schema_version`` (a results.jsonl line is read alone); one without it is version 1 or 2.
Sampling payloads written before thread states were read (counts times a nominal interval, load-only user
functions) are read in today's fields: their seconds are the counts times the interval, all of it in an
unknown thread state.
"""

from __future__ import annotations

from typing import Any, Mapping

from loadprof.core import figures

SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
_V1_RENAMES = {f.key: f"trial_{f.key}" for f in (figures.PEAK_RSS_BYTES, figures.PEAK_CUDA_ALLOCATED_BYTES)}
_ENVELOPE = {"name", "metrics", "per_phase", "notes", "artifacts"}
_PER_PHASE_PROBES = ("memory", "io")


def migrate_trial(d: dict[str, Any]) -> dict[str, Any]:
    """A trial record of any readable version in version 3's shape (``d`` is a copy the caller owns)."""
    version = d.pop("schema_version", None)
    if isinstance(version, int) and version >= 3:
        return d
    probes = {name: _payload_v3(name, _v1_renamed(name, p)) if _is_envelope(p) else p
              for name, p in (d.get("probes") or {}).items()}
    harness = dict(d.get("harness") or {})
    if isinstance(harness.get("machine"), Mapping):
        probes.setdefault("machine", harness.pop("machine"))
    return {**d, "probes": probes, "harness": harness}


def _is_envelope(p: Any) -> bool:
    return isinstance(p, Mapping) and isinstance(p.get("metrics"), Mapping) and set(p) <= _ENVELOPE


def _v1_renamed(name: str, envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    metrics = envelope["metrics"]
    if name != "memory" or not any(old in metrics for old in _V1_RENAMES):
        return envelope
    return {**envelope, "metrics": {_V1_RENAMES.get(k, k): v for k, v in metrics.items()}}


def _payload_v3(name: str, envelope: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(envelope["metrics"])
    if envelope.get("per_phase") or name in _PER_PHASE_PROBES:
        body["per_phase"] = envelope.get("per_phase") or {}
    return _sampling_v3(body) if name == "sampling" else body


def _sampling_v3(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("notes", None)  # the attribution's notes: already the trial's
    interval = body.get("interval_s")
    phases = body.get("phases")
    if isinstance(phases, Mapping) and isinstance(interval, (int, float)):
        body["phases"] = {p: _phase_counts(v, interval) for p, v in phases.items()}
    users = body.get("user_functions")
    if isinstance(users, list):
        body["user_functions"] = [_user_function(u) for u in users]
    return body


def _phase_counts(v: Any, interval: float) -> Any:
    """A phase row of counts (before thread states) as seconds in an unknown state."""
    if not isinstance(v, Mapping) or "seconds" in v or not isinstance(v.get("samples"), int):
        return v
    own = v["samples"] * interval
    return {"seconds": own, "samples": v["samples"], "inclusive_s": v.get("inclusive_samples", v["samples"]) * interval,
            "running_s": 0.0, "waiting_s": 0.0, "waits": {}, "unknown_state_s": own, "top": []}


def _user_function(u: Any) -> Any:
    """Older rows (load only, counts x interval, shares of sampled time): all their time their own, running."""
    if not isinstance(u, Mapping) or "phase" in u:
        return u
    own = u.get("own_s", u.get("self_user_s", 0.0))
    renamed = {"phase": "load", "seconds": u.get("self_user_s", own), "own_s": own,
               "samples": u.get("own_samples", u.get("self_user_samples", 0)),
               "own_share_of_phase": u.get("own_share_of_load", u.get("share_of_load")),
               "running_s": u.get("self_user_s", own)}
    old = ("self_user_s", "own_samples", "self_user_samples", "own_share_of_load", "share_of_load")
    return {**{k: v for k, v in u.items() if k not in old}, **renamed}
