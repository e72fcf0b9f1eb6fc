"""The sweep-level lesson of a lazy load: the load phase alone would have misjudged two strategies.

With memory-mapped safetensors and no dtype conversion ``from_pretrained`` returns before the weights are read;
the reads land in the first forward (or in validation). Per trial that is the ``lazy_load`` observation. Across
strategies it becomes a decision: two strategies the load phase cannot tell apart (or ranks the wrong way) whose
real load cost (load + validation + first forward) differs beyond the noise. That is what a user comparing
``load`` alone would have got wrong, so it is said first, with both figures and the CI of the difference.
Imports the load triggered are left out of both sides: a fresh and a pre-imported process differ there whatever
the load settings (the ``lazy_import`` finding says so on its own).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Iterable

from loadprof.analysis import stats
from loadprof.analysis.derive import load_cost_s, load_import_s, phase_import_s
from loadprof.analysis.groups import Group, by_model, groups
from loadprof.core import figures, units
from loadprof.results.model import Finding, TrialResult

KIND = "load_hides_cost"


def _load_only(t: TrialResult) -> float | None:
    """The load phase less the imports inside it."""
    load = figures.LOAD_S.read(t.metrics)
    return None if load is None else load - phase_import_s(t, "load")


def _cost_only(t: TrialResult) -> float | None:
    """The real load cost less the imports inside it."""
    cost = load_cost_s(t)
    return None if cost is None else cost - (load_import_s(t) or 0.0)


def hidden_load_cost(trials: Iterable[TrialResult]) -> list[Finding]:
    """Per model, the pair of strategies whose real load cost differs most beyond the noise while the load phase
    says they are alike or ranks them the other way (at most one finding per model; none below MIN_REPEATS)."""
    out = []
    for gs in by_model(groups(trials)).values():
        found = [f for a, b in combinations(gs, 2) if (f := _pair(a, b)) is not None]
        if found:
            out.append(max(found, key=lambda f: f.stake_s or 0.0))
    return out


def _values(g: Group, fn: Callable[[TrialResult], float | None]) -> list[float]:
    return [v for t in g.trials if (v := fn(t)) is not None]


def _pair(a: Group, b: Group) -> Finding | None:
    cost = stats.compare_repeats(_values(a, _cost_only), _values(b, _cost_only))
    load = stats.compare_repeats(_values(a, _load_only), _values(b, _load_only))
    if cost is None or load is None or not cost.distinguishable or cost.lo is None or cost.hi is None:
        return None
    if cost.diff < 0:  # b the faster: say it as "slow vs fast"
        return _pair(b, a)
    same = load.distinguishable is False
    flipped = load.distinguishable and load.diff < 0
    if not (same or flipped):
        return None
    a_load, b_load = units.seconds(load.a.median), units.seconds(load.b.median)
    judged = (f"the load phase alone cannot tell them apart ({b_load} vs {a_load})" if same else
              f"the load phase alone ranks '{b.label}' first ({b_load} vs {a_load})")
    return Finding(
        KIND, "high",
        f"'{b.label}' costs {units.seconds(cost.diff)} more to load than '{a.label}' "
        f"({units.seconds(cost.b.median)} vs {units.seconds(cost.a.median)}, 95% CI of the difference "
        f"{units.seconds(cost.lo)} to {units.seconds(cost.hi)}); {judged}: the weights are read at the first "
        "forward, not in the load",
        f"real load cost (load + validation + first forward, imports left out) over {cost.b.n} and {cost.a.n} "
        f"repeats: {units.estimate(cost.b, 's')} for '{b.label}', {units.estimate(cost.a, 's')} for '{a.label}'; "
        f"the load phase alone: {units.estimate(load.b, 's')} and {units.estimate(load.a, 's')}. Without a dtype "
        "conversion from_pretrained only maps the weights; the reads land where the model is first used.",
        "compare load settings on the real load cost (load + validation + first forward, what `fastest load` "
        "ranks by), never on the load phase alone",
        {"subject": f"{a.strategy_id}|{b.strategy_id}", "cost": cost.to_dict(), "load": load.to_dict()},
        tuple(t.trial_id for t in (*b.trials, *a.trials)), f"{b.label}, {a.label}",
        stake_s=cost.diff, stake_basis="difference of the median real load costs (imports left out)")
