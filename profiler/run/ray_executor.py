"""``--executor ray``: every trial a Ray task, scheduled, placed and retried by Ray (loadprof writes no scheduler).

Each task runs ``executor.run_prepared`` on the node Ray picks, so each trial is the same isolated worker
process, with the same timeout, fault classification and sampling as locally, and returns its ``TrialResult``
as a dict; the driver collects them with ``ray.wait`` and the session appends each to results.jsonl as it
finishes. A task asks for one CPU, the GPUs its device map needs (``--gpus-per-trial``, default 1, for a
GPU device map where the cluster has GPUs; none for ``cpu``) and ``memory_limit`` as Ray ``memory``; one no
node could ever hold is recorded ``skipped`` instead of waiting forever.

Where: ``--ray-address`` joins a running cluster (every node needs this loadprof installed); without it a
local Ray instance starts (no dashboard, no usage stats, bound to 127.0.0.1, ``--jobs`` CPUs: one trial at a
time by default) and is shut down when the sweep ends, however it ends. Models are prepared by the driver (a
synthetic checkpoint is built once); a node that does not see that folder builds its own copy of a synthetic
model (the cache is content-keyed), and fails a trial of a local or hub model it cannot see: multi-node sweeps
want the model cache and ``--out`` on a shared filesystem. A node that cannot see ``--out`` writes the trial's
folder locally and sends the files back with its result.

Node loss: a task whose worker or node dies is retried once by Ray (``max_retries=1``), then recorded
``failed`` with reason ``node lost: ...``. A stop signal cancels every task (``ray.cancel(force=True)``: the
Ray worker dies, and its trial's worker with it through PDEATHSIG).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from loadprof.core.errors import LoadprofError
from loadprof.run.executor import POLL_S, TrialWork, failed_result, run_prepared, with_harness
from loadprof.run.runner import TrialPlan
from loadprof.run.interrupts import STOP_SIGNALS, StopSignals
from loadprof.results.model import TrialResult
from loadprof.strategies.model import Strategy, Trial, parse_size

INSTALL_HINT = "pip install 'loadprof[ray]'"
#: set before Ray is imported or started: quiet, and nothing sent anywhere
RAY_ENV = {"RAY_DISABLE_IMPORT_WARNING": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
#: ray.exceptions that mean the task's worker process or its node went away (after Ray's one retry)
NODE_LOST = ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "LocalRayletDiedError", "ObjectLostError")
#: the local instance's object store: results are small dicts (Ray's minimum is 75 MiB)
OBJECT_STORE_BYTES = 128 * 2**20
#: the most bytes of trial files a node that cannot see --out sends back with a result
MAX_RETURNED_BYTES = 64 * 2**20
_DISK_READ: dict[str, dict[str, float]] = {}  # per Ray worker process: a checkpoint's read bandwidth, once


def import_ray() -> Any:
    """``ray``, quietly; LoadprofError (exit 2) naming the extra when it is not installed."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise LoadprofError("--executor ray needs Ray, which is not installed", hint=INSTALL_HINT,
                            exit_code=2) from None
    return ray


def task_resources(strategy: Strategy, cluster_gpus: float, gpus_per_trial: int | None) -> dict[str, Any]:
    """Ray resources for one trial: 1 CPU; GPUs where its device map places weights on GPUs and the cluster
    has any (``gpus_per_trial`` or 1; a CUDA trial on a GPU-less cluster is skipped by its worker, as
    locally); ``memory_limit`` as ``memory``."""
    dm = strategy.load.device_map
    wants_gpu = dm != "cpu" if isinstance(dm, str) else strategy.load.needs_cuda
    res: dict[str, Any] = {"num_cpus": 1, "num_gpus": (gpus_per_trial or 1) if wants_gpu and cluster_gpus else 0}
    if strategy.memory_limit:
        res["memory"] = parse_size(strategy.memory_limit)
    return res


def fits(res: Mapping[str, Any], node: Mapping[str, float]) -> int:
    """How many tasks asking for ``res`` one node (its Ray ``Resources``) holds at once."""
    n = int(node.get("CPU", 0) // res["num_cpus"])
    if res["num_gpus"]:
        n = min(n, int(node.get("GPU", 0) // res["num_gpus"]))
    if res.get("memory"):
        n = min(n, int(node.get("memory", 0) // res["memory"]))
    return n


def unfit_reason(res: Mapping[str, Any], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node of the cluster can ever run a task asking for ``res`` (Ray would wait for one forever)."""
    if any(fits(res, n) for n in nodes):
        return None
    want = f"{res['num_cpus']} CPU, {res['num_gpus']} GPU" + (f", {res['memory'] / 2**30:.1f} GiB memory"
                                                             if res.get("memory") else "")
    have = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU, {n.get('memory', 0) / 2**30:.1f} GiB"
                     for n in nodes) or "no live node"
    return f"no node of the Ray cluster can run it: it needs {want}; the nodes have {have}"


# ---------------------------------------------------------------- on the node


def _on_this_node(p: TrialPlan) -> tuple[TrialPlan | TrialResult, Path | None]:
    """``p`` as this node can run it: its own python, a model folder it sees (a synthetic one built here when
    the driver's is not visible), and a local trial folder when --out is not shared (returned, to send back)."""
    import dataclasses

    from loadprof.run.session import prepare_model

    python = p.python if Path(p.python).exists() else sys.executable
    path = p.model_path
    if not Path(path).exists():
        model = p.trial.strategy.model
        if model.synthetic is None:
            return failed_result(p.trial, f"model folder {path} is not visible on node {socket.gethostname()}: "
                                          "put it on a shared filesystem"), None
        try:
            path = prepare_model(model, python)
        except LoadprofError as e:
            return failed_result(p.trial, f"on node {socket.gethostname()}: {e.message}"), None
    local = None
    if not (p.trial_dir.parent.parent / "sweep.json").exists():  # --out is not on this node's filesystem
        local = Path(tempfile.mkdtemp(prefix="loadprof-trial-")) / p.trial.id
    cwd = p.cwd if p.cwd and Path(p.cwd).is_dir() else None
    return dataclasses.replace(p, python=python, model_path=path, trial_dir=local or p.trial_dir, cwd=cwd,
                               pre_import=False), local  # its zygotes end with the task: auto starts fresh


def _pack(folder: Path) -> dict[str, bytes]:
    """The trial folder's files (up to ``MAX_RETURNED_BYTES``), by path relative to it."""
    files, total = {}, 0
    for f in sorted(x for x in folder.rglob("*") if x.is_file()):
        size = f.stat().st_size
        if total + size <= MAX_RETURNED_BYTES:
            files[str(f.relative_to(folder))] = f.read_bytes()
            total += size
    return files


def node_task(p: TrialPlan, omp_num_threads: str | None = None) -> dict[str, Any]:
    """The Ray task: one trial on this node through ``run_prepared``; its result as a dict (and its files when
    the driver cannot see this node's folder). Ray sets OMP_NUM_THREADS to the task's 1 CPU where it was unset:
    the worker gets the driver's value instead (none: torch picks its threads as in a local run)."""
    import shutil

    here, local = _on_this_node(p)
    if isinstance(here, TrialResult):
        return {"result": here.to_dict()}
    ray_omp = os.environ.pop("OMP_NUM_THREADS", None)
    if omp_num_threads is not None:
        os.environ["OMP_NUM_THREADS"] = omp_num_threads
    try:
        result = with_harness(run_prepared(here, _DISK_READ), node=socket.gethostname())
        return {"result": result.to_dict(), "files": _pack(local) if local else None}
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if ray_omp is not None:
            os.environ["OMP_NUM_THREADS"] = ray_omp
        _end_zygotes()  # Ray reuses this process for other tasks: no pre-imported zygote outlives the trial
        if local is not None:
            shutil.rmtree(local.parent, ignore_errors=True)


def _end_zygotes() -> None:
    """End the forkserver zygotes this process started for ``isolation: forkserver`` trials, as a session does."""
    try:
        from loadprof.run import forkclient

        forkclient.shutdown_all()
    except (ImportError, AttributeError):  # no forkserver support in this loadprof: nothing was started
        pass


# ---------------------------------------------------------------- the driver


class RayExecutor:
    """Trials as Ray tasks on a running cluster (``address``) or a local instance started for the sweep."""

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None,
                 gpus_per_trial: int | None = None, local_gpus: int = 0) -> None:
        self.address, self.jobs, self.gpus_per_trial = address, jobs, gpus_per_trial
        self.local_cpus = jobs or (max(1, local_gpus // (gpus_per_trial or 1)) if local_gpus else 1)
        self._owned = False  # whether this sweep started (or connected) Ray, and so shuts it down

    def _connect(self, ray: Any) -> None:
        """Join ``address`` or start a local instance, keeping this process's stop-signal handlers."""
        from loadprof.core import lifetime

        if ray.is_initialized():  # ours already, or the caller's own Ray (a notebook): used as it is
            return
        saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        quiet = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
        try:
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                lifetime.become_subreaper()  # what a dying Ray worker orphans comes back here to be reaped
                ray.init(num_cpus=self.local_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                         _node_ip_address="127.0.0.1", **quiet)
        except Exception as e:  # noqa: BLE001 - any failure to start or join is the user's to fix
            what = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
            raise LoadprofError(f"could not {what}: {type(e).__name__}: {_first_line(e)}", exit_code=2) from None
        finally:
            for sig, handler in saved.items():  # Ray's own SIGTERM handler would end the sweep uncleanly
                if signal.getsignal(sig) is not handler and handler is not None:
                    signal.signal(sig, handler)
        self._owned = True

    def start(self) -> None:
        """Join or start Ray (the session calls it before it creates the output folder: a cluster that cannot
        be reached is exit 2 with nothing written)."""
        self._connect(import_ray())

    def close(self) -> None:
        """Shut down the local instance this sweep started, or leave the cluster it joined (idempotent)."""
        if self._owned and "ray" in sys.modules:
            self._stop(sys.modules["ray"], {})

    def run(self, trials: Sequence[Trial], work: TrialWork, stops: StopSignals,
            on_start: Callable[[Trial], None]) -> Iterator[TrialResult]:
        ray = import_ray()
        self._connect(ray)
        refs: dict[Any, tuple[Trial, TrialPlan, int]] = {}
        try:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            gpus = sum(n.get("GPU", 0) for n in nodes)
            task = ray.remote(node_task)
            for trial in trials:
                with stops.raising():  # preparing a model may take a while: a stop in between ends it here
                    prepared = work.prepare(trial)
                if isinstance(prepared, TrialResult):
                    yield prepared
                    continue
                res = task_resources(trial.strategy, gpus, self.gpus_per_trial)
                why = unfit_reason(res, nodes)
                if why:
                    yield failed_result(trial, why, status="skipped")
                    continue
                on_start(trial)
                at_once = min(len(trials), sum(fits(res, n) for n in nodes))
                ref = task.options(**res, max_retries=1).remote(prepared, os.environ.get("OMP_NUM_THREADS"))
                refs[ref] = (trial, prepared, at_once)
            while refs:
                with stops.raising():
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    trial, prepared, at_once = refs.pop(ref)
                    extra = {"executor": "ray", **({"concurrency": at_once} if at_once > 1 else {})}
                    yield with_harness(self._collect(ray, ref, trial, prepared), **extra)
        finally:
            self._stop(ray, refs)

    def _stop(self, ray: Any, refs: Mapping[Any, Any]) -> None:
        """Cancel what still runs (killing its Ray worker, and so its trial's worker), then leave Ray."""
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or gone meanwhile
                pass
        if self._owned and ray.is_initialized():
            ray.shutdown()

    def _collect(self, ray: Any, ref: Any, trial: Trial, prepared: TrialPlan) -> TrialResult:
        """A finished task's TrialResult (its files written into the trial's folder when it sent them), or the
        failed result saying what Ray reported."""
        lost = tuple(getattr(ray.exceptions, n) for n in NODE_LOST if hasattr(ray.exceptions, n))
        try:
            got = ray.get(ref)
        except lost as e:
            return failed_result(trial, f"node lost: {type(e).__name__} (retried once): {_first_line(e)}")
        except ray.exceptions.OutOfMemoryError as e:
            return failed_result(trial, f"killed by Ray's memory monitor: {_first_line(e)}", status="crashed")
        except ray.exceptions.RayTaskError as e:  # our task raised (a loadprof bug, or a node without loadprof)
            cause = getattr(e, "cause", None) or e
            return failed_result(trial, f"the Ray task raised {type(cause).__name__}: {_last_line(cause)}")
        except ray.exceptions.RayError as e:
            return failed_result(trial, f"the Ray task failed: {type(e).__name__}: {_first_line(e)}")
        result = TrialResult.from_dict(got["result"])
        for rel, data in (got.get("files") or {}).items():
            dest = prepared.trial_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return result

    def spare(self) -> set[int]:
        """Processes of the caller's own Ray instance (not started by this sweep), which the session's final
        reaping must leave alone; the trials' workers under them are still reaped."""
        if self._owned:
            return set()
        try:
            import psutil

            return {p.pid for p in psutil.Process().children(recursive=True) if _is_ray(_cmdline(p))}
        except Exception:  # noqa: BLE001 - no psutil, or gone: nothing to spare
            return set()


def _is_ray(cmd: Sequence[str]) -> bool:
    """A process of Ray's own (raylet, GCS, a Ray worker, its monitors), not a trial's."""
    text = " ".join(cmd)
    return bool(cmd) and "loadprof.worker.trial" not in text and (text.startswith("ray::") or "/ray/" in text
                                                            or os.path.basename(cmd[0]).startswith(("raylet", "gcs")))


def _cmdline(p: Any) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or not readable
        return []


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1][:300] if text else type(e).__name__
