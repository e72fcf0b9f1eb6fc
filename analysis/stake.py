"""Severity from the stake: how much of the trial a finding puts at risk decides how loud it is.

A rule states what it saw and what is at stake (seconds, bytes); the severity it is printed with comes from that
stake, relative to the sweep and absolutely: ``stake_share`` is the larger of the seconds at stake over the
largest trial workload (its phases, loadprof's own steps left out) and the bytes at stake over the trial's weights
(its peak where the weights are unknown) or, with a memory budget (``memory_limit``), over the headroom the budget
leaves above the weights, whichever is larger (a stake that decides whether the model fits is a full share). A finding is high only when it is both a large share (>= 30%) and
large in itself (>= 1 s, >= 256 MiB), medium at >= 10% and >= 0.1 s / 16 MiB, else low: a +270 KiB upcast of a
tiny model is low whatever its share, and a 41 s stake outranks a 0.35 s one. Findings with nothing at stake
(a broken model, an ignored kwarg) keep the severity their rule gave.

A sweep whose trials failed, crashed or timed out says so first (``failed_trials``): whatever the finished
trials show is about the minority that finished.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable, Sequence

from loadprof.core.payloads import MemoryPayload
from loadprof.core.phases import HARNESS_PHASES
from loadprof.results.model import Finding, TrialResult
from loadprof.strategies.model import parse_size

NOT_WORKLOAD = (*HARNESS_PHASES, "cleanup")
#: (share, seconds, bytes) a stake must reach, both relative and absolute, for each severity
GRADES: tuple[tuple[str, float, float, float], ...] = (
    ("high", 0.30, 1.0, 256 * 2**20), ("medium", 0.10, 0.1, 16 * 2**20))
FAILED_KIND = "failed_trials"


def workload_s(t: TrialResult) -> float | None:
    """Wall seconds of the trial's own work: its top-level phases but loadprof's steps."""
    s = sum(p.duration_s for p in t.phases if p.name not in NOT_WORKLOAD)
    return s or None


def memory_bytes(t: TrialResult) -> float | None:
    """What bytes at stake are weighed against: the weights (or the bytes device_map placed), else the trial's
    peak (the CUDA allocator's, else CPU RSS)."""
    placed = sum((p.get("bytes") or 0) for p in (t.metrics.get("placement") or {}).values())
    if t.metrics.get("weights_bytes") or placed:
        return max(t.metrics.get("weights_bytes") or 0, placed)
    mem = t.payload(MemoryPayload)
    if mem is None:
        return None
    return mem.trial_peak_cuda_allocated_bytes or max((p.peak_rss_bytes for p in mem.per_phase.values()),
                                                      default=0) or None


def references(trials: Sequence[TrialResult]) -> tuple[float | None, float | None]:
    """(seconds, bytes) stakes are weighed against across these trials: the largest workload and weights, one
    denominator for the sweep, so a larger stake is never graded below a smaller one."""
    ok = [t for t in trials if t.ok]
    return (max((w for t in ok if (w := workload_s(t))), default=None),
            max((b for t in ok if (b := memory_bytes(t))), default=None))


def stake_share(f: Finding, wl: float | None, mem: float | None) -> float | None:
    """The larger of the seconds and the bytes at stake over their references; None with no stake or reference."""
    shares = []
    if f.stake_s is not None and wl:
        shares.append(min(1.0, max(0.0, f.stake_s) / wl))
    if f.stake_bytes is not None and mem:
        shares.append(min(1.0, max(0.0, f.stake_bytes) / mem))
    return max(shares) if shares else None


def memory_budget(t: TrialResult) -> float | None:
    """The trial's memory budget, when its strategy gives one (``memory_limit``), in bytes; None without."""
    try:
        return float(parse_size(t.strategy.memory_limit)) if t.strategy.memory_limit else None
    except (ValueError, TypeError):
        return None


def budget_share(stake_bytes: float, t: TrialResult) -> float | None:
    """A bytes stake against the trial's memory budget: the share of the headroom above the weights it takes (1.0
    when the budget leaves none, or when the peak is over the budget and would be under it without the stake:
    then the stake decides whether the model fits). None without a budget or a measured peak."""
    budget, weights = memory_budget(t), memory_bytes(t) or 0.0
    mem = t.payload(MemoryPayload)
    peak = max((p.peak_rss_bytes for p in mem.per_phase.values()), default=0) if mem is not None else 0
    if not budget or not peak:
        return None
    if budget <= weights or (peak > budget >= peak - stake_bytes):
        return 1.0
    return min(1.0, stake_bytes / (budget - weights))


def grade(share: float, stake_s: float | None, stake_bytes: float | None) -> str:
    for name, min_share, min_s, min_b in GRADES:
        if share >= min_share and ((stake_s or 0) >= min_s or (stake_bytes or 0) >= min_b):
            return name
    return "low"


def graded(f: Finding, refs: tuple[float | None, float | None], trial: TrialResult | None = None) -> Finding:
    """``f`` with its severity from its stake over ``refs`` (``references``) and ``stake_share`` in its evidence
    (unchanged without a stake); a bytes stake is also weighed against ``trial``'s memory budget, where it has
    one, and the larger share counts."""
    share = stake_share(f, *refs)
    if trial is not None and f.stake_bytes and (b := budget_share(f.stake_bytes, trial)) is not None:
        share = max(share or 0.0, b)
    if share is None:
        return f
    return replace(f, severity=grade(share, f.stake_s, f.stake_bytes),
                   evidence={**f.evidence, "stake_share": round(share, 4)})


def failed_trials(trials: Sequence[TrialResult]) -> Iterable[Finding]:
    """One finding when trials did not finish (failed, crashed, timed out): how many, how, and the first reason."""
    bad = [t for t in trials if not t.ok and t.status != "skipped"]
    if not bad:
        return
    ran = [t for t in trials if t.status != "skipped"]
    how = Counter(t.status for t in bad)
    reason = next((t.reason for t in bad if t.reason), "") or ""
    first = reason.strip().splitlines()[0][:200] if reason.strip() else "no reason recorded"
    yield Finding(FAILED_KIND, "high", f"{len(bad)} of {len(ran)} trials did not finish ("
                  + ", ".join(f"{n} {s}" for s, n in how.most_common()) + ")",
                  f"{', '.join(t.label or t.trial_id for t in bad[:5])}{' ...' if len(bad) > 5 else ''} did not "
                  f"finish; first reason: {first}. Findings below are drawn from the {len(ran) - len(bad)} that did.",
                  "read each trial's reason (report summary, trials/<id>/ logs) and fix that before tuning",
                  {"failed": len(bad), "trials": len(ran), "statuses": dict(how), "stake_share": len(bad) / len(ran)},
                  tuple(t.trial_id for t in bad), ", ".join(dict.fromkeys(t.label for t in bad if t.label)), True,
                  stake_basis="trials that did not finish, of those that ran")
