"""The one result model every renderer reads: frozen, JSON round-trippable, versioned.

Units live in key names (``_s``, ``_ms``, ``_bytes``, ``_tok_s``). No rendering
here: reports/* format these objects, they never measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from loadprof.errors import LoadprofError

#: 2: the memory probe's whole-trial peaks are ``trial_peak_rss_bytes`` / ``trial_peak_cuda_allocated_bytes``,
#: so ``peak_rss_bytes`` means one thing (the workload's peak, in ``metrics``); version 1 files are migrated
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
_V1_RENAMES = {"peak_rss_bytes": "trial_peak_rss_bytes", "peak_cuda_allocated_bytes": "trial_peak_cuda_allocated_bytes"}


def _migrate_trial(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 trial (report.json or a results.jsonl line) in today's keys; a current one unchanged."""
    memory = (d.get("probes") or {}).get("memory")
    metrics = memory.get("metrics") if isinstance(memory, Mapping) else None
    if isinstance(metrics, Mapping) and any(old in metrics for old in _V1_RENAMES):
        metrics = {_V1_RENAMES.get(k, k): v for k, v in metrics.items()}
        d["probes"] = {**d["probes"], "memory": {**memory, "metrics": metrics}}
    return d
STATUSES = ("ok", "failed", "crashed", "timeout", "skipped")


@dataclass(frozen=True)
class PhaseTiming:
    """A named interval [start_s, end_s] relative to the trial's t0; children nest inside."""

    name: str
    start_s: float
    end_s: float
    children: tuple["PhaseTiming", ...] = ()
    incomplete: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def other_s(self) -> float:
        """Time inside this phase that no child covers (0 for a leaf: it has nothing to explain)."""
        if not self.children:
            return 0.0
        return max(0.0, self.duration_s - sum(c.duration_s for c in self.children))

    def find(self, path: str) -> "PhaseTiming | None":
        head, _, rest = path.partition("/")
        if head != self.name:
            return None
        if not rest:
            return self
        for c in self.children:
            hit = c.find(rest)
            if hit is not None:
                return hit
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "start_s": self.start_s, "end_s": self.end_s,
                             "duration_s": self.duration_s}
        if self.children:
            d["other_s"] = self.other_s
            d["children"] = [c.to_dict() for c in self.children]
        if self.incomplete:
            d["incomplete"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseTiming":
        return cls(
            name=d["name"], start_s=d["start_s"], end_s=d["end_s"],
            children=tuple(cls.from_dict(c) for c in d.get("children", ())),
            incomplete=bool(d.get("incomplete", False)),
        )


def find_phase(phases: Iterable[PhaseTiming], path: str) -> PhaseTiming | None:
    for p in phases:
        hit = p.find(path)
        if hit is not None:
            return hit
    return None


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    strategy_id: str
    label: str
    repeat_index: int
    status: str
    strategy: Mapping[str, Any]
    wall_s: float | None = None
    phases: tuple[PhaseTiming, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    probes: Mapping[str, Any] = field(default_factory=dict)
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def phase(self, path: str) -> PhaseTiming | None:
        return find_phase(self.phases, path)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = [p.to_dict() for p in self.phases]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialResult":
        d = _migrate_trial(dict(d))
        d["phases"] = tuple(PhaseTiming.from_dict(p) for p in d.get("phases", ()))
        d["notes"] = tuple(d.get("notes", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what was seen (title, detail), what to do (fix), the figures behind it (evidence) and
    the trials and strategies it was seen in; ``score`` ranks findings of one severity (often the stake)."""

    kind: str
    severity: str
    title: str
    detail: str
    fix: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    trial_ids: tuple[str, ...] = ()
    label: str = ""
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trial_ids"] = list(self.trial_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        return cls(**{**d, "trial_ids": tuple(d.get("trial_ids", ()))})


@dataclass(frozen=True)
class SweepResult:
    run_id: str
    name: str
    source: str
    created_at: str
    trials: tuple[TrialResult, ...] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    findings: tuple[Finding, ...] = ()
    studies: Mapping[str, Any] = field(default_factory=dict)
    recommendations: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "run_id": self.run_id, "name": self.name,
            "source": self.source, "created_at": self.created_at, "interrupted": self.interrupted,
            "env": dict(self.env), "trials": [t.to_dict() for t in self.trials],
            "findings": [f.to_dict() for f in self.findings], "studies": dict(self.studies),
            "recommendations": dict(self.recommendations),
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
            studies=d.get("studies", {}), recommendations=d.get("recommendations", {}),
        )
