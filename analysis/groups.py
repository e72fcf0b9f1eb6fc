"""Strategies grouped across their repeats, and the figure each objective ranks them by.

Shared by recommendations and their trade-offs: a figure is a median over a strategy's ok repeats of metrics
already in report.json, never re-measured and never rounded here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from loadprof.analysis import stats
from loadprof.analysis.derive import value
from loadprof.analysis.knobs import HARNESS, configuration_key, differing, irrelevant_paths
from loadprof.core import figures
from loadprof.results.model import Estimate, TrialResult
from loadprof.strategies.model import Strategy

SHORT_ANSWER_SHARE = 0.30    # generated < 30% of max_new_tokens: the cap is probably too large
TRADEOFF_PCT = 10.0          # the pick is called worse on another objective only beyond this


def memory_figure(trials: Iterable[TrialResult]) -> figures.Figure:
    """The peak the memory objective and the budget use for these trials (``figures.memory_figure`` over the ok
    ones: the CUDA allocator's when every one measured it, else RSS)."""
    return figures.memory_figure(t.metrics for t in trials if t.ok)


def reader(f: figures.Figure) -> Callable[[TrialResult], Any]:
    """What one trial contributes to figure ``f`` (``derive.value``: the real load cost derived, the rest read)."""
    return lambda t: value(t, f)


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

    def metric(self, f: figures.Figure) -> float | None:
        return self.median(reader(f))

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


def figure(g: Group, f: figures.Figure) -> float | None:
    return g.median(reader(f))


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


def rank_groups(cands: Sequence[Group], f: figures.Figure) -> list[tuple[Group, float]]:
    """The groups that measured ``f``, best median first (ties by label, then id)."""
    scored = [(g, v) for g in cands if (v := figure(g, f)) is not None]
    return sorted(scored, key=lambda gv: (gv[1] if f.lower_is_better else -gv[1], gv[0].label, gv[0].strategy_id))


def over_budget(gs: Sequence[Group], peak: figures.Figure, budget: int | None) -> list[Group]:
    """The worst repeat must fit: a budget is a ceiling, so the max over repeats is checked, not the median."""
    if budget is None:
        return []
    return [g for g in gs if (vs := g.values(reader(peak))) and max(vs) > budget]


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
