"""Was the machine busy while the sweep ran? The conclusion every report states at the top when it was.

A neighbour's CPU load inflates wall times without any trace in the trial's own phases, so a report from a busy
machine must say so before anyone reads its numbers. The rule reads the machine probe's payload
(loadprof.probes.machine, ``trial.payload(MachinePayload)``), and for a trial whose lazy import was shared
(``shared_import``) what other processes used while that import ran; trials without a machine record (older
results) are not counted.
"""

from __future__ import annotations

from typing import Iterable

from loadprof.analysis.derive import shared_import_record
from loadprof.core.circumstances import BusyMachine, BusyTrial
from loadprof.core.payloads import MachinePayload
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


def is_busy(m: MachinePayload | None) -> bool:
    """The rule: others used >= ``BUSY_OTHERS_CORES``, or steal >= ``BUSY_STEAL_SHARE``; only where /proc/stat
    could not be read (no others figure), a start load average above the core count (x ``BUSY_LOAD_PER_CORE``),
    since the average still carries loadprof's own previous worker for about a minute."""
    if m is None:
        return False
    load = m.others_cpu_cores is None and _load_over_cores(m)
    return ((m.others_cpu_cores or 0.0) >= BUSY_OTHERS_CORES or (m.steal_share or 0.0) >= BUSY_STEAL_SHARE
            or load)


def import_others_cores(t: TrialResult) -> float | None:
    """Other processes' CPU use, in cores, while the trial's shared lazy import ran (``shared_import``, timed
    in the forkserver's sub-zygote before the trial's own machine record starts); None where it had none."""
    v = shared_import_record(t).get("others_cpu_cores")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def trial_busy(t: TrialResult) -> bool:
    """``is_busy`` over the trial's machine record, or its shared lazy import ran beside >= ``BUSY_OTHERS_CORES``
    of other work (that import is part of its real load cost)."""
    return is_busy(t.payload(MachinePayload)) or (import_others_cores(t) or 0.0) >= BUSY_OTHERS_CORES


def _load_over_cores(m: MachinePayload) -> bool:
    return m.loadavg_1m_start is not None and bool(m.cpu_count) and \
        m.loadavg_1m_start > BUSY_LOAD_PER_CORE * (m.cpu_count or 0)


def busy_machine(trials: Iterable[TrialResult]) -> BusyMachine | None:
    """The busy trials (``is_busy``) among those with a machine record, their mean others' cores and the worst
    (most others' cores plus steal, then the highest load average); None when no trial was busy."""
    measured = [(t, m) for t in trials if (m := t.payload(MachinePayload)) is not None]
    busy = tuple(BusyTrial(f"{t.label} r{t.repeat_index}",
                           max(m.others_cpu_cores or 0.0, import_others_cores(t) or 0.0), m.steal_share or 0.0,
                           m.loadavg_1m_start, m.cpu_count, _load_over_cores(m))
                 for t, m in measured if trial_busy(t))
    if not busy:
        return None
    worst = max(busy, key=lambda b: (b.others_cpu_cores + b.steal_share * (b.cpu_count or 1),
                                     b.loadavg_1m_start or 0.0))
    return BusyMachine(len(measured), busy, sum(b.others_cpu_cores for b in busy) / len(busy), worst)
