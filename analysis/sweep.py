"""One analysis of a sweep, shared by ``loadprof compare`` and ``loadprof report``.

Derived figures per trial, then the studies, the ranked findings (per-trial rules plus the studies' own) and the
recommendations, all written into the one ``SweepResult`` that every renderer reads. Kept apart from the rules
and studies themselves so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import replace

from loadprof.analysis.aggregate import configurations
from loadprof.analysis.circumstances import circumstances
from loadprof.analysis.derive import enrich
from loadprof.analysis.findings import sweep_findings
from loadprof.analysis.load_lesson import hidden_load_cost
from loadprof.analysis.recommend import recommendations
from loadprof.analysis.studies import preallocation_findings, studies
from loadprof.results.model import SweepResult


def analyse_sweep(result: SweepResult) -> SweepResult:
    """``result`` with derived figures (recomputed, so an older results file gets today's), studies, findings,
    recommendations, per-configuration summaries and the circumstances (harness cost, busy machine, trials side by
    side) filled in from its trials."""
    trials = tuple(enrich(t) for t in result.trials)
    st = studies(trials)
    findings = sweep_findings(trials, [*preallocation_findings(st), *hidden_load_cost(trials)])
    return replace(result, trials=trials, findings=tuple(findings), studies=st,
                   recommendations=recommendations(trials), configurations=configurations(trials),
                   circumstances=circumstances(trials))
