"""One summary per configuration (strategy): every headline figure over its ok repeats, as an ``Estimate``.

Trials are repeats of a configuration, so a report that lists only trials leaves the reader to guess the noise;
this is where the repeats become one median with its IQR and CI (loadprof.analysis.stats), once, for every
renderer. Failed, crashed, timed-out and skipped trials count in ``n_trials`` but never in a figure. Pure.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from loadprof.analysis import pareto, stats
from loadprof.analysis.derive import load_cost_s, prefill_tok_s
from loadprof.core.conclusions import CONFIG_FIGURES, ConfigSummary, Estimate
from loadprof.results.model import TrialResult

#: figures older report.json files lack in ``metrics``: derived from the trial instead
_DERIVED: Mapping[str, Callable[[TrialResult], Any]] = {"load_cost_s": load_cost_s, "prefill_tok_s": prefill_tok_s}


def model_label(t: TrialResult) -> str:
    """The model as the reports name it (synthetic shape and dtype, or path / hub id): the Pareto grouping key."""
    m = t.strategy.model
    return f"{m.label} ({m.synthetic.dtype})" if m.synthetic is not None else m.label


def figure(t: TrialResult, key: str) -> Any:
    """``metrics[key]``, else its derivation from the trial's phases (files written before the key existed)."""
    v = t.metrics.get(key)
    if v is None and key in _DERIVED:
        v = _DERIVED[key](t)
    return v


def summarize(strategy_id: str, trials: list[TrialResult]) -> ConfigSummary:
    """One strategy's trials (any status) as a ``ConfigSummary`` over its ok ones."""
    ok = [t for t in trials if t.ok]
    first = ok[0] if ok else trials[0]
    figures: dict[str, Estimate] = {}
    for key in CONFIG_FIGURES:
        est = stats.estimate(figure(t, key) for t in ok)
        if est is not None:
            figures[key] = est
    return ConfigSummary(strategy_id=strategy_id, label=first.label or strategy_id, model=model_label(first),
                         n=len(ok), n_trials=len(trials), trial_ids=tuple(t.trial_id for t in trials),
                         figures=figures)


def configurations(trials: Iterable[TrialResult]) -> tuple[ConfigSummary, ...]:
    """Per strategy, in first-seen order, with each model's Pareto front marked (loadprof.analysis.pareto)."""
    by_id: dict[str, list[TrialResult]] = {}
    for t in trials:
        by_id.setdefault(t.strategy_id, []).append(t)
    return pareto.mark([summarize(sid, ts) for sid, ts in by_id.items()])
