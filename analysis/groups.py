"""Strategies grouped across their repeats, and the figure each objective ranks them by.

Shared by recommendations and their trade-offs: a figure is a median over a strategy's ok repeats of metrics
already in report.json, never re-measured and never rounded here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from loadprof.analysis.derive import first_forward_s, load_cost_s  # noqa: F401  (re-exported)
from loadprof.results import TrialResult
from loadprof.strategies.model import Strategy

OBJECTIVES = ("load", "memory", "ttft", "throughput")
#: objective -> (figure name, unit, lower is better); the memory figure's name is the peak metric actually used
FIGURES = {"load": ("load_first_forward_validate_s", "s", True), "memory": ("peak_bytes", "bytes", True),
           "ttft": ("ttft_ms", "ms", True), "throughput": ("decode_tok_s", "tok/s", False)}
SHORT_ANSWER_SHARE = 0.30    # generated < 30% of max_new_tokens: the cap is probably too large
TRADEOFF_PCT = 10.0          # the pick is called worse on another objective only beyond this
SINGLE_REPEAT_MARGIN_PCT = 5.0



def peak_key(trials: Iterable[TrialResult]) -> str:
    """GPU allocator peak when any ok trial measured one (the scarce memory), else the process RSS peak."""
    return ("peak_cuda_allocated_bytes"
            if any(t.ok and t.metrics.get("peak_cuda_allocated_bytes") is not None for t in trials)
            else "peak_rss_bytes")


@dataclass(eq=False)
class Group:
    """One strategy's ok repeats."""

    strategy_id: str
    label: str
    strategy: Strategy
    trials: list[TrialResult]

    def values(self, fn: Callable[[TrialResult], Any]) -> list[float]:
        return [v for t in self.trials if (v := fn(t)) is not None]

    def median(self, fn: Callable[[TrialResult], Any]) -> float | None:
        vs = self.values(fn)
        return statistics.median(vs) if vs else None

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


def figure(g: Group, objective: str, peak: str) -> float | None:
    if objective == "load":
        return g.median(load_cost_s)
    return g.metric({"memory": peak, "ttft": "ttft_ms", "throughput": "decode_tok_s"}[objective])


def rank_groups(cands: Sequence[Group], objective: str, peak: str) -> list[tuple[Group, float]]:
    lower = FIGURES[objective][2]
    scored = [(g, f) for g in cands if (f := figure(g, objective, peak)) is not None]
    return sorted(scored, key=lambda gf: (gf[1] if lower else -gf[1], gf[0].label, gf[0].strategy_id))


def over_budget(gs: Sequence[Group], peak: str, budget: int | None) -> list[Group]:
    """The worst repeat must fit: a budget is a ceiling, so the max over repeats is checked, not the median."""
    if budget is None:
        return []
    return [g for g in gs if (vs := g.values(lambda t: t.metrics.get(peak))) and max(vs) > budget]


def settings(strategy: Strategy) -> dict[str, Any]:
    """The knobs a recommendation names, as the YAML spells them."""
    ld, gen = strategy.load, strategy.generate
    return {"device_map": strategy.at("load.device_map"), "dtype": ld.dtype, "quantization": ld.quantization,
            "offload": ld.offload, "cache_implementation": gen.cache_implementation if gen else None,
            "max_new_tokens": gen.max_new_tokens if gen else None, "batch_size": gen.batch_size if gen else None,
            "loader": ld.loader.target if ld.loader else None}


