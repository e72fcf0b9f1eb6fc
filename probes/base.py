"""The small probe interfaces: start, hear phase edges (or, from the parent, read the worker's events), stop with
a ProbeResult holding the probe's one payload (loadprof.core.payloads).

A probe hooks one thing. It never renders and never decides the trial's status: a probe that fails records why
in its notes and the trial goes on. ``Probe`` runs in the worker; ``ParentProbe`` in the runner, beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Mapping, Sequence

from loadprof.core import events
from loadprof.core.clock import Clock
from loadprof.core.payloads import Payload, PayloadError
from loadprof.core.probe_registry import payload_type
from loadprof.probes._hooks import HookSet


@dataclass(frozen=True)
class ProbeResult:
    """What a probe files when it stops: its payload (None: nothing under ``TrialResult.probes``), notes for the
    trial, and artifacts (name -> file in the trial folder). The ``probe`` event carries it, payload as
    ``to_dict()``; the parent reads it back with ``from_event``, by the payload type the registry names."""

    payload: Payload | None = None
    notes: tuple[str, ...] = ()
    artifacts: Mapping[str, str] = field(default_factory=dict)

    def event(self, name: str) -> dict[str, Any]:
        return events.make("probe", name=name, payload=None if self.payload is None else self.payload.to_dict(),
                           notes=list(self.notes), artifacts=dict(self.artifacts))

    @classmethod
    def from_event(cls, ev: Mapping[str, Any]) -> "ProbeResult":
        """Strict: a ``PayloadError`` when the payload does not read as its probe's type (or the probe is unknown)."""
        name, raw = ev.get("name"), ev.get("payload")
        kind = payload_type(name) if isinstance(name, str) else None
        if kind is None:
            raise PayloadError("", f"no probe called {name!r} in this loadprof")
        notes, artifacts = ev.get("notes") or [], ev.get("artifacts") or {}
        if not (isinstance(notes, list) and all(isinstance(n, str) for n in notes) and isinstance(artifacts, Mapping)
                and all(isinstance(v, str) for v in artifacts.values())):
            raise PayloadError(name, "notes must be a list of strings and artifacts an object of file names")
        return cls(None if raw is None else kind.from_dict(raw, name), tuple(notes), dict(artifacts))


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
    #: the one payload type it files (the registry names the same type; a test holds them equal)
    PAYLOAD: ClassVar[type[Payload]] = Payload
    #: the top-level phase ``after_workload`` runs in (None: the probe has no after-workload step)
    AFTER_WORKLOAD_PHASE: ClassVar[str | None] = None

    def unavailable(self, ctx: ProbeContext) -> str | None:
        """A reason this probe cannot run here (None when it can)."""
        return None

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        """Called at every phase start/end with the '/'-path and the absolute clock time."""

    def after_workload(self, model: Any, ctx: ProbeContext) -> Payload | None:
        """Measure after the measured generate calls; the payload (``FILED = "metrics"``) becomes trial metrics."""
        return None

    def stop(self) -> ProbeResult | None:
        """The probe's result, its payload filed under ``TrialResult.probes[NAME]``; None files nothing (a probe
        whose figures are all after-workload metrics)."""
        return None


@dataclass(frozen=True)
class ParentContext:
    """What a parent-side probe may use: the worker's pid, the trial folder and the strategy."""

    pid: int
    trial_dir: Path
    strategy: Any  # loadprof.strategies.model.Strategy


class ParentProbe:
    """A probe the runner runs beside the worker, from outside it (listed ``runs_in="parent"`` in the registry).

    The runner builds the ones whose ``wanted(strategy)`` is true, calls ``start`` right after the worker is
    spawned (in registry order), leaves the processes ``spared_pids`` names to the probe when it reaps the
    trial's strays, and once the worker is reaped calls ``stop`` with every event the worker sent (in reverse
    order); its result is filed as the worker probes' are. ``abort`` is called instead when the trial is
    abandoned (Ctrl-C, SIGTERM): stop everything, file nothing."""

    NAME: ClassVar[str] = "parent_probe"
    PAYLOAD: ClassVar[type[Payload]] = Payload

    @classmethod
    def wanted(cls, strategy: Any) -> bool:
        return True

    def start(self, ctx: ParentContext) -> None:
        self.ctx = ctx

    def spared_pids(self) -> set[int]:
        return set()

    def stop(self, received: Sequence[Mapping[str, Any]]) -> ProbeResult:
        raise NotImplementedError

    def release(self) -> None:
        """The target keeps running after the measured span (loadprof.profile() measures its own process): let
        go of it now, so ``stop`` need not wait for its exit. Nothing by default."""

    def abort(self) -> None:
        """The trial is abandoned: stop what this probe runs."""
