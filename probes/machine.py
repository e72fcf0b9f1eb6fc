"""How busy the machine was around one trial, read from the parent: others' CPU time, steal, load average.

A trial's timings are only as good as the machine was quiet. The kernel's system-wide CPU counters
(``/proc/stat``: busy and steal time of every CPU, in clock ticks) minus what this trial's own processes used
(the parent's ``RUSAGE_SELF`` -- loadprof's sampler, poller and event threads -- plus ``RUSAGE_CHILDREN``: the
worker tree and py-spy, reaped inside the interval) leaves the CPU time *other* processes took while the trial
ran. Steal is time the hypervisor gave this VM's CPUs to someone else. The 1-minute load average at start and
end is a coarser hint (it also counts runnable and disk-waiting tasks).

A parent-side probe (loadprof.probes.base.ParentProbe), cheap (two reads of one file), so the runner runs it for
every trial: started right after the worker is spawned, stopped once it and py-spy are reaped; its payload is
``MachinePayload`` (``TrialResult.probes["machine"]``). Every reader is injectable: the
``/proc`` root, the load-average and own-CPU functions and the clock, so unit tests use a fake ``/proc`` and
assert exact figures. Where ``/proc/stat`` cannot be read (not Linux), only the load average is recorded.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from loadprof.core.payloads import MachinePayload
from loadprof.probes.base import ParentContext, ParentProbe, ProbeResult

#: /proc/stat ``cpu`` columns counted as busy: user, nice, system, irq, softirq (guest time is already inside
#: user/nice; idle and iowait are not busy; steal is reported on its own)
_BUSY_COLUMNS = (0, 1, 2, 5, 6)
_STEAL_COLUMN = 7


@dataclass(frozen=True)
class CpuTicks:
    """The aggregate ``cpu`` line of ``/proc/stat``, in clock ticks, and how many ``cpuN`` lines there were."""

    busy: int
    steal: int
    cpus: int


def parse_stat(text: str) -> CpuTicks | None:
    """``/proc/stat`` text -> CpuTicks (None when it has no aggregate ``cpu`` line)."""
    total: list[int] | None = None
    cpus = 0
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head == "cpu":
            total = [int(x) for x in rest.split()]
        elif head.startswith("cpu") and head[3:].isdigit():
            cpus += 1
    if total is None:
        return None
    total += [0] * (_STEAL_COLUMN + 1 - len(total))  # old kernels lack the later columns
    return CpuTicks(busy=sum(total[i] for i in _BUSY_COLUMNS), steal=total[_STEAL_COLUMN], cpus=cpus)


def read_stat(proc: str = "/proc") -> CpuTicks | None:
    try:
        with open(f"{proc}/stat") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None


_reaped_elsewhere_s = 0.0  # CPU of trial processes another process reaped for us (add_reaped_elsewhere)


def add_reaped_elsewhere(cpu_s: float) -> None:
    """Count a trial process's CPU seconds that ``RUSAGE_CHILDREN`` cannot see: a forkserver zygote reaped it
    (loadprof.run.forkclient) and said how much it used. Without this, a forked trial's own CPU reads as others'."""
    global _reaped_elsewhere_s
    _reaped_elsewhere_s += cpu_s


def own_cpu_s() -> tuple[float, float]:
    """(this process's CPU seconds, all threads; its reaped children's CPU seconds, forked trials reaped by a
    zygote included), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime + _reaped_elsewhere_s


def _loadavg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass(frozen=True)
class Snapshot:
    t_ns: int
    loadavg_1m: float | None
    ticks: CpuTicks | None
    self_cpu_s: float
    children_cpu_s: float


class MachineProbe(ParentProbe):
    """``start()`` as the worker is spawned, ``stop()`` once it (and py-spy) are reaped. One trial at a time per
    process: ``RUSAGE_CHILDREN`` is process-wide."""

    NAME = "machine"
    PAYLOAD = MachinePayload

    def __init__(self, proc: str = "/proc", *, now_ns: Callable[[], int] = time.monotonic_ns,
                 loadavg: Callable[[], float | None] = _loadavg_1m,
                 own_cpu: Callable[[], tuple[float, float]] = own_cpu_s, clk_tck: int | None = None) -> None:
        self.proc, self.now_ns, self.loadavg, self.own_cpu = proc, now_ns, loadavg, own_cpu
        self.clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._start: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        own, kids = self.own_cpu()
        return Snapshot(self.now_ns(), self.loadavg(), read_stat(self.proc), own, kids)

    def start(self, ctx: ParentContext | None = None) -> None:
        self._start = self.snapshot()

    def stop(self, received: Sequence[Mapping[str, Any]] = ()) -> ProbeResult:
        if self._start is None:
            raise RuntimeError("MachineProbe.stop() before start()")
        return ProbeResult(machine_load(self._start, self.snapshot(), self.clk_tck, os.cpu_count() or 1))


def machine_load(a: Snapshot, b: Snapshot, clk_tck: int, fallback_cpus: int = 1) -> MachinePayload:
    """Two snapshots -> the payload (units in the key names). Others' CPU time is clamped at 0: ``/proc/stat``
    counts whole ticks, rusage microseconds, so an idle machine can come out a tick negative."""
    wall_s = (b.t_ns - a.t_ns) / 1e9
    cpus = (b.ticks.cpus if b.ticks else 0) or fallback_cpus
    out: dict[str, Any] = {"loadavg_1m_start": a.loadavg_1m, "loadavg_1m_end": b.loadavg_1m, "cpu_count": cpus,
                           "wall_s": round(wall_s, 6), "worker_cpu_s": round(b.children_cpu_s - a.children_cpu_s, 6),
                           "harness_cpu_s": round(b.self_cpu_s - a.self_cpu_s, 6)}
    if a.ticks is None or b.ticks is None:
        return MachinePayload(**out)
    busy_s = (b.ticks.busy - a.ticks.busy) / clk_tck
    others_s = max(0.0, busy_s - out["worker_cpu_s"] - out["harness_cpu_s"])
    steal_s = (b.ticks.steal - a.ticks.steal) / clk_tck
    return MachinePayload(**out, busy_cpu_s=round(busy_s, 6), others_cpu_s=round(others_s, 6),
                          others_cpu_cores=round(others_s / wall_s, 6) if wall_s > 0 else None,
                          steal_s=round(steal_s, 6),
                          steal_share=round(steal_s / (wall_s * cpus), 6) if wall_s > 0 else None)
