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


#: for figures that are exact counts, not timings (``figures.Figure.exact``: the CUDA allocator's bytes repeat to
#: the byte for one program, so a single repeat decides), differences under EXACT_TIE_BYTES or EXACT_TIE_SHARE are
#: ties (allocator rounding)
EXACT_TIE_BYTES = 2**20
EXACT_TIE_SHARE = 0.01
#: a difference under this share of the median is a tie even when the repeats tell it apart: 850.4 vs 850.9 MiB of
#: peak RSS separates cleanly with tight repeats, yet no one should pick a configuration (or call it drift) for it
MATTERS_SHARE = 0.01


def distinct(a: Sequence[float], b: Sequence[float], f: figures.Figure) -> bool | None:
    """Do two configurations differ on figure ``f``: True, False, or None (too few repeats to say). Beyond the
    noise and by at least ``MATTERS_SHARE`` of the median (exact figures: by allocator rounding)."""
    if f.exact and a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        return abs(mb - ma) > max(EXACT_TIE_BYTES, EXACT_TIE_SHARE * abs(ma))
    c = stats.compare_repeats(a, b)
    if c is None:
        return None
    ma, mb = statistics.median(a), statistics.median(b)
    return c.distinguishable and abs(mb - ma) >= MATTERS_SHARE * max(abs(ma), abs(mb))


def configurations(gs: Sequence[Group], objective: str, f: figures.Figure | None = None) -> list[Group]:
    """The groups pooled into configurations for ``objective`` (knobs.CANNOT_AFFECT), first-seen order; with the
    objective's figure ``f``, checked against the data (``checked_configurations``)."""
    return checked_configurations(gs, objective, f)[0]


def checked_configurations(gs: Sequence[Group], objective: str,
                           f: figures.Figure | None = None) -> tuple[list[Group], tuple[str, ...]]:
    """The configurations for ``objective``, and the drift notes of the data overruling the knob table.

    With the objective's figure ``f`` the table is checked against the data: a strategy whose repeats differ
    beyond the noise from those pooled so far stays a configuration of its own, and a note says so (the table is
    physics, but a busy machine, drift or a knob it misjudges are real too). Below MIN_REPEATS a strategy cannot
    be told apart and is pooled as the table says."""
    by: dict[str, list[Group]] = {}
    for g in gs:
        by.setdefault(configuration_key(g.strategy, objective), []).append(g)
    out: list[Group] = []
    notes: list[str] = []
    for members in by.values():
        clusters = _split(members, f) if f is not None and len(members) > 1 else [members]
        out += [_pool(c, objective) for c in clusters]
        notes += [_drift_note(c, clusters[0], objective) for c in clusters[1:]]
    return out, tuple(notes)


def _split(members: Sequence[Group], f: figures.Figure) -> list[list[Group]]:
    """Members in clusters the data cannot tell apart (greedy, first-seen): each joins the first cluster whose
    pooled repeats it is not distinct from (too few repeats to tell counts as not distinct)."""
    fn = reader(f)
    clusters: list[list[Group]] = []
    for m in members:
        home = next((c for c in clusters
                     if not distinct([v for g in c for v in g.values(fn)], m.values(fn), f)), None)
        if home is None:
            clusters.append([m])
        else:
            home.append(m)
    return clusters


def _pool(members: Sequence[Group], objective: str) -> Group:
    if len(members) == 1:
        return members[0]
    knobs = ", ".join(p.split(".")[-1] for p in _pooled_paths(members, objective))
    label = f"{members[0].label} (+{len(members) - 1}: {len(members)} strategies pooled, differing only in {knobs})"
    return Group("+".join(m.strategy_id for m in members), label, members[0].strategy,
                 [t for m in members for t in m.trials], list(members))


def _pooled_paths(members: Sequence[Group], objective: str) -> list[str]:
    return differing([m.strategy for m in members],
                     (*irrelevant_paths(objective, members[0].strategy), *(h for h in HARNESS if h != "label")))


def _drift_note(cluster: Sequence[Group], first: Sequence[Group], objective: str) -> str:
    knobs = ", ".join(p.split(".")[-1] for p in irrelevant_paths(objective, cluster[0].strategy)
                      if p in _pooled_paths([*first, *cluster], objective))
    who = ", ".join(f"'{g.label}'" for g in cluster)
    return (f"drift: {who} differ{'s' if len(cluster) == 1 else ''} beyond the noise on {objective} from "
            f"'{first[0].label}'{' and the strategies pooled with it' if len(first) > 1 else ''} although "
            f"{knobs or 'the knobs they differ in'} cannot affect it by the knob table: kept apart as a "
            f"configuration of {'its' if len(cluster) == 1 else 'their'} own (a busy machine, drift, or a knob that "
            f"matters here after all)")


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
