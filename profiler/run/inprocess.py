"""``with loadprof.profile() as p:``: the hooks a program gets (loadprof.worker.program), around a block of the
current process, for notebooks and scripts that cannot be restarted under ``loadprof run``.

Inside the block every ``from_pretrained`` (models, tokenizers, processors, configs), ``pipeline(...)``,
``generate`` and each model's first forward is a phase, imports inside them are ``lazy_import`` phases, the memory
and io probes run, and py-spy samples the process from a child it starts (``py-spy record --pid`` of its own
parent; where ptrace is not allowed the sampling probe says why and the rest is kept). At the end of the block
every hook is undone and the events become one ``TrialResult``, analysed by the same rules as any trial:
``p.result`` is a ``SweepResult`` with that one trial, ``p.report(out_dir)`` writes the usual files.

It is not isolated, and says so (``harness.isolation = "in-process"`` and a note on the trial): there is no cold
import (what the process imported before the block is not paid again, so the lazy-import finding sees only what
is new), and the process's earlier state counts (its page cache, its allocator, models it already holds).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
import tempfile
import traceback
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from loadprof.core import events
from loadprof.core.clock import DEFAULT_CLOCK as CLOCK
from loadprof.core.errors import LoadprofError
from loadprof.probes.base import ParentContext, ParentProbe
from loadprof.results.model import IN_PROCESS, SweepResult, TrialResult
from loadprof.strategies.model import ProgramSpec, Strategy, Trial, program_model

NOT_ISOLATED = ("not isolated: measured in-process by loadprof.profile(), not in a fresh process: no cold import "
                "(modules this process imported before the block are not paid again) and the process's earlier "
                "state counts (page cache, allocator, models it already holds)")
SOURCE = "loadprof.profile()"

_active: "Profile | None" = None


def profile_strategy(name: str, sampling_hz: int | None) -> Strategy:
    """The Strategy an in-process block stands for: a program named ``in-process NAME`` (nothing is started)."""
    program = ProgramSpec(cmd=("in-process", name))
    extra = {} if sampling_hz is None else {"sampling_hz": sampling_hz}
    return Strategy(model=program_model(program), generate=None, program=program, label=name, **extra)


class Profile:
    """One in-process profile: a context manager (not re-entrant; one at a time per process). ``result`` and
    ``report`` are there once the block has ended."""

    def __init__(self, name: str = "profile", *, sampling_hz: int | None = None) -> None:
        self.name = name
        self.strategy = profile_strategy(name, sampling_hz)
        self.result: SweepResult | None = None
        self._events: list[dict[str, Any]] = []
        self._parents: list[ParentProbe] = []
        self._worker: Any = None
        self._dir: Path | None = None

    @property
    def trial(self) -> TrialResult:
        if self.result is None:
            raise LoadprofError("the profile has not ended yet: read p.result after the with-block", exit_code=2)
        return self.result.trials[0]

    def __enter__(self) -> "Profile":
        global _active
        from loadprof.run.runner import start_parent_probes
        from loadprof.worker.program import ProgramWorker

        if _active is not None or self.result is not None:
            raise LoadprofError("a loadprof.profile() is already running (or this one has run): one at a time",
                                exit_code=2)
        _active = self
        self._dir = Path(tempfile.mkdtemp(prefix="loadprof-profile-"))
        weakref.finalize(self, shutil.rmtree, str(self._dir), True)  # the trial's files, until report() copies them
        self._started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._t0 = CLOCK.now_ns()
        spec = {"trial_dir": str(self._dir), "strategy": self.strategy.to_dict()}
        try:
            self._worker = ProgramWorker(self._events.append, spec, self._t0)
            self._worker.hook()
            start_parent_probes(ParentContext(os.getpid(), self._dir, self.strategy), self._events, self._parents)
        except BaseException:
            self._abandon()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                self._events.append(events.make("error", kind=type(exc).__name__, message=str(exc)[:2000],
                                                traceback="".join(traceback.format_exception(exc_type, exc, tb))))
            self._worker.finish("exception" if exc is not None else "end of block")
            self._stop_parents()
            self.result = self._analyse()
        finally:
            self._abandon()

    def _stop_parents(self) -> None:
        from loadprof.run.runner import stop_parent_probes

        for probe in self._parents:  # the target keeps running: py-spy must be told to write its file now
            probe.release()
        parents, self._parents = self._parents, []
        stop_parent_probes(parents, self._events)

    def _abandon(self) -> None:
        """Whatever is still running stops (the hooks, the parent probes); the profile slot is free again."""
        global _active
        if self._worker is not None:
            self._worker.hooks.undo()
        for probe in self._parents:
            probe.abort()
        self._parents = []
        if _active is self:
            _active = None

    def _analyse(self) -> SweepResult:
        from loadprof.analysis.sweep import analyse_sweep
        from loadprof.run.runner import TrialPlan, classify

        assert self._dir is not None
        plan = TrialPlan(Trial(self.strategy), "", self._dir)
        failed = any(ev.get("type") == "error" for ev in self._events)
        t = classify(plan, self._events, 1 if failed else 0, False, self._started_at,
                     parent_wall_ns=CLOCK.now_ns() - self._t0, spawn_ns=self._t0)
        arts = {k: v for k, v in t.artifacts.items() if k not in ("stdout", "stderr")}  # the process's own
        notes = (NOT_ISOLATED, *(n for n in t.notes if not n.startswith("the program exited")))
        t = dataclasses.replace(t, artifacts=arts, notes=notes, exit_code=None, stderr_tail="",
                                harness={"isolation": IN_PROCESS, "isolation_note": NOT_ISOLATED})
        return analyse_sweep(SweepResult(run_id=f"profile-{self._t0}", name=self.name, source=SOURCE,
                                         created_at=self._started_at, trials=(t,), env=t.env))

    def report(self, out_dir: str | Path) -> Path:
        """Write the usual files into ``out_dir`` (a new or empty folder): results.jsonl, sweep.json, report.json,
        report.md/.html/.csv, and the trial's own files under ``trials/<id>/``. Returns the folder."""
        from loadprof.reports.files import write_all
        from loadprof.results.jsonl import append_result, prepare_out, write_report, write_sweep_json
        from loadprof.strategies.expand import Sweep

        trial, out = self.trial, Path(out_dir)
        assert self.result is not None and self._dir is not None
        prepare_out(out, resume=False)
        write_sweep_json(out, Sweep(name=self.name, source=SOURCE, description=NOT_ISOLATED, repeat=1,
                                    strategies=(self.strategy,)))
        if self._dir.is_dir():
            shutil.copytree(self._dir, out / "trials" / trial.trial_id, dirs_exist_ok=True)
        append_result(out, trial)
        write_report(out, self.result)
        write_all(self.result, out)
        return out


def profile(name: str = "profile", *, sampling_hz: int | None = None) -> Profile:
    """``with loadprof.profile() as p: ...`` (see the module docstring). ``sampling_hz``: py-spy's rate (0: off;
    default: a program's)."""
    return Profile(name, sampling_hz=sampling_hz)
