"""Was the machine busy while the sweep ran? One line every report puts at the top when it was.

A neighbour's CPU load inflates wall times without any trace in the trial's own phases, so a report from a busy
machine must say so before anyone reads its numbers. The rule reads ``harness.machine`` (loadprof.probes.machine)
through ``trial.views.machine``; trials without the record (older results) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from loadprof.core.payloads import MachineLoad
from loadprof.results.model import TrialResult

#: other processes' CPU use, in cores on average over the trial, from which it counts as busy: half a core taken
#: away costs a single-threaded phase ~50% of its CPU when they share a core, and a multi-threaded load or decode
#: (which uses every core) a measurable share; below it the figure is within tick rounding and daemons' noise
BUSY_OTHERS_CORES = 0.5
#: hypervisor steal, as a share of wall x cores, from which it counts as busy: a few percent is common on shared
#: cloud VMs; 5% is well past that and slows every phase by about as much
BUSY_STEAL_SHARE = 0.05
#: a 1-minute load average at the trial's start above this many tasks per core means more work wanted a CPU (or
#: waited on a disk) than there were CPUs. Caveat: the average decays over about a minute, so right after a long
#: trial that kept every core busy it still carries loadprof's own previous worker; others_cpu_cores is the
#: direct measure, the load average the only one where /proc/stat cannot be read
BUSY_LOAD_PER_CORE = 1.0


@dataclass(frozen=True)
class BusyTrial:
    label: str
    others_cpu_cores: float
    steal_share: float
    loadavg_1m_start: float | None
    cpu_count: int | None


def is_busy(m: MachineLoad) -> bool:
    """The rule: others used >= ``BUSY_OTHERS_CORES``, or steal >= ``BUSY_STEAL_SHARE``; only where /proc/stat
    could not be read (no others figure), a start load average above the core count (x ``BUSY_LOAD_PER_CORE``),
    since the average still carries loadprof's own previous worker for about a minute."""
    if not m.present:
        return False
    load = (m.others_cpu_cores is None and m.loadavg_1m_start is not None and bool(m.cpu_count)
            and m.loadavg_1m_start > BUSY_LOAD_PER_CORE * (m.cpu_count or 0))
    return ((m.others_cpu_cores or 0.0) >= BUSY_OTHERS_CORES or (m.steal_share or 0.0) >= BUSY_STEAL_SHARE
            or load)


def busy_trials(trials: Iterable[TrialResult]) -> tuple[int, tuple[BusyTrial, ...]]:
    """(how many trials have a machine record, the busy ones among them)."""
    measured = [t for t in trials if t.views.machine.present]
    busy = tuple(BusyTrial(f"{t.label} r{t.repeat_index}", m.others_cpu_cores or 0.0, m.steal_share or 0.0,
                           m.loadavg_1m_start, m.cpu_count)
                 for t in measured for m in (t.views.machine,) if is_busy(m))
    return len(measured), busy


def busy_machine_line(trials: Iterable[TrialResult]) -> str | None:
    """"busy machine: other processes used 0.9 cores on average during 3 of 8 trials (worst: <label> 1.4 cores,
    steal 0%); timings may be inflated — rerun on an idle machine", or None when no trial was busy."""
    n, busy = busy_trials(trials)
    if not busy:
        return None
    mean = sum(b.others_cpu_cores for b in busy) / len(busy)
    worst = max(busy, key=lambda b: (b.others_cpu_cores + b.steal_share * (b.cpu_count or 1),
                                     b.loadavg_1m_start or 0.0))
    load = ""
    if worst.loadavg_1m_start is not None and worst.cpu_count \
            and worst.loadavg_1m_start > BUSY_LOAD_PER_CORE * worst.cpu_count:
        load = f", load average {worst.loadavg_1m_start:.1f} on {worst.cpu_count} cores"
    return (f"busy machine: other processes used {mean:.1f} cores on average during {len(busy)} of {n} trials "
            f"(worst: {worst.label} {worst.others_cpu_cores:.1f} cores, steal {worst.steal_share:.0%}{load}); "
            "timings may be inflated — rerun on an idle machine")
