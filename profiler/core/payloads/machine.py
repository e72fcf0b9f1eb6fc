"""The machine probe's payload (parent side, loadprof.probes.machine): how busy the machine was around the
trial. A figure the platform could not read (no ``/proc/stat``, no load average) is None."""

from __future__ import annotations

from dataclasses import dataclass

from loadprof.core.payloads.base import Payload


@dataclass(frozen=True)
class MachinePayload(Payload):
    PROBE = "machine"

    cpu_count: int
    wall_s: float
    worker_cpu_s: float                  # the worker tree (and py-spy), reaped within the interval
    harness_cpu_s: float                 # the parent: loadprof's own threads
    loadavg_1m_start: float | None = None
    loadavg_1m_end: float | None = None
    busy_cpu_s: float | None = None      # every process, system-wide
    others_cpu_s: float | None = None
    others_cpu_cores: float | None = None
    steal_s: float | None = None
    steal_share: float | None = None     # of wall x cpu_count
