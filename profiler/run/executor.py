"""Executors: who runs a sweep's pending trials, where, and how many at once.

The session hands an executor its pending trials and the work (``TrialWork``: prepare a trial's model, run one
trial here); the executor yields each ``TrialResult`` as it finishes, in completion order, and the session
appends it to results.jsonl (in its own thread: one writer, whatever the executor) and reports progress.
Whatever runs a trial, it is the same ``run_prepared`` -> ``runner.run_trial``: one isolated worker process
with its timeout, fault classification and sampling, so every executor writes the same lines.

Here, the local ones: ``SerialExecutor`` (one trial at a time: the default, and the only honest way to time on
one machine) and ``ThreadExecutor`` (``--jobs N``: N trials at once, each thread running a trial, optionally
pinned to its own GPUs through ``CUDA_VISIBLE_DEVICES``). Trials that ran beside others record
``harness["concurrency"]`` and every report says so. Ray is ``loadprof.run.ray_executor``.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Protocol, Sequence

from loadprof.run import filecache
from loadprof.core import lifetime
from loadprof.run.interrupts import StopSignals
from loadprof.results.model import TrialResult
from loadprof.run import runner
from loadprof.run.runner import TrialPlan
from loadprof.strategies.model import Trial

#: how often a waiting executor looks up (stop signals are handled between looks)
POLL_S = 0.5
#: how long abandoned trial threads get to notice their killed workers before the sweep moves on
ABANDON_JOIN_S = 10.0


class TrialWork(Protocol):
    """What the session gives an executor."""

    def prepare(self, trial: Trial, env: Mapping[str, str] | None = None) -> TrialPlan | TrialResult:
        """The trial ready to run, or its result already (a model that cannot be prepared fails it)."""

    def run_one(self, trial: Trial, env: Mapping[str, str] | None = None) -> TrialResult:
        """Prepare and run one trial in this process (through an isolated worker)."""


class Executor(Protocol):
    name: str

    def run(self, trials: Sequence[Trial], work: TrialWork, stops: StopSignals,
            on_start: Callable[[Trial], None]) -> Iterator[TrialResult]:
        """Run ``trials``; yield each result as it finishes. A stop signal raises ``Interrupted`` (a
        KeyboardInterrupt) out of the iteration with every running trial stopped; so does closing the iterator."""

    def start(self) -> None:
        """Before the output folder exists (Ray joins or starts its cluster here, so a bad address is bad input)."""

    def close(self) -> None:
        """When the sweep ends, however it ends (Ray shuts down an instance it started)."""

    def spare(self) -> set[int]:
        """Pids of ours that must outlive the sweep (a caller's own Ray instance); the reaper leaves them."""


class LocalLifecycle:
    """Nothing to start or stop: the local executors run trials in this process's threads."""

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def spare(self) -> set[int]:
        return set()


def failed_result(trial: Trial, reason: str, status: str = "failed") -> TrialResult:
    """The result of a trial that never reached its worker (no model, a lost node)."""
    s = trial.strategy
    return TrialResult(trial_id=trial.id, strategy_id=s.id, label=s.display(), repeat_index=trial.repeat_index,
                       status=status, strategy=s, reason=reason)


def with_harness(result: TrialResult, **extra: Any) -> TrialResult:
    """``result`` with ``extra`` added to its harness record (how and where it ran)."""
    return dataclasses.replace(result, harness={**result.harness, **extra})


#: ``run_prepared``'s bounds mapping keys a checkpoint's page-cache read rate by this prefix + its path
PAGE_CACHE = "page-cache:"


def run_prepared(p: TrialPlan, disk_read: MutableMapping[str, dict[str, float]],
                 lock: threading.Lock | None = None) -> TrialResult:
    """One trial on this machine: page cache set as the strategy asks, the isolated worker run with its probes
    (``runner.run_trial``; the machine's load is one of them), derived figures added. ``disk_read`` caches the
    checkpoint's sequential read bandwidth (measured once per checkpoint per sweep, before the first cold trial), and
    its page-cache read rate (``PAGE_CACHE`` + path: once, before the first warm trial)."""
    from loadprof.analysis import derive

    path, how = p.model_path, p.trial.strategy.load.file_cache
    cache = None
    if how == "cold":
        with lock or threading.Lock():
            if path not in disk_read:  # the physical limit of a cold load
                disk_read[path] = filecache.sequential_read_bandwidth(path)
        cache = filecache.evict(path)
    elif how == "warm":
        with lock or threading.Lock():  # the limit of a warm load's read, kept beside the disk's (one mapping)
            if PAGE_CACHE + path not in disk_read:
                disk_read[PAGE_CACHE + path] = filecache.cached_read_bandwidth(path)
        cache = filecache.warm(path)
    result = runner.run_trial(dataclasses.replace(p, model_path=path, env=dict(p.env)))
    harness = dict(result.harness)
    harness["model_path"] = path
    if cache is not None:
        harness["file_cache"] = cache.to_dict()
    if path in disk_read:
        harness["disk_read"] = disk_read[path]
    if how == "warm" and PAGE_CACHE + path in disk_read:
        harness["page_cache_read"] = disk_read[PAGE_CACHE + path]
    return derive.enrich(dataclasses.replace(result, harness=harness))


class SerialExecutor(LocalLifecycle):
    """One trial at a time, in this process: today's behaviour and the default."""

    name = "local"
    jobs = 1

    def run(self, trials: Sequence[Trial], work: TrialWork, stops: StopSignals,
            on_start: Callable[[Trial], None]) -> Iterator[TrialResult]:
        for trial in trials:
            on_start(trial)
            with stops.raising():  # a stop signal abandons this trial (killed, not recorded)
                result = work.run_one(trial)
            yield result


# ---------------------------------------------------------------- GPUs


def visible_gpus(environ: Mapping[str, str] = os.environ, smi: str | None = "nvidia-smi") -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or nvidia-smi's indices); [] without
    any. Never imports torch (it would initialise CUDA in the parent)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        names = [x.strip() for x in environ["CUDA_VISIBLE_DEVICES"].split(",") if x.strip()]
        return [] if not names or names[0] == "-1" else names
    if not smi or not shutil.which(smi):
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def gpu_sets(gpus: Sequence[str], per_trial: int) -> list[str]:
    """Disjoint CUDA_VISIBLE_DEVICES values of ``per_trial`` GPUs each: ["0,1", "2,3", ...]."""
    return [",".join(gpus[i:i + per_trial]) for i in range(0, len(gpus) - per_trial + 1, per_trial)]


# ---------------------------------------------------------------- N at a time, in threads


class ThreadExecutor(LocalLifecycle):
    """``--jobs N``: N trials at once, each in a thread of this process running the same ``run_one`` (so each
    trial is still its own worker process). With ``gpu_sets`` every trial takes one set for its whole run
    (``CUDA_VISIBLE_DEVICES`` in its worker's environment), so no two trials share a GPU."""

    name = "local"

    def __init__(self, jobs: int, gpu_sets: Sequence[str] = ()) -> None:
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        if gpu_sets and len(gpu_sets) < jobs:
            raise ValueError(f"{jobs} jobs need {jobs} GPU sets, got {len(gpu_sets)}")
        self.jobs, self.gpu_sets = jobs, list(gpu_sets)

    def _call(self, work: TrialWork, trial: Trial, pool: "queue.Queue[str] | None") -> TrialResult:
        gpus = pool.get() if pool is not None else None
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {}
            result = work.run_one(trial, env)
        finally:
            if pool is not None and gpus is not None:
                pool.put(gpus)
        extra: dict[str, Any] = {"concurrency": self.jobs} if self.jobs > 1 else {}
        if gpus is not None:
            extra["gpus"] = gpus
        return with_harness(result, **extra) if extra else result

    def run(self, trials: Sequence[Trial], work: TrialWork, stops: StopSignals,
            on_start: Callable[[Trial], None]) -> Iterator[TrialResult]:
        pool: queue.Queue[str] | None = None
        if self.gpu_sets:
            pool = queue.Queue()
            for s in self.gpu_sets:
                pool.put(s)
        pending = list(trials)
        running: dict[Future[TrialResult], Trial] = {}
        threads = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="loadprof-trial")
        ours = lifetime.Descendants()  # what was alive before: never touched by the abandon below
        finished = False
        try:
            with lifetime.concurrent_trials():
                while pending or running:
                    while pending and len(running) < self.jobs:
                        with stops.raising():  # a stop that came meanwhile starts nothing new
                            pass
                        trial = pending.pop(0)
                        on_start(trial)
                        running[threads.submit(self._call, work, trial, pool)] = trial
                    with stops.raising():
                        done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    for fut in [f for f in running if f in done]:  # submission order among those done
                        del running[fut]
                        yield fut.result()
            finished = True
        finally:
            if not finished:
                _abandon(threads, running, ours)
            threads.shutdown(wait=finished, cancel_futures=True)


def _abandon(threads: ThreadPoolExecutor, running: Mapping[Future[TrialResult], Trial],
             ours: lifetime.Descendants) -> None:
    """Stop every running trial (interrupted, or the caller stopped iterating): kill every process the sweep
    started since ``ours`` was made (workers, their children, py-spy), then give the threads a moment to see
    their workers gone. Their results are dropped: an abandoned trial is not recorded, as when run alone."""
    for fut in running:
        fut.cancel()
    ours.reap(timeout_s=2.0)
    deadline = time.monotonic() + ABANDON_JOIN_S
    for fut in running:
        try:
            fut.exception(timeout=max(0.0, deadline - time.monotonic()))
        except (Exception, CancelledError):  # noqa: BLE001 - cancelled, timed out or failed: dropped
            pass
    ours.reap(timeout_s=2.0)  # anything a thread started while dying
