"""What a sweep concluded, as objects of the one result model: findings, studies and recommendations.

Analysis (loadprof.analysis) builds them; every renderer reads them; ``SweepResult.to_dict`` serializes them,
once, in the shape docs/report-schema.md describes (unchanged from the dicts they replace).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping

#: the studies, in report order (loadprof.analysis.studies computes one kind per knob)
STUDY_KINDS = ("max_new_tokens", "batch_size", "quantization")
_STUDY_HEAD = ("vary", "description", "fixed", "trial_ids", "notes")
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


@dataclass(frozen=True)
class Estimate:
    """A figure over its repeats: median, IQR (q1..q3), bootstrap CI of the median (lo..hi, None below 2), n."""

    median: float
    q1: float
    q3: float
    n: int
    lo: float | None = None
    hi: float | None = None

    @property
    def spread(self) -> float:
        """Half the IQR: the ``±`` printed beside the median (0 for a single repeat)."""
        return (self.q3 - self.q1) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Estimate":
        return cls(**{k: d.get(k) for k in ("median", "q1", "q3", "n", "lo", "hi")})


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what was seen (title, detail), what to do (fix), the figures behind it (evidence) and the
    trials and strategies it was seen in.

    ``mistake``: a definite configuration or code mistake (an ignored kwarg, an upcast, an offload, a double load,
    a dominant user function, a wait, a pre-allocation) as opposed to an observation (a roofline gap, a lazy
    read). ``stake_s`` / ``stake_bytes``: the seconds and bytes at stake, measured or derived; ``stake_basis``
    says which figure or formula gave them. Severity (from the stake) first, then mistakes above observations, then
    stake.
    """

    kind: str
    severity: str
    title: str
    detail: str
    fix: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    trial_ids: tuple[str, ...] = ()
    label: str = ""
    mistake: bool = False
    stake_s: float | None = None
    stake_bytes: float | None = None
    stake_basis: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trial_ids"] = list(self.trial_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        known = {f.name for f in fields(cls)}  # an older file's ``score`` (superseded by the stakes) is dropped
        return cls(**{**{k: v for k, v in d.items() if k in known}, "trial_ids": tuple(d.get("trial_ids", ()))})

    @property
    def rank_key(self) -> tuple:
        """Severity, mistakes before observations, then the stake as a share (``stake_share``: seconds of the
        workload or bytes of the weights, whichever is larger, so a time and a memory finding compare on one
        scale), then seconds, then bytes."""
        share = self.evidence.get("stake_share")
        share = share if isinstance(share, (int, float)) and not isinstance(share, bool) else 0.0
        return (SEVERITY_ORDER.get(self.severity, 9), not self.mistake, -share, -(self.stake_s or 0.0),
                -(self.stake_bytes or 0.0), self.kind, self.label)


@dataclass(frozen=True)
class Study:
    """One series of one study: ok trials that differ only in ``vary`` (medians over repeats), and what moving
    that knob did. ``figures`` holds the kind's own table and fits: ``points``/``fits``/``sites`` for
    max_new_tokens, ``rows``/best batch for batch_size, ``rows``/baseline for quantization. ``notes``: what the
    fits allow to be said (trends with their intervals, knees, the formula behind a growth), worded by analysis;
    absent from files written before them (``loadprof report`` recomputes)."""

    kind: str
    vary: str
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    trial_ids: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"vary": self.vary, "description": self.description, "fixed": dict(self.fixed),
                "trial_ids": list(self.trial_ids), **({"notes": list(self.notes)} if self.notes else {}),
                **self.figures}

    @classmethod
    def from_dict(cls, kind: str, d: Mapping[str, Any]) -> "Study":
        return cls(kind=kind, vary=d.get("vary", ""), description=d.get("description", ""),
                   fixed=d.get("fixed") or {}, trial_ids=tuple(d.get("trial_ids") or ()),
                   figures={k: v for k, v in d.items() if k not in _STUDY_HEAD},
                   notes=tuple(str(n) for n in d.get("notes") or ()))


def studies_to_dict(studies: Iterable[Study]) -> dict[str, list[dict[str, Any]]]:
    studies = list(studies)
    return {k: [s.to_dict() for s in studies if s.kind == k] for k in
            (*STUDY_KINDS, *sorted({s.kind for s in studies} - set(STUDY_KINDS)))}


def studies_from_dict(d: Mapping[str, Any]) -> tuple[Study, ...]:
    return tuple(Study.from_dict(kind, s) for kind, series in (d or {}).items() for s in series or ())


@dataclass(frozen=True)
class Figure:
    """A ranked figure: its metric name, value (None when nothing measured it) and unit."""

    name: str
    value: float | None = None
    unit: str = ""


@dataclass(frozen=True)
class RunnerUp:
    label: str
    trial_ids: tuple[str, ...]
    figure: Figure


@dataclass(frozen=True)
class Candidate:
    """One configuration ranked for an objective: its repeats' figure and how many strategies it pools."""

    label: str
    trial_ids: tuple[str, ...]
    estimate: Estimate | None
    strategies: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "trial_ids": list(self.trial_ids), "strategies": self.strategies,
                "estimate": self.estimate.to_dict() if self.estimate else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Candidate":
        est = d.get("estimate")
        return cls(str(d.get("label", "")), tuple(d.get("trial_ids") or ()),
                   Estimate.from_dict(est) if est else None, int(d.get("strategies") or 1))


#: how a recommendation was decided: a clear pick, a tie broken by a stated rule, the only configuration,
#: no pick because the repeats cannot separate the leaders, or nothing measurable
VERDICTS = ("pick", "tie", "only", "undecided", "none")


@dataclass(frozen=True)
class Recommendation:
    """The configuration to use for one objective and one model, or why there is none.

    ``verdict`` says how it was decided (VERDICTS); ``label`` is None unless something was picked. ``estimate``
    is the pick's figure over its repeats; ``tied`` the configurations the repeats cannot tell from the pick, and
    ``rule`` how the tie was broken; ``candidates`` the whole ranking; ``pooled`` the knobs that cannot affect
    the objective (strategies differing only there are one configuration); ``tradeoffs`` what the pick costs."""

    objective: str
    figure: Figure
    label: str | None = None
    trial_ids: tuple[str, ...] = ()
    settings: Mapping[str, Any] | None = None
    runner_up: RunnerUp | None = None
    margin_pct: float | None = None
    tradeoffs: tuple[str, ...] = ()
    reason: str | None = None
    excluded_over_budget: tuple[str, ...] = ()
    model: str = ""
    verdict: str = "none"
    estimate: Estimate | None = None
    tied: tuple[str, ...] = ()
    rule: str = ""
    pooled: tuple[str, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    method: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("trial_ids", "tradeoffs", "excluded_over_budget", "tied", "pooled", "notes"):
            d[k] = list(d[k])
        if self.runner_up is not None:
            d["runner_up"]["trial_ids"] = list(self.runner_up.trial_ids)
        d["estimate"] = self.estimate.to_dict() if self.estimate else None
        d["candidates"] = [c.to_dict() for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], objective: str = "") -> "Recommendation":
        ru, est = d.get("runner_up"), d.get("estimate")
        verdict = d.get("verdict") or ("pick" if d.get("label") else "none")  # schema 2 had no verdict
        return cls(objective=d.get("objective", objective), figure=Figure(**d["figure"]), label=d.get("label"),
                   trial_ids=tuple(d.get("trial_ids") or ()), settings=d.get("settings"),
                   runner_up=RunnerUp(ru["label"], tuple(ru.get("trial_ids") or ()), Figure(**ru["figure"]))
                   if ru else None, margin_pct=d.get("margin_pct"), tradeoffs=tuple(d.get("tradeoffs") or ()),
                   reason=d.get("reason"), excluded_over_budget=tuple(d.get("excluded_over_budget") or ()),
                   model=str(d.get("model") or ""), verdict=verdict,
                   estimate=Estimate.from_dict(est) if est else None, tied=tuple(d.get("tied") or ()),
                   rule=str(d.get("rule") or ""), pooled=tuple(d.get("pooled") or ()),
                   candidates=tuple(Candidate.from_dict(c) for c in d.get("candidates") or ()),
                   method=str(d.get("method") or ""), notes=tuple(d.get("notes") or ()))


@dataclass(frozen=True)
class CapWarning:
    """A strategy whose longest answer used under 30% of max_new_tokens."""

    label: str
    trial_ids: tuple[str, ...]
    generated: int
    cap: int
    share: float
    advice: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CapWarning":
        share = d.get("share")
        advice = d.get("advice") or (f"generated {d.get('generated')} of max_new_tokens={d.get('cap')}"
                                     + (f" ({share:.0%})" if isinstance(share, (int, float)) else ""))
        return cls(str(d.get("label", "")), tuple(d.get("trial_ids") or ()), d.get("generated"), d.get("cap"),
                   share, advice)


@dataclass(frozen=True)
class Recommendations:
    """One ``Recommendation`` per model and objective, under one memory budget, plus the max_new_tokens warnings.

    Models are never compared with each other: a sweep over two models gets two sets of picks."""

    picks: tuple[Recommendation, ...] = ()
    memory_budget_bytes: int | None = None
    peak_metric: str | None = None
    max_new_tokens_warnings: tuple[CapWarning, ...] = ()
    excluded_over_budget: tuple[str, ...] = ()  # strategies whose worst repeat's peak exceeds the budget

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.picks))

    def get(self, objective: str, model: str | None = None) -> Recommendation | None:
        """The pick for ``objective`` (of ``model``; of the first model when None)."""
        model = self.models[0] if model is None and self.picks else model
        return next((r for r in self.picks if r.objective == objective and r.model == model), None)

    def to_dict(self) -> dict[str, Any]:
        if not self.picks and self.peak_metric is None:
            return {}
        return {"memory_budget_bytes": self.memory_budget_bytes, "peak_metric": self.peak_metric,
                "picks": [r.to_dict() for r in self.picks],
                "excluded_over_budget": list(self.excluded_over_budget),
                "max_new_tokens_warnings": [{**asdict(w), "trial_ids": list(w.trial_ids)}
                                            for w in self.max_new_tokens_warnings]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Recommendations":
        d = d or {}
        picks = [Recommendation.from_dict(r) for r in d.get("picks") or ()]
        picks += [Recommendation.from_dict(r, k) for k, r in (d.get("objectives") or {}).items()]  # schema 2
        return cls(picks=tuple(picks),
                   memory_budget_bytes=d.get("memory_budget_bytes"), peak_metric=d.get("peak_metric"),
                   max_new_tokens_warnings=tuple(CapWarning.from_dict(w) for w in d.get("max_new_tokens_warnings") or ()),
                   excluded_over_budget=tuple(d.get("excluded_over_budget") or ()))


@dataclass(frozen=True)
class ConfigSummary:
    """One strategy over its repeats: each figure of ``figures.PER_CONFIGURATION`` (by key) as an ``Estimate`` of
    its ok repeats.

    Repeats are only useful aggregated: a reader compares configurations, not trials, and a figure without its
    spread cannot say whether a difference is noise. ``n`` counts ok repeats, ``n_trials`` every trial of the
    strategy. ``pareto`` is True on its model's Pareto front, False when dominated (``dominated_by`` names by
    whom), None when not compared; ``pareto_on`` names the figures dominance was decided on (medians).
    """

    strategy_id: str
    label: str
    model: str
    n: int
    n_trials: int
    trial_ids: tuple[str, ...] = ()
    figures: Mapping[str, Estimate] = field(default_factory=dict)
    pareto: bool | None = None
    pareto_on: tuple[str, ...] = ()
    dominated_by: tuple[str, ...] = ()

    def median(self, key: str) -> float | None:
        est = self.figures.get(key)
        return est.median if est is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy_id": self.strategy_id, "label": self.label, "model": self.model, "n": self.n,
                "n_trials": self.n_trials, "trial_ids": list(self.trial_ids),
                "figures": {k: e.to_dict() for k, e in self.figures.items()}, "pareto": self.pareto,
                "pareto_on": list(self.pareto_on), "dominated_by": list(self.dominated_by)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ConfigSummary":
        return cls(strategy_id=str(d.get("strategy_id", "")), label=str(d.get("label", "")),
                   model=str(d.get("model", "")), n=int(d.get("n") or 0), n_trials=int(d.get("n_trials") or 0),
                   trial_ids=tuple(d.get("trial_ids") or ()),
                   figures={k: Estimate.from_dict(e) for k, e in (d.get("figures") or {}).items()},
                   pareto=d.get("pareto"), pareto_on=tuple(d.get("pareto_on") or ()),
                   dominated_by=tuple(d.get("dominated_by") or ()))
