"""How ``compare`` runs a sweep: where the trials run and how many at once (``--executor``, ``--ray-address``,
``--jobs``, ``--gpus-per-trial``: one check for the CLI and the Python API).

Bad combinations are ``LoadprofError`` (exit 2, one line) before anything runs. Ray is only looked for when
asked for, so ``--help`` and local sweeps never import it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Callable

from loadprof.core.errors import LoadprofError

if TYPE_CHECKING:  # imported when used: `loadprof --help` stays light
    from loadprof.run.executor import Executor

EXECUTORS = ("local", "ray")
CONCURRENCY_NOTE = "trials run {n} at a time: their timings are taken beside each other"


def _bad(message: str, hint: str | None = None) -> LoadprofError:
    return LoadprofError(message, hint=hint, exit_code=2)


def make_executor(executor: str = "local", *, ray_address: str | None = None, jobs: int | None = None,
                  gpus_per_trial: int | None = None,
                  gpus: Callable[[], list[str]] | None = None) -> tuple["Executor", list[str]]:
    """The executor the options ask for, and notes to show before the sweep starts. ``jobs`` None: one trial
    at a time, or one per GPU set with ``gpus_per_trial``; ``gpus`` lists the visible GPUs (tests fake it)."""
    from loadprof.run.executor import ThreadExecutor, gpu_sets, visible_gpus

    gpus = gpus or visible_gpus
    if executor not in EXECUTORS:
        raise _bad(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if jobs is not None and jobs < 1:
        raise _bad(f"--jobs must be 1 or more, got {jobs}")
    if gpus_per_trial is not None and gpus_per_trial < 1:
        raise _bad(f"--gpus-per-trial must be 1 or more, got {gpus_per_trial}")
    if ray_address and executor != "ray":
        raise _bad("--ray-address goes with --executor ray")
    notes = [CONCURRENCY_NOTE.format(n=jobs)] if jobs and jobs > 1 else []
    if executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise _bad("--executor ray needs Ray, which is not installed", hint="pip install 'loadprof[ray]'")
        from loadprof.run.ray_executor import RayExecutor

        local_gpus = 0 if ray_address else len(gpus())
        return RayExecutor(ray_address, jobs, gpus_per_trial, local_gpus=local_gpus), notes
    if gpus_per_trial:
        visible = gpus()
        if not visible:
            return _local(jobs), notes + [f"--gpus-per-trial {gpus_per_trial}: no GPU is visible here; trials "
                                          "are not pinned"]
        sets = gpu_sets(visible, gpus_per_trial)
        if not sets or (jobs or 1) > len(sets):
            raise _bad(f"--jobs {jobs or 1} x --gpus-per-trial {gpus_per_trial} needs "
                       f"{(jobs or 1) * gpus_per_trial} GPUs; {len(visible)} visible")
        n = jobs or len(sets)
        notes = [CONCURRENCY_NOTE.format(n=n)] if n > 1 else []
        return ThreadExecutor(n, sets[:n]), notes + [f"each trial pinned to {gpus_per_trial} GPU(s): "
                                                     + " | ".join(sets[:n])]
    return _local(jobs), notes


def _local(jobs: int | None) -> "Executor":
    from loadprof.run.executor import SerialExecutor, ThreadExecutor

    return ThreadExecutor(jobs) if jobs and jobs > 1 else SerialExecutor()
