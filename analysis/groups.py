"""Strategies grouped across their repeats, and the figure each objective ranks them by.

Shared by recommendations and their trade-offs: a figure is a median over a strategy's ok repeats of metrics
already in report.json, never re-measured and never rounded here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from loadprof.analysis import stats
from loadprof.analysis.derive import first_forward_s, load_cost_s  # noqa: F401  (re-exported)
from loadprof.analysis.knobs import HARNESS, configuration_key, differing, irrelevant_paths
from loadprof.results.model import Estimate, TrialResult
from loadprof.strategies.model import Strategy

OBJECTIVES = ("load", "memory", "ttft", "throughput")
#: objective -> (figure name, unit, lower is better); the memory figure's name is the peak metric actually used
FIGURES = {"load": ("load_first_forward_validate_s", "s", True), "memory": ("peak_bytes", "bytes", True),
           "ttft": ("ttft_ms", "ms", True), "throughput": ("decode_tok_s", "tok/s", False)}
SHORT_ANSWER_SHARE = 0.30    # generated < 30% of max_new_tokens: the cap is probably too large
TRADEOFF_PCT = 10.0          # the pick is called worse on another objective only beyond this



def peak_key(trials: Iterable[TrialResult]) -> str:
    """GPU allocator peak when any ok trial measured one (the scarce memory), else the process RSS peak."""
    return ("peak_cuda_allocated_bytes"
            if any(t.ok and t.metrics.get("peak_cuda_allocated_bytes") is not None for t in trials)
            else "peak_rss_bytes")


@dataclass(eq=False)
class Group:
    """One strategy's ok repeats, or one configuration: strategies pooled because they differ only in knobs that
    cannot affect the objective at hand (``members``; ``strategy`` is the first member's)."""

    strategy_id: str
    label: str
    strategy: Strategy
    trials: list[TrialResult]
    members: list["Group"] = field(default_factory=list)

    def values(self, fn: Callable[[TrialResult], Any]) -> list[float]:
        return [v for t in self.trials if (v := fn(t)) is not None]

    def median(self, fn: Callable[[TrialResult], Any]) -> float | None:
        vs = self.values(fn)
        return statistics.median(vs) if vs else None

    def estimate(self, fn: Callable[[TrialResult], Any]) -> Estimate | None:
        return stats.estimate(self.values(fn))

    def metric(self, key: str) -> float | None:
        return self.median(lambda t: t.metrics.get(key))

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]


def groups(trials: Iterable[TrialResult]) -> list[Group]:
    """Ok trials grouped by strategy id, in first-seen order."""
    out: dict[str, Group] = {}
    for t in trials:
        if t.ok:
            out.setdefault(t.strategy_id, Group(t.strategy_id, t.label or t.strategy_id, t.strategy, [])).trials.append(t)
    return list(out.values())


def figure_fn(objective: str, peak: str) -> Callable[[TrialResult], Any]:
    """What one trial contributes to ``objective``: its real load cost, peak memory, TTFT or decode rate."""
    if objective == "load":
        return load_cost_s
    key = {"memory": peak, "ttft": "ttft_ms", "throughput": "decode_tok_s"}[objective]
    return lambda t: t.metrics.get(key)


def figure(g: Group, objective: str, peak: str) -> float | None:
    return g.median(figure_fn(objective, peak))


def by_model(gs: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups per model label, in first-seen order: recommendations never compare two models."""
    out: dict[str, list[Group]] = {}
    for g in gs:
        out.setdefault(g.strategy.model.label, []).append(g)
    return out


def configurations(gs: Sequence[Group], objective: str) -> list[Group]:
    """The groups pooled into configurations for ``objective`` (knobs.CANNOT_AFFECT), first-seen order."""
    by: dict[str, list[Group]] = {}
    for g in gs:
        by.setdefault(configuration_key(g.strategy, objective), []).append(g)
    out = []
    for members in by.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        paths = differing([m.strategy for m in members],
                          (*irrelevant_paths(objective, members[0].strategy), *(h for h in HARNESS if h != "label")))
        knobs = ", ".join(p.split(".")[-1] for p in paths)
        label = f"{members[0].label} (+{len(members) - 1} differing only in {knobs})"
        out.append(Group("+".join(m.strategy_id for m in members), label, members[0].strategy,
                         [t for m in members for t in m.trials], list(members)))
    return out


def rank_groups(cands: Sequence[Group], objective: str, peak: str) -> list[tuple[Group, float]]:
    lower = FIGURES[objective][2]
    scored = [(g, f) for g in cands if (f := figure(g, objective, peak)) is not None]
    return sorted(scored, key=lambda gf: (gf[1] if lower else -gf[1], gf[0].label, gf[0].strategy_id))


def over_budget(gs: Sequence[Group], peak: str, budget: int | None) -> list[Group]:
    """The worst repeat must fit: a budget is a ceiling, so the max over repeats is checked, not the median."""
    if budget is None:
        return []
    return [g for g in gs if (vs := g.values(lambda t: t.metrics.get(peak))) and max(vs) > budget]


def settings(strategy: Strategy, objective: str | None = None) -> dict[str, Any]:
    """The knobs a recommendation names, as the YAML spells them; with ``objective``, those that cannot affect it
    (knobs.CANNOT_AFFECT) are left out, so a pick never reads as resting on them."""
    ld, gen = strategy.load, strategy.generate
    out = {"device_map": strategy.at("load.device_map"), "dtype": ld.dtype, "quantization": ld.quantization,
           "offload": ld.offload, "validation": ld.validation, "file_cache": ld.file_cache,
           "cache_implementation": gen.cache_implementation if gen else None,
           "max_new_tokens": gen.max_new_tokens if gen else None, "batch_size": gen.batch_size if gen else None,
           "loader": ld.loader.target if ld.loader else None}
    if objective is not None:
        drop = {p.split(".")[-1] for p in irrelevant_paths(objective, strategy)}
        out = {k: v for k, v in out.items() if k not in drop}
    return out
