"""The imports probe's payload (loadprof.probes.imports): the outermost imports the workload itself triggered."""

from __future__ import annotations

from dataclasses import dataclass

from loadprof.core.payloads.base import Payload, Record


@dataclass(frozen=True)
class TimedImport(Record):
    module: str
    phase: str  # the phase path it ran under, ending in the lazy_import child (``load/lazy_import``)
    seconds: float


@dataclass(frozen=True)
class ImportsPayload(Payload):
    PROBE = "imports"

    imports: tuple[TimedImport, ...]  # the first ones timed (the probe's MAX_RECORDS)
    count: int  # every outermost import timed, listed or not
    seconds: float

    def slowest_under(self, *phases: str) -> tuple[TimedImport, ...]:
        """The listed imports that ran under any of these phase paths, slowest first."""
        hits = [i for i in self.imports if any(i.phase.startswith(p + "/") for p in phases)]
        return tuple(sorted(hits, key=lambda i: -i.seconds))
