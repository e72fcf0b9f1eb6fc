"""The imports the workload itself triggers, each outermost one a phase of its own (``load/lazy_import``, ...).

transformers 5 imports a model's modeling module (and with it ``transformers.modeling_utils``, generation,
integrations: seconds on a small machine) inside the first ``from_pretrained``; a tokenizer, a processor or
the user's own loader module import theirs. A user's first load in a fresh process pays all of it, so the
trial's ``load`` does too, and this probe names that time: while a workload phase (``load``, ``validate``,
``warmup``, ``generate``) is open, every import on the worker's main thread that no other import encloses
becomes a child phase ``lazy_import`` of whatever phase is open, on the trial's one clock (the imports it pulls in
nest inside it and are never counted twice). The top-level ``import`` phase before the load is loadprof's own
(torch, transformers' top level, its probes) and is not timed here.

Files the outermost imports (module, phase path, seconds; the first ``MAX_RECORDS``) and their count and
total; the analysis sums the phases (loadprof.analysis.derive.load_import_s).
"""

from __future__ import annotations

from typing import Callable

from loadprof.core.payloads import ImportsPayload
from loadprof.core.phases import LAZY_IMPORT_PHASE
from loadprof.core.probe_registry import WORKER_STEP_PHASES
from loadprof.probes import _imports
from loadprof.probes.base import Probe, ProbeContext, ProbeResult

#: the top-level phases whose imports are the workload's: every worker step but loadprof's own import step
WORKLOAD_PHASES = frozenset(phase for step, phase in WORKER_STEP_PHASES if step != "import_stack")
#: loadprof's own imports during the workload are not the workload's: its modules, and whatever its probes
#: (a phase edge's first NVML reading imports pynvml) or the worker's steps ask for themselves
IGNORE_MODULES = ("loadprof",)
IGNORE_CALLERS = ("loadprof.probes", "loadprof.worker", "loadprof.core")


class ImportsProbe(Probe):
    """``active_when``: a program's (loadprof.worker.program) say-so that a workload step is open in this thread,
    instead of the trial's top-level workload phases on the worker's main thread."""

    NAME = "imports"
    PAYLOAD = ImportsPayload

    def __init__(self, active_when: Callable[[], bool] | None = None) -> None:
        self.active_when = active_when

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.timer = _imports.ImportTimer(ctx.phase, ctx.clock.now_ns, LAZY_IMPORT_PHASE, ignore_modules=IGNORE_MODULES,
                                          ignore_callers=IGNORE_CALLERS, active_when=self.active_when)
        ctx.hooks.add_cleanup(_imports.start_timer(self.timer))  # undone with the probe's hooks, however it ends

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        if phase in WORKLOAD_PHASES:  # top-level edges only: a child's path has a '/'
            self.timer.active = edge == "start"

    def stop(self) -> ProbeResult:
        self.timer.active = False
        t = self.timer
        payload = ImportsPayload(imports=tuple(t.records), count=t.count, seconds=t.total_ns / 1e9)
        notes = ((f"{t.count - len(t.records)} more outermost imports timed (phases kept), not listed",)
                 if t.count > len(t.records) else ())
        return ProbeResult(payload, notes=notes)
