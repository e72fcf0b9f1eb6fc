"""Which configurations of one model no other configuration of that model beats on every objective.

Pure: reads ``ConfigSummary`` medians, returns them with ``pareto`` / ``pareto_on`` / ``dominated_by`` set. The
front is per model because configurations of different models answer different questions (a smaller model
"dominating" a larger one says nothing about how to load either). Dominance is decided on medians only: two
configurations within each other's noise are not told apart here; the ``±`` beside each median says how far to
trust a domination.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Sequence

from loadprof.core import figures
from loadprof.core.conclusions import ConfigSummary


def memory_figure(configs: Sequence[ConfigSummary]) -> figures.Figure:
    """The peak one model's configurations are compared on (``figures.memory_figure`` over their figures: the
    CUDA allocator's when every configuration measured it, else RSS)."""
    return figures.memory_figure(c.figures for c in configs)


def objectives(configs: Sequence[ConfigSummary]) -> tuple[tuple[str, bool], ...]:
    """(figure key, lower is better) of each objective's figure (``figures.OBJECTIVES``, the memory one by
    ``memory_figure``) every configuration measured: a figure some lack (no generate step) cannot rank them."""
    mem = memory_figure(configs)
    on = (figures.objective_figure(o, mem) for o in figures.OBJECTIVE_NAMES)
    return tuple((f.key, f.lower_is_better) for f in on if all(f.read(c.figures) is not None for c in configs))


def dominates(a: ConfigSummary, b: ConfigSummary, on: Iterable[tuple[str, bool]]) -> bool:
    """``a`` no worse than ``b`` on every objective and better on at least one (medians); a tie dominates nothing."""
    better = False
    for key, lower in on:
        va, vb = a.median(key), b.median(key)
        if va is None or vb is None:
            return False
        if (va > vb) if lower else (va < vb):
            return False
        better = better or va != vb
    return better


def mark(configs: Sequence[ConfigSummary]) -> tuple[ConfigSummary, ...]:
    """``configs`` in their order, each model's compared ones (>= 2 with repeats, >= 1 shared objective) marked."""
    by_model: dict[str, list[ConfigSummary]] = {}
    for c in configs:
        if c.n > 0:
            by_model.setdefault(c.model, []).append(c)
    marked: dict[str, ConfigSummary] = {}
    for group in by_model.values():
        on = objectives(group)
        if len(group) < 2 or not on:
            continue
        for c in group:
            by = tuple(o.strategy_id for o in group if o is not c and dominates(o, c, on))
            marked[c.strategy_id] = replace(c, pareto=not by, pareto_on=tuple(k for k, _ in on), dominated_by=by)
    return tuple(marked.get(c.strategy_id, c) for c in configs)
