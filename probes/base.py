"""The small Probe interface: start, hear phase edges, stop with a ProbeResult.

A probe hooks one thing. It never renders and never decides the trial's
status: a probe that fails records why in its notes and the trial goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Mapping

from loadprof.probes._hooks import HookSet
from loadprof.core.clock import Clock


@dataclass(frozen=True)
class ProbeResult:
    name: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    per_phase: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    artifacts: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": dict(self.metrics),
                "per_phase": {k: dict(v) for k, v in self.per_phase.items()},
                "notes": list(self.notes), "artifacts": dict(self.artifacts)}


@dataclass
class ProbeContext:
    """What a probe may use: the trial clock, the hook registry, a phase opener, the trial folder and the sweep's
    constants."""

    clock: Clock
    hooks: HookSet
    phase: Callable[[str], ContextManager[str]]
    trial_dir: Path
    strategy: Any  # loadprof.strategies.model.Strategy
    t0_ns: int
    pid: int
    emit: Callable[[dict[str, Any]], None] = lambda ev: None
    #: figures of the machine, not the trial, that an earlier trial of the sweep measured (see BandwidthProbe)
    constants: Mapping[str, Any] = field(default_factory=dict)


class Probe:
    """Listed in loadprof.core.probe_registry, which is what makes the worker build it.

    A probe may also measure something of its own once the workload is done (the allocation trace, the
    bandwidth copy): it names that step's top-level phase in ``AFTER_WORKLOAD_PHASE`` and the worker calls
    ``after_workload`` inside that phase after the measured generate calls (only when the strategy generates),
    filing what it returns as trial metrics. Such a step runs after the workload so it never colours it.
    """

    NAME: ClassVar[str] = "probe"
    #: the top-level phase ``after_workload`` runs in (None: the probe has no after-workload step)
    AFTER_WORKLOAD_PHASE: ClassVar[str | None] = None

    def unavailable(self, ctx: ProbeContext) -> str | None:
        """A reason this probe cannot run here (None when it can)."""
        return None

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        """Called at every phase start/end with the '/'-path and the absolute clock time."""

    def after_workload(self, model: Any, ctx: ProbeContext) -> dict[str, Any]:
        """Measure after the measured generate calls; the returned metrics become the trial's metrics."""
        return {}

    def stop(self) -> ProbeResult | None:
        """The probe's result, filed under ``TrialResult.probes[NAME]``; None files nothing (a probe whose
        figures are all after-workload metrics)."""
        return ProbeResult(self.NAME)
