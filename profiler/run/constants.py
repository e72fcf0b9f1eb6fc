"""Per-sweep constants: figures of the machine, not of a trial, measured once per sweep and reused.

Today that is the device copy bandwidth (``membw_*``, the decode roofline's denominator) and, on CUDA, the
host -> device rates (``h2d_*``): about 1 s of copies per trial on CPU that say the same thing every time. The
first trial of a sweep on a device measures them as always; the session keeps them here (``learn``) and hands
them to later trials (``for_worker``, through ``runner.TrialPlan.constants`` or ``applied()`` around the call),
whose bandwidth probe skips the copies and files the same figures with ``membw_source`` / ``h2d_source`` =
"trial <id>" (loadprof.probes.bandwidth). A device is the device string on one host behind one
CUDA_VISIBLE_DEVICES (``membw_scope``), so a figure never travels to another GPU or node.

And which configurations are already traced: the allocation trace (loadprof.probes.allocations, phase ``trace``,
about 1 s a trial) gives the same bytes on every repeat, so a strategy's first ok repeat that traced speaks for
it (``traced``) and its later repeats skip the phase; analysis reads the figures off that repeat
(loadprof.analysis.studies.traced_repeats). The session also learns this from a resumed folder's results.
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from loadprof.core.payloads import AllocationsPayload
from loadprof.results.model import TrialResult


class SweepConstants:
    """What earlier trials of this sweep measured of the machine. Only an ok trial's own measurement is kept: a
    trial whose copy failed (or that failed) leaves the next trial on that device to measure. Thread-safe
    (``--jobs``)."""

    def __init__(self) -> None:
        self._bandwidth: dict[str, dict[str, Any]] = {}
        self._traced: dict[str, str] = {}  # strategy id -> the trial that traced its allocations
        self._lock = threading.Lock()

    def for_worker(self) -> dict[str, Any]:
        """What the worker spec carries (``{"bandwidth": {scope: {"trial", "figures"}}, "traced": {strategy id:
        trial id}}``, each only when known; empty when none)."""
        with self._lock:
            out: dict[str, Any] = {"bandwidth": dict(self._bandwidth)} if self._bandwidth else {}
            if self._traced:
                out["traced"] = dict(self._traced)
            return out

    def learn(self, result: TrialResult) -> None:
        """Keep the copy rates ``result`` measured itself on a device not yet known (the first one wins), and
        note its configuration as traced when it is an ok trial that traced its allocations."""
        traced = result.payload(AllocationsPayload) if result.status == "ok" else None
        if traced is not None and traced.generate_start_alloc_bytes is not None:
            with self._lock:
                self._traced.setdefault(result.strategy_id, result.trial_id)
        m = result.metrics
        scope, rate = m.get("membw_scope"), m.get("membw_gb_s")
        if (result.status != "ok" or not isinstance(scope, str) or m.get("membw_source") is not None
                or not isinstance(rate, (int, float)) or rate <= 0):
            return
        figures = {k: v for k, v in m.items() if k.startswith(("membw_", "h2d_")) and not k.endswith("_source")
                   and k != "membw_s" and v is not None}  # the payload's own fields (membw_s is the phase's time)
        with self._lock:
            self._bandwidth.setdefault(scope, {"trial": result.trial_id, "figures": figures})

    @contextmanager
    def applied(self) -> Iterator["SweepConstants"]:
        """Inside (this thread), ``runner.run_trial`` hands these to plans that carry none of their own: the
        session reaches the worker through whichever executor builds the plan."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    @staticmethod
    def current() -> "SweepConstants | None":
        """The constants ``applied()`` in this thread, if any."""
        return _CURRENT.get()


_CURRENT: contextvars.ContextVar[SweepConstants | None] = contextvars.ContextVar("loadprof_sweep_constants",
                                                                                 default=None)
