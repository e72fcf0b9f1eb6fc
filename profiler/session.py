"""A sweep: prepare models, run every pending trial in isolation, keep everything as it finishes.

Each finished trial is appended to ``<out>/results.jsonl`` (flushed and
fsynced) before the next starts, so an interrupted or killed sweep keeps all
it finished and ``--resume`` picks up at the first unfinished trial id.
``report.json`` is written at the end, and also on Ctrl-C with what finished.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from loadprof import filecache
from loadprof.analysis import derive
from loadprof.errors import LoadprofError
from loadprof.analysis.sweep import analyse_sweep
from loadprof.results import SweepResult, TrialResult
from loadprof.runner import WORKER_ENV, TrialPlan, module_cmd, run_trial
from loadprof.strategies.expand import Sweep
from loadprof.strategies.model import ModelSpec, Trial

RESULTS = "results.jsonl"
REPORT = "report.json"


def default_out(sweep: Sweep, root: Path = Path("loadprof-runs")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{sweep.name}-{stamp}"


def read_results(out: Path) -> list[TrialResult]:
    """Finished trials in ``out``; a torn last line (killed mid-write) is ignored, not fatal."""
    path = out / RESULTS
    found: list[TrialResult] = []
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            found.append(TrialResult.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return found


def append_result(out: Path, result: TrialResult) -> None:
    """Append one trial as one line; a torn last line (a sweep killed mid-write) is terminated first."""
    path = out / RESULTS
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(result.to_dict(), default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_report(out: Path, sweep_result: SweepResult) -> Path:
    tmp = out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(sweep_result.to_dict(), indent=1, default=str))
    tmp.replace(out / REPORT)
    return out / REPORT


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

        return snapshot_download(model.hub_id, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not available offline"
        raise LoadprofError(f"{model.hub_id} is not in the local Hugging Face cache and loadprof never downloads "
                            f"({type(e).__name__}); put it on disk or use model: {{path: ...}}") from None


class Session:
    def __init__(self, sweep: Sweep, out: Path, *, resume: bool = False, python: str = sys.executable,
                 cwd: str | None = None, on_trial: Callable[[TrialResult, int, int], None] | None = None,
                 on_start: Callable[[Trial, int, int], None] | None = None,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.sweep, self.out, self.resume, self.python = sweep, out, resume, python
        self.cwd = cwd or os.getcwd()
        self.on_trial, self.on_start, self.log = on_trial, on_start, log
        self.disk_read: dict[str, dict[str, float]] = {}

    def pending(self, finished: set[str]) -> list[Trial]:
        return [t for t in self.sweep.trials() if t.id not in finished]

    def run(self) -> SweepResult:
        out = self.out
        existing = read_results(out)
        if existing and not self.resume:
            raise LoadprofError(f"{out / RESULTS} already holds {len(existing)} trials",
                                hint="pass --resume to continue that sweep, or --out for a new folder", exit_code=2)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(
            {"name": self.sweep.name, "source": self.sweep.source, "repeat": self.sweep.repeat,
             "strategies": [s.to_dict() | {"id": s.id} for s in self.sweep.strategies]}, indent=1, default=str))
        done = {r.trial_id: r for r in existing}
        todo = self.pending(set(done))
        if done:
            self.log(f"resuming: {len(done)} trials already finished, {len(todo)} to run")
        models: dict[ModelSpec, str | LoadprofError] = {}
        interrupted = False
        try:
            for i, trial in enumerate(todo):
                if self.on_start:
                    self.on_start(trial, i, len(todo))
                result = self._run_one(trial, models)
                append_result(out, result)
                done[trial.id] = result
                if self.on_trial:
                    self.on_trial(result, i + 1, len(todo))
        except KeyboardInterrupt:
            interrupted = True
        ordered = [done[t.id] for t in self.sweep.trials() if t.id in done]
        result = analyse_sweep(SweepResult(
            run_id=out.name, name=self.sweep.name, source=self.sweep.source,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), trials=tuple(ordered),
            interrupted=interrupted, env=next((r.env for r in reversed(ordered) if r.env), {})))
        write_report(out, result)
        from loadprof.reports.files import write_all

        write_all(result, out)  # report.md, report.html (plots), report.csv beside report.json
        return result

    def _run_one(self, trial: Trial, models: dict[ModelSpec, Any]) -> TrialResult:
        strategy = trial.strategy
        trial_dir = self.out / "trials" / trial.id
        if strategy.model not in models:
            try:
                models[strategy.model] = prepare_model(strategy.model, self.python, self.log)
            except LoadprofError as e:
                models[strategy.model] = e
        path = models[strategy.model]
        if isinstance(path, LoadprofError):
            return TrialResult(trial_id=trial.id, strategy_id=strategy.id, label=strategy.display(),
                               repeat_index=trial.repeat_index, status="failed", strategy=strategy,
                               reason=str(path))
        cache = None
        if strategy.load.file_cache == "cold":
            if path not in self.disk_read:  # once per checkpoint per sweep: the physical limit of a cold load
                self.disk_read[path] = filecache.sequential_read_bandwidth(path)
            cache = filecache.evict(path)
        elif strategy.load.file_cache == "warm":
            cache = filecache.warm(path)
        result = run_trial(TrialPlan(trial, path, trial_dir, cwd=self.cwd, python=self.python))
        harness = dict(result.harness)
        harness["model_path"] = path
        if cache is not None:
            harness["file_cache"] = cache.to_dict()
        if path in self.disk_read:
            harness["disk_read"] = self.disk_read[path]
        return derive.enrich(dataclasses.replace(result, harness=harness))
