"""The one result model every renderer reads: frozen, JSON round-trippable, versioned.

Units live in key names (``_s``, ``_ms``, ``_bytes``, ``_tok_s``). No rendering
here: reports/* format these objects, they never measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from loadprof.core.conclusions import (CapWarning, ConfigSummary, Estimate, Figure, Finding, Recommendation,
                                  Recommendations, RunnerUp, Study, studies_from_dict, studies_to_dict)
from loadprof.core.circumstances import Circumstances
from loadprof.core.errors import LoadprofError, SpecError
from loadprof.core.payloads import Payload, PayloadError
from loadprof.core.phases import PhaseTiming, find_phase
from loadprof.core.probe_registry import REGISTRY, payload_type
from loadprof.results.migrate import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, migrate_trial
from loadprof.strategies.model import Strategy

__all__ = ["PhaseTiming", "find_phase", "TrialResult", "Finding", "Estimate", "ConfigSummary", "Study", "Figure",
           "RunnerUp", "Recommendation", "Recommendations", "CapWarning", "SweepResult", "Strategy", "SCHEMA_VERSION"]

P = TypeVar("P", bound=Payload)

STATUSES = ("ok", "failed", "crashed", "timeout", "skipped")
#: ``TrialResult.harness["isolation"]`` of a block measured in the user's own process (loadprof.profile())
IN_PROCESS = "in-process"


@dataclass(frozen=True)
class TrialResult:
    """One isolated run of a strategy: its status (and why, when not ok), the phase tree on the trial's clock,
    flat ``metrics`` (units in the key names), each probe's typed payload (``probes``, read with ``payload``;
    a payload given as its dict is read by its registry type, strictly; a probe this version does not know
    stays as filed), and what the harness measured around the workload. Serialized only by ``to_dict``."""

    trial_id: str
    strategy_id: str
    label: str
    repeat_index: int
    status: str
    strategy: Strategy
    wall_s: float | None = None
    phases: tuple[PhaseTiming, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    probes: Mapping[str, Payload | Mapping[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    reason: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    stderr_tail: str = ""
    harness: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    started_at: str = ""
    artifacts: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        object.__setattr__(self, "probes", {name: _payload(name, p) for name, p in self.probes.items()})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def concurrency(self) -> int:
        """How many trials ran at once beside this one, itself included (``harness.concurrency``; 1 when
        absent): timings taken side by side share the machine's cores, memory bandwidth and disk."""
        value = self.harness.get("concurrency")
        return value if isinstance(value, int) and value > 1 else 1

    def phase(self, path: str) -> PhaseTiming | None:
        return find_phase(self.phases, path)

    def finding(self, kind: str, severity: str, title: str, detail: str, fix: str, *, mistake: bool = False,
                stake_s: float | None = None, stake_bytes: float | None = None, basis: str = "",
                **evidence: Any) -> Finding:
        """A finding about this trial (the one constructor every rule uses)."""
        return Finding(kind, severity, title, detail, fix, evidence, (self.trial_id,), self.label, mistake, stake_s,
                       stake_bytes, basis)

    def payload(self, kind: type[P]) -> P | None:
        """The payload of type ``kind`` this trial holds (None: its probe did not run, or filed nothing): from
        ``probes``, or for a metrics-filed one (``kind.FILED``) read from ``metrics``, strictly, each call."""
        if kind.FILED == "metrics":  # read lazily from metrics a file may have tampered with: unreadable is absent
            try:
                return kind.from_metrics(self.metrics)
            except PayloadError:
                return None
        p = self.probes.get(kind.PROBE)
        return p if isinstance(p, kind) else None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(strategy=self.strategy.to_dict(), phases=[p.to_dict() for p in self.phases], notes=list(self.notes),
                 metrics=dict(self.metrics), harness=dict(self.harness), env=dict(self.env),
                 artifacts=dict(self.artifacts),
                 probes={k: p.to_dict() if isinstance(p, Payload) else dict(p) for k, p in self.probes.items()})
        return {"schema_version": SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialResult":
        d = migrate_trial(dict(d))
        d["phases"] = tuple(PhaseTiming.from_dict(p) for p in d.get("phases", ()))
        d["notes"] = tuple(d.get("notes", ()))
        try:
            d["strategy"] = Strategy.from_dict(d["strategy"])
        except (SpecError, KeyError, TypeError) as e:
            raise LoadprofError(f"trial {d.get('trial_id', '?')!r}: its strategy does not read as a loadprof strategy "
                                f"({type(e).__name__}: {e})", exit_code=2,
                                hint="the file was written by another loadprof version or edited by hand") from e
        known = set(cls.__dataclass_fields__)
        try:
            trial = cls(**{k: v for k, v in d.items() if k in known})
            for e in REGISTRY:  # the metrics-filed payloads must read too (``payload`` later treats one as absent)
                if e.payload.FILED == "metrics":
                    e.payload.from_metrics(trial.metrics)
        except PayloadError as e:
            raise LoadprofError(f"trial {d.get('trial_id', '?')!r}: a probe's payload does not read: {e}", exit_code=2,
                                hint="the file was written by another loadprof version or edited by hand") from e
        return trial


def _payload(name: str, p: Any) -> Any:
    """A payload as given, or read from its dict by the type the registry names (an unknown probe: as filed)."""
    kind = payload_type(name)
    if kind is None or kind.FILED != "probes" or isinstance(p, Payload):
        return p
    return kind.from_dict(p, name)


@dataclass(frozen=True)
class SweepResult:
    """One sweep: its trials, and what analysis concluded from them (findings, studies, recommendations, one
    summary per configuration, the circumstances the numbers were taken under: filled by
    ``loadprof.analysis.sweep.analyse_sweep``). What every renderer reads; serialized only by ``to_dict``."""

    run_id: str
    name: str
    source: str
    created_at: str
    trials: tuple[TrialResult, ...] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    findings: tuple[Finding, ...] = ()
    studies: tuple[Study, ...] = ()
    recommendations: Recommendations = field(default_factory=Recommendations)
    configurations: tuple[ConfigSummary, ...] = ()
    circumstances: Circumstances = field(default_factory=Circumstances)
    schema_version: int = SCHEMA_VERSION

    def to_pandas(self) -> Any:
        """One row per trial (knobs by YAML path, every scalar metric); needs pandas (``loadprof[pandas]``)."""
        from loadprof.core.frames import trials_frame

        return trials_frame(self)

    def phases_frame(self) -> Any:
        """One row per phase of every trial (path, depth, start/end, duration, uncovered time)."""
        from loadprof.core.frames import phases_frame

        return phases_frame(self)

    def studies_of(self, kind: str) -> list[Study]:
        return [s for s in self.studies if s.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "run_id": self.run_id, "name": self.name,
            "source": self.source, "created_at": self.created_at, "interrupted": self.interrupted,
            "env": dict(self.env), "trials": [t.to_dict() for t in self.trials],
            "findings": [f.to_dict() for f in self.findings], "studies": studies_to_dict(self.studies),
            "recommendations": self.recommendations.to_dict(),
            "configurations": [c.to_dict() for c in self.configurations],
            "circumstances": self.circumstances.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepResult":
        if d.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
            raise LoadprofError(
                f"report.json has schema_version {d.get('schema_version')!r}; this loadprof reads "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}", exit_code=2,
                hint="re-render it with the loadprof that wrote it, or rerun the sweep")
        return cls(
            run_id=d["run_id"], name=d["name"], source=d["source"], created_at=d["created_at"],
            trials=tuple(TrialResult.from_dict(t) for t in d["trials"]), env=d.get("env", {}),
            interrupted=bool(d.get("interrupted", False)), findings=tuple(Finding.from_dict(f) for f in d.get("findings", ())),
            studies=studies_from_dict(d.get("studies") or {}),
            recommendations=Recommendations.from_dict(d.get("recommendations")),
            configurations=tuple(ConfigSummary.from_dict(c) for c in d.get("configurations") or ()),
            circumstances=Circumstances.from_dict(d.get("circumstances")),
        )
