"""A sweep: prepare models, run every pending trial in isolation, keep everything as it finishes.

Each finished trial is appended to ``<out>/results.jsonl`` (flushed and
fsynced) as it finishes, so an interrupted or killed sweep keeps all it
finished and ``--resume`` runs only the unfinished trial ids. Who runs the
trials, and how many at once, is the executor's (loadprof.run.executor: one at a
time by default; --jobs N; loadprof.run.ray_executor); this thread alone writes.
``report.json`` is written at the end, and also on Ctrl-C, SIGTERM or SIGHUP with
what finished: the trial in flight is stopped and everything it started killed
(loadprof.run.interrupts, loadprof.core.lifetime); nothing of the sweep's is left running
when ``run`` returns or raises. The folder's rules (never overwrite, the same sweep on
resume, writable before anything runs) and results.jsonl's reading and writing live in
loadprof.results.jsonl; a disk that fills mid-run ends the sweep with ``OutputWriteError``
(exit 74), every complete line kept.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Callable, Mapping

from loadprof.run import forkclient
from loadprof.core import lifetime
from loadprof.run.constants import SweepConstants
from loadprof.core.errors import LoadprofError
from loadprof.run.executor import Executor, SerialExecutor, failed_result, run_prepared
from loadprof.run.interrupts import StopSignals
from loadprof.analysis.sweep import analyse_sweep
from loadprof.results.model import SweepResult, TrialResult
from loadprof.results.runlock import RunLock
from loadprof.results.jsonl import (REPORT, RESULTS, append_result, check_same_sweep, default_out,  # noqa: F401
                                  file_size_limit_raises, is_output_error, prepare_out, read_results,
                                  read_results_file, write_failure, write_report, write_sweep_json)
from loadprof.run.runner import WORKER_ENV, TrialPlan, module_cmd
from loadprof.strategies.expand import Sweep
from loadprof.strategies.model import ModelSpec, Trial

def prepare_model(model: ModelSpec, python: str = sys.executable,
                  log: Callable[[str], None] = lambda s: None) -> str:
    """ModelSpec -> a local checkpoint folder; raises LoadprofError with the reason when there is none."""
    if model.synthetic is not None:
        from loadprof.strategies import synthetic

        syn = model.synthetic
        if synthetic.is_built(syn):
            return str(synthetic.model_dir(syn))
        log(f"building synthetic checkpoint {model.label} ({syn.dtype}, seed {syn.seed}) ...")
        cmd = [*module_cmd(python, "loadprof.strategies.synthetic"), "--shape", syn.shape, "--dtype", syn.dtype,
               "--seed", str(syn.seed), "--max-shard-size", syn.max_shard_size]
        if syn.arch:
            cmd += ["--arch", syn.arch]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **WORKER_ENV})
        if proc.returncode != 0:
            raise LoadprofError(f"could not build synthetic model {model.label}: {proc.stderr.strip()[-1500:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])["path"]
    if model.path is not None:
        if not Path(model.path).exists():
            raise LoadprofError(f"model path {model.path} does not exist")
        return model.path
    try:  # hub id: only what is already in the local cache (no network, ever)
        from huggingface_hub import snapshot_download

        return snapshot_download(model.hub_id, revision=model.revision, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not available offline"
        raise LoadprofError(f"{model.hub_id} is not in the local Hugging Face cache and loadprof never downloads "
                            f"({type(e).__name__})", hint=f"fetch it first where there is a network: hf download "
                            f"{model.hub_id}, or use model: {{path: ...}}") from None


class Session:
    def __init__(self, sweep: Sweep, out: Path, *, resume: bool = False, force: bool = False,
                 python: str = sys.executable, cwd: str | None = None,
                 on_trial: Callable[[TrialResult, int, int], None] | None = None,
                 on_start: Callable[[Trial, int, int], None] | None = None,
                 log: Callable[[str], None] = lambda s: None, stops: StopSignals | None = None,
                 executor: Executor | None = None, on_ready: Callable[[int], None] | None = None) -> None:
        self.sweep, self.out, self.resume, self.force, self.python = sweep, out, resume, force, python
        self.executor: Executor = executor or SerialExecutor()  # loadprof.run.executor, loadprof.run.ray_executor
        self.stops = stops or StopSignals()  # the CLI passes its own, to keep handling them while it prints
        self.cwd = cwd or os.getcwd()
        self.on_trial, self.on_start, self.log = on_trial, on_start, log
        self.on_ready = on_ready  # called with the pending count once the folder is accepted (the CLI's header)
        self.disk_read: dict[str, dict[str, float]] = {}
        self.models: dict[ModelSpec, str | LoadprofError] = {}
        self._lock = threading.Lock()  # executors may run trials in threads: one model build, one disk read
        self.constants = SweepConstants()  # device copy rates, measured by the first trial on each device

    def pending(self, finished: set[str]) -> list[Trial]:
        """The unfinished trials in run order (repeats interleaved, see ``Sweep.trials``)."""
        return [t for t in self.sweep.trials() if t.id not in finished]

    def run(self) -> SweepResult:
        """Run what is pending; stop signals end it like Ctrl-C (``self.stops.signum`` says which came first),
        and whatever process of ours is still alive at the end (however it ends) is killed and reaped."""
        strays = lifetime.Descendants()
        with self.stops.installed():
            try:
                self.executor.start()  # Ray: join or start it before the folder exists
                with RunLock.acquire(self.out, log=self.log):  # one writer per folder, for the sweep's life
                    return self._run()
            finally:
                self.executor.close()  # Ray: a local instance started for the sweep ends
                forkclient.shutdown_all()  # the pre-imported zygotes (isolation: forkserver) end with the sweep
                strays.exclude |= self.executor.spare()  # a caller's own Ray instance lives on
                strays.reap()

    def _run(self) -> SweepResult:
        out = self.out
        done = {r.trial_id: r for r in self._open_folder()}
        for r in done.values():  # what the finished trials measured once per sweep (traced configurations, ...)
            self.constants.learn(r)
        todo = self.pending(set(done))
        if self.on_ready:
            self.on_ready(len(todo))
        if done:  # finished trials of this sweep (a --force'd folder also holds another sweep's)
            self.log(f"resuming: {len(self.sweep.trials()) - len(todo)} trials already finished, {len(todo)} to run")
        interrupted = False
        failed_write: tuple[OSError, Path] | None = None  # the disk stopped taking writes: stop, keep all lines
        started = itertools.count()

        def on_start(trial: Trial) -> None:
            if self.on_start:
                self.on_start(trial, next(started), len(todo))

        try:  # the executor yields trials as they finish; only this thread writes results.jsonl
            with closing(self.executor.run(todo, self, self.stops, on_start)) as finished:
                for i, result in enumerate(finished, 1):
                    with file_size_limit_raises():
                        append_result(out, result)
                    done[result.trial_id] = result
                    if self.on_trial:
                        self.on_trial(result, i, len(todo))
        except KeyboardInterrupt:  # a stop signal: the executor stopped every running trial (not recorded)
            interrupted = True
        except OSError as e:
            if not is_output_error(e):
                raise
            failed_write = (e, out / RESULTS)
        ordered = [done[t.id] for t in self.sweep.trials_by_strategy() if t.id in done]
        result = analyse_sweep(SweepResult(
            run_id=out.name, name=self.sweep.name, source=self.sweep.source,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), trials=tuple(ordered),
            interrupted=interrupted, env=next((r.env for r in reversed(ordered) if r.env), {})))
        if not todo and not self.force and self._reports_current():
            self.log(f"nothing left to run: the reports in {out} are up to date (`loadprof report` rewrites them)")
            return result
        report_failed = self._write_reports(result)  # written even when a results line failed: it may fit
        failed_write = failed_write or report_failed
        if failed_write is not None:
            e = write_failure(*failed_write, len(done), out, self.sweep.source)
            e.result = result
            raise e
        return result

    def _open_folder(self) -> list[TrialResult]:
        """Folder rules, write probe, same-sweep check and sweep.json, before anything runs (exit 2 otherwise);
        then the trials already finished there (unreadable lines skipped, with one warning)."""
        out = self.out
        prepare_out(out, resume=self.resume)
        mixes = check_same_sweep(out, self.sweep, force=self.force) if self.resume else []
        if mixes and self.force:
            self.log(f"--force: {out} now mixes {len(mixes) + 1} sweeps; the report shows this one's strategies")
        try:
            write_sweep_json(out, self.sweep, mixes)
        except OSError as e:
            raise LoadprofError(f"cannot write to {out}: {e.strerror or e}", exit_code=2) from None
        read = read_results_file(out)
        if read.warning():
            self.log(read.warning() or "")
        return read.trials

    def _reports_current(self) -> bool:
        """report.json and report.html written after the last results line: a --resume with nothing left to run
        need not draw them again (the figures are most of its time)."""
        try:
            results = (self.out / RESULTS).stat().st_mtime
            return all((self.out / name).stat().st_mtime >= results for name in (REPORT, "report.html"))
        except OSError:
            return False

    def _write_reports(self, result: SweepResult) -> tuple[OSError, Path] | None:
        """report.json, then report.md/.html/.csv beside it; a disk that will not take them is returned, not
        raised, so the run ends the way a failed results line ends it (results.jsonl is already whole)."""
        from loadprof.reports.files import write_all

        try:
            with file_size_limit_raises():
                write_report(self.out, result)
                if self.stops.hurry:  # asked twice to stop: results.jsonl and report.json are what matter
                    self.log("stopping now: report.md/.html/.csv skipped (`loadprof report OUT` writes them)")
                else:
                    write_all(result, self.out)  # report.md, report.html (plots), report.csv beside report.json
        except OSError as e:
            if not is_output_error(e):
                raise
            return e, self.out / REPORT
        return None

    def model_path(self, model: ModelSpec) -> str | LoadprofError:
        """The model's local folder (built once per sweep for a synthetic one), or why there is none."""
        with self._lock:
            if model not in self.models:
                try:
                    self.models[model] = prepare_model(model, self.python, self.log)
                except LoadprofError as e:
                    self.models[model] = e
            return self.models[model]

    def prepare(self, trial: Trial, env: Mapping[str, str] | None = None) -> TrialPlan | TrialResult:
        """The trial ready to run (``loadprof.run.executor.TrialWork``), or its failed result when its model has no
        local folder."""
        path = self.model_path(trial.strategy.model)
        if isinstance(path, LoadprofError):
            return failed_result(trial, str(path))
        return TrialPlan(trial, path, self.out / "trials" / trial.id, cwd=self.cwd, python=self.python,
                             env=dict(env or {}))

    def run_one(self, trial: Trial, env: Mapping[str, str] | None = None) -> TrialResult:
        """Prepare and run one trial here, through its isolated worker (``loadprof.run.executor.TrialWork``)."""
        if trial.strategy.program is not None:  # a whole program (``program:`` in the YAML): its own runner
            from loadprof.run.program import run_program

            return run_program(trial.strategy, self.out / "trials" / trial.id, stops=self.stops).result
        prepared = self.prepare(trial, env)
        if isinstance(prepared, TrialResult):
            return prepared
        with self.constants.applied():  # later trials on a device reuse its copy rates (loadprof.run.constants)
            result = run_prepared(prepared, self.disk_read, self._lock)
        self.constants.learn(result)
        return result
