"""Which measured configuration to use for an objective, under a memory budget, and why.

Pure analysis over finished TrialResults (runs in the parent: no torch/transformers at import). Every figure is a
median over a strategy's ok repeats of metrics already in report.json: nothing is re-measured, and values are
never rounded here (only the renderer rounds). Trade-offs compare the pick with other measured strategies, so each
one names the strategy and the figures it rests on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from loadprof.analysis import stats
from loadprof.analysis.groups import (SHORT_ANSWER_SHARE, Group, by_model, checked_configurations, distinct, groups,
                                      memory_figure, over_budget, rank_groups, reader, settings)
from loadprof.analysis.knobs import differing, irrelevant_paths, reasons
from loadprof.analysis.lengths import LengthsCoverage
from loadprof.analysis.tradeoffs import tradeoffs
from loadprof.core import figures
from loadprof.core.errors import SpecError
from loadprof.core.units import bytes_h
from loadprof.strategies.model import LoadSpec
from loadprof.core.conclusions import Candidate
from loadprof.results.model import CapWarning, Figure, Recommendation, Recommendations, RunnerUp, TrialResult

# ---------------------------------------------------------------- recommendations

TIE_RULE = "the simplest of the tied (fewest non-default load settings), then the lowest peak memory"
TIE_RULE_MEMORY = "the simplest of the tied (fewest non-default load settings), then the lowest real load cost"


def _simplicity(g: Group) -> int:
    """Load settings that differ from LoadSpec's defaults: fewer is simpler to run and to reason about."""
    ld, plain = g.strategy.load, LoadSpec()
    return sum(1 for f in dataclasses.fields(LoadSpec) if getattr(ld, f.name) != getattr(plain, f.name))


def _decide(ranked: Sequence[tuple[Group, float]], objective: str, f: figures.Figure,
            peak: figures.Figure) -> tuple[str, Group | None, list[Group], str]:
    """(verdict, pick, tied, rule) from configurations ranked by median: the leader wins only when the repeats
    separate it from every other one (stats.compare_repeats); indistinguishable ones are a tie broken by TIE_RULE; with
    too few repeats to compare nothing is picked."""
    best = ranked[0][0]
    if len(ranked) == 1:
        return "only", best, [], _only_rule(best, f)
    fn = reader(f)
    tied, undecided = [best], False
    for g, _ in ranked[1:]:
        d = distinct(best.values(fn), g.values(fn), f)
        if d is None:
            undecided = True
        elif not d:
            tied.append(g)
    if undecided:
        return "undecided", None, tied, (f"not distinguishable without repeats: add `repeat: {stats.MIN_REPEATS}` "
                                         f"(or more) to the YAML and rerun")
    if len(tied) == 1:
        return "pick", best, [], ("allocator bytes are exact: ahead of every other configuration by more than "
                                  "1 MiB and 1%" if f.exact else
                                  "ahead of every other configuration beyond the noise")
    other = reader(figures.LOAD_COST_S if objective == figures.MEMORY.name else peak)
    chosen = min(tied, key=lambda g: (_simplicity(g), g.median(other) if g.median(other) is not None
                                      else float("inf"), g.label))
    return ("tie", chosen, [g for g in tied if g is not chosen],
            TIE_RULE_MEMORY if objective == figures.MEMORY.name else TIE_RULE)


def _only_rule(g: Group, f: figures.Figure) -> str:
    """Why one configuration is all there is: one strategy measured, or several pooled (checked, or not)."""
    if not g.members:
        return "the only configuration measured for this objective"
    n = len(g.members)
    if min(len(m.values(reader(f))) for m in g.members) < stats.MIN_REPEATS:
        return (f"one configuration for this objective: its {n} strategies differ only in knobs that cannot affect "
                f"it, pooled by the knob table alone (too few repeats to check that against the data)")
    return (f"one configuration for this objective: its {n} strategies differ only in knobs that cannot affect it, "
            f"and their repeats agree")


def _candidates(ranked: Sequence[tuple[Group, float]], fn: Callable[[TrialResult], Any]) -> tuple[Candidate, ...]:
    return tuple(Candidate(g.label, tuple(g.trial_ids), g.estimate(fn), max(1, len(g.members))) for g, _ in ranked)


def _recommend_model(model: str, gs: list[Group], objective: str, peak: figures.Figure,
                     budget: int | None) -> Recommendation:
    """The decision for one model's strategies (see ``recommend``)."""
    f = figures.objective_figure(objective, peak)
    name, unit, fn = f.key, f.unit, reader(f)
    over = over_budget(gs, peak, budget)
    confs, drift = checked_configurations([g for g in gs if g not in over], objective, f)
    ranked = rank_groups(confs, f)
    pooled = tuple(dict.fromkeys(p for g in confs if g.members for p in differing(
        [m.strategy for m in g.members], irrelevant_paths(objective, g.strategy))))
    empty = Recommendation(objective, Figure(name, None, unit), excluded_over_budget=tuple(g.label for g in over),
                           model=model, method=stats.COMPARE_METHOD, pooled=pooled,
                           notes=tuple(reasons(objective, pooled)))
    if not ranked:
        if not confs and over:
            reason = (f"every strategy's peak memory ({peak.key}) exceeds the budget of {budget} bytes "
                      f"({bytes_h(budget)})")
        else:
            reason = (f"no strategy{' within the budget' if over else ''} measured {name}"
                      + (" (generate: false?)" if objective in ("ttft", "throughput") else ""))
        return replace(empty, reason=reason)
    verdict, pick, tied, rule = _decide(ranked, objective, f, peak)
    cands = _candidates(ranked, fn)
    notes = (*empty.notes, *drift)
    base = replace(empty, verdict=verdict, rule=rule, candidates=cands, notes=notes,
                   tied=tuple(g.label for g in tied))
    if pick is None:
        return replace(base, reason=rule)
    value = pick.median(fn)
    others = [(g, v) for g, v in ranked if g is not pick]
    runner_up, margin = None, None
    if others:
        runner, rv = others[0]
        runner_up = RunnerUp(runner.label, tuple(runner.trial_ids), Figure(name, rv, unit))
        margin = (100.0 * (rv - value) / rv if f.lower_is_better else 100.0 * (value - rv) / rv) if rv else None
    tr = tradeoffs(pick, objective, gs, confs, peak)
    return replace(base, figure=Figure(name, value, unit), label=pick.label, trial_ids=tuple(pick.trial_ids),
                   settings=settings(pick.strategy, objective), runner_up=runner_up, margin_pct=margin,
                   tradeoffs=tuple(tr), estimate=pick.estimate(fn))


def recommend(trials: Iterable[TrialResult], objective: str,
              memory_budget_bytes: int | None = None) -> list[Recommendation]:
    """Per model, the configuration to use for ``objective`` among those whose peak memory fits the budget.

    Strategies of a model differing only in knobs that cannot affect the objective are pooled (knobs.py); the
    leader is picked only when its repeats separate it from every other configuration (stats.compare_repeats);
    otherwise the verdict is a tie (broken by TIE_RULE) or undecided (too few repeats: nothing is picked)."""
    if objective not in figures.OBJECTIVE_NAMES:
        raise SpecError(f"unknown objective {objective!r}; allowed: {', '.join(figures.OBJECTIVE_NAMES)}",
                        path="--objective")
    trials = list(trials)
    peak = memory_figure(trials)
    per_model = by_model(groups(trials))
    if not per_model:
        f = figures.objective_figure(objective, peak)
        return [Recommendation(objective, Figure(f.key, None, f.unit),
                               reason="no ok trial to recommend from", method=stats.COMPARE_METHOD)]
    return [_recommend_model(model, gs, objective, peak, memory_budget_bytes) for model, gs in per_model.items()]


def max_new_tokens_warnings(trials: Iterable[TrialResult]) -> list[CapWarning]:
    """Strategies whose longest answer (max over repeats) used under 30% of max_new_tokens."""
    from loadprof.analysis.studies import covering_cap

    out = []
    for g in groups(trials):
        gen = g.strategy.generate
        cap = gen.max_new_tokens if gen is not None else None
        made = g.values(lambda t: t.metrics.get("new_tokens"))
        if not cap or not made or max(made) >= SHORT_ANSWER_SHARE * cap:
            continue
        share = max(made) / cap
        advice = f"answers used {share:.0%} of max_new_tokens={cap}; a cap of {covering_cap(made)} covers the longest seen"
        if gen.cache_implementation == "static":
            advice += "; with a static cache the KV buffers are sized by the cap"
        if gen.stop_after:
            advice += f"; note stop_after={gen.stop_after} ended generation early by design"
        out.append(CapWarning(g.label, tuple(g.trial_ids), int(max(made)), cap, share, advice))
    return out


def recommendations(trials: Iterable[TrialResult], memory_budget_bytes: int | None = None) -> Recommendations:
    """A pick per objective under one budget, and the caps the answers did not need."""
    trials = list(trials)
    picks = [r for o in figures.OBJECTIVE_NAMES for r in recommend(trials, o, memory_budget_bytes)]
    over = tuple(dict.fromkeys(x for r in picks if r.objective == "load" for x in r.excluded_over_budget))
    return Recommendations(tuple(picks), memory_budget_bytes, memory_figure(trials).key,
                           tuple(max_new_tokens_warnings(trials)), over)


@dataclass(frozen=True)
class RecommendResult:
    """What ``loadprof recommend`` answers: the picks (one objective's, when asked), for which sweep and file,
    under which budget, and the coverage of the answer lengths given with ``--lengths``."""

    recommendations: Recommendations
    name: str
    path: str
    objectives: tuple[str, ...]
    budget_bytes: int | None = None
    coverage: LengthsCoverage | None = None
