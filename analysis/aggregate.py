"""One summary per configuration (strategy): every headline figure over its ok repeats, as an ``Estimate``.

Trials are repeats of a configuration, so a report that lists only trials leaves the reader to guess the noise;
this is where the repeats become one median with its IQR and CI (loadprof.analysis.stats), once, for every
renderer. Failed, crashed, timed-out and skipped trials count in ``n_trials`` but never in a figure. Pure.
"""

from __future__ import annotations

from typing import Iterable

from loadprof.analysis import pareto, stats
from loadprof.analysis.derive import value
from loadprof.core.conclusions import ConfigSummary, Estimate
from loadprof.core import figures
from loadprof.results.model import TrialResult


def model_label(t: TrialResult) -> str:
    """The model as the reports name it (synthetic shape and dtype, or path / hub id): the Pareto grouping key."""
    m = t.strategy.model
    return f"{m.label} ({m.synthetic.dtype})" if m.synthetic is not None else m.label


def summarize(strategy_id: str, trials: list[TrialResult]) -> ConfigSummary:
    """One strategy's trials (any status) as a ``ConfigSummary`` over its ok ones."""
    ok = [t for t in trials if t.ok]
    first = ok[0] if ok else trials[0]
    summary: dict[str, Estimate] = {}
    for f in figures.PER_CONFIGURATION:
        est = stats.estimate(value(t, f) for t in ok)
        if est is not None:
            summary[f.key] = est
    return ConfigSummary(strategy_id=strategy_id, label=first.label or strategy_id, model=model_label(first),
                         n=len(ok), n_trials=len(trials), trial_ids=tuple(t.trial_id for t in trials),
                         figures=summary)


def configurations(trials: Iterable[TrialResult]) -> tuple[ConfigSummary, ...]:
    """Per strategy, in first-seen order, with each model's Pareto front marked (loadprof.analysis.pareto)."""
    by_id: dict[str, list[TrialResult]] = {}
    for t in trials:
        by_id.setdefault(t.strategy_id, []).append(t)
    return pareto.mark([summarize(sid, ts) for sid, ts in by_id.items()])
