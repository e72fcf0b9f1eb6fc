"""What the sweep's numbers were taken under, as analysis concluded it: the harness's own cost per trial, a busy
machine, trials run side by side. Every report says these before or beside its figures; analysis computes them
(``loadprof.analysis.circumstances``), the renderers only word them. Serialized in report.json as
``circumstances`` (absent in files written before it: read as nothing to say, and ``loadprof report`` recomputes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class HarnessCost:
    """The harness's own cost per trial, medians over the trials that recorded it (``harness.overhead_s``).

    ``overhead_s``: parent wall minus trial wall; ``startup_s``: interpreter start and ``own_import_s``: the measured
    import phase, of trials in a fresh interpreter; ``forked``: trials forked from a pre-imported zygote
    (``isolation: forkserver``), ``fork_start_s`` their fork to trial start and ``zygote_import_s`` each zygote's
    own import, paid once; ``round_imports_s``: each repeat round's shared lazy import (a sub-zygote's, counted in
    its trials' real load cost) and ``shared`` the trials that had one."""

    trials: int
    overhead_s: float
    startup_s: float | None = None
    own_import_s: float | None = None
    forked: int = 0
    fork_start_s: float | None = None
    zygote_import_s: tuple[float, ...] = ()
    shared: int = 0
    round_imports_s: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HarnessCost":
        return cls(int(d["trials"]), float(d["overhead_s"]), d.get("startup_s"), d.get("own_import_s"),
                   int(d.get("forked") or 0), d.get("fork_start_s"), tuple(d.get("zygote_import_s") or ()),
                   int(d.get("shared") or 0), tuple(d.get("round_imports_s") or ()))


@dataclass(frozen=True)
class BusyTrial:
    """One trial during which other processes used the machine (``loadprof.analysis.busy.is_busy``)."""

    label: str
    others_cpu_cores: float
    steal_share: float
    loadavg_1m_start: float | None
    cpu_count: int | None
    load_over_cores: bool = False  # its start load average exceeded its core count


@dataclass(frozen=True)
class BusyMachine:
    """The busy trials among the ``measured`` ones (those with a machine record), their mean others' cores and
    the worst of them."""

    measured: int
    busy: tuple[BusyTrial, ...]
    mean_others_cores: float
    worst: BusyTrial

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BusyMachine":
        return cls(int(d["measured"]), tuple(BusyTrial(**b) for b in d.get("busy") or ()),
                   float(d["mean_others_cores"]), BusyTrial(**d["worst"]))


@dataclass(frozen=True)
class Concurrency:
    """``trials`` of ``of`` ran beside others, at most ``at_once`` at a time (``--jobs``, Ray)."""

    trials: int
    of: int
    at_once: int


@dataclass(frozen=True)
class Circumstances:
    """Each is None when there is nothing to say (no harness record, an idle machine, one trial at a time)."""

    harness: HarnessCost | None = None
    busy: BusyMachine | None = None
    concurrency: Concurrency | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: asdict(v) if v is not None else None
                for k, v in (("harness", self.harness), ("busy", self.busy), ("concurrency", self.concurrency))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Circumstances":
        d = d or {}
        return cls(HarnessCost.from_dict(d["harness"]) if d.get("harness") else None,
                   BusyMachine.from_dict(d["busy"]) if d.get("busy") else None,
                   Concurrency(**d["concurrency"]) if d.get("concurrency") else None)
