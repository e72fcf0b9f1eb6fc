"""The verdict block every report opens with: the answer first, the evidence after.

What the top finding says and puts at stake, which configuration to use per objective with its uncertainty
(``sweep.recommendations.picks``), and what to do next. Plain data (lines of text) so the console, report.md and
report.html say the same words; each renderer only lays them out. Reads the result model only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from loadprof.core import figures, units
from loadprof.reports.sections import busy_line, concurrency_line, verdict
from loadprof.results.model import Recommendation, SweepResult

#: what each objective is called in the block ("fastest load"): ``Objective.best``
BEST = {o.name: o.best for o in figures.OBJECTIVES}
REPEAT_ADVICE = "add `repeat: 3` to the YAML so configurations can be told apart beyond the noise"
IDLE_ADVICE = "rerun on an idle machine: other processes ran during some trials (see the busy-machine line)"


@dataclass(frozen=True)
class VerdictBlock:
    """``headline``: the top finding in one line (``sections.verdict``); ``picks``: (objective, answer) pairs;
    ``next_steps``: what to do next, most useful first; ``busy``: the busy-machine line, when it fires;
    ``concurrency``: the line saying trials ran several at a time, when they did."""

    headline: str | None = None
    picks: list[tuple[str, str]] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    busy: str | None = None
    concurrency: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.headline or self.picks or self.next_steps or self.busy or self.concurrency)


def pick_text(r: Recommendation, many_models: bool = False) -> str:
    """One objective's answer with its uncertainty: ``tiny bf16 — 1.23 s ± 0.04 (n=3) (pick)``."""
    unit = r.figure.unit
    who = f"{r.model}: " if many_models and r.model else ""
    if r.verdict == "none" or (r.label is None and not r.candidates):
        return f"{who}nothing to pick: {r.reason or 'nothing measured it'}"
    if r.label is None:  # undecided: the ranking by median, nothing picked
        lead = ", ".join(f"{c.label} {units.estimate(c.estimate, unit)}" for c in r.candidates[:3])
        return f"{who}undecided (too few repeats to compare): by median {lead}"
    shown = units.estimate(r.estimate, unit) if r.estimate else units.value(r.figure.value, unit)
    if r.verdict == "tie":
        rule = f"; broken by {r.rule}" if r.rule else ""
        return f"{who}{r.label} — {shown} (tie with {', '.join(r.tied)} within the noise{rule})"
    if r.verdict == "only":
        n = r.candidates[0].strategies if r.candidates else 1
        return f"{who}{r.label} — {shown} " + (f"({r.rule})" if n > 1 and r.rule else
                                              "(the only configuration measured)")
    return f"{who}{r.label} — {shown} ({r.verdict}: ahead beyond the noise)"


def verdict_block(sweep: SweepResult) -> VerdictBlock:
    """The block at the top of every report (empty for an empty sweep)."""
    rec = sweep.recommendations
    many = len(rec.models) > 1
    picks = [(BEST.get(r.objective, r.objective), pick_text(r, many)) for r in rec.picks]
    if picks and all(r.verdict == "none" for r in rec.picks):
        picks = []
    steps: list[str] = []
    if sweep.findings:
        top = sweep.findings[0]
        steps.append(f"fix the top finding: {top.fix}")
    if any(r.verdict == "undecided" for r in rec.picks):
        steps.append(REPEAT_ADVICE)
    busy = busy_line(sweep)
    if busy:
        steps.append(IDLE_ADVICE)
    bad = [t for t in sweep.trials if not t.ok and t.status != "skipped"]
    if bad:
        many_bad = len(bad) > 1
        steps.append(f"{len(bad)} trial{'s' if many_bad else ''} did not finish ("
                     + ", ".join(sorted({t.status for t in bad}))
                     + f"): read {'their reasons' if many_bad else 'its reason'} in the summary")
    headline = verdict(sweep)
    return VerdictBlock(headline.split(". Fix: ")[0] if headline else None, picks, steps, busy,
                        concurrency_line(sweep))
