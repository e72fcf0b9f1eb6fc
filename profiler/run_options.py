"""How ``compare`` runs a sweep: where the trials run and how many at once (``--executor``, ``--ray-address``,
``--jobs``, ``--gpus-per-trial``: one check for the CLI and the Python API), and the progress display.

Bad combinations are ``LoadprofError`` (exit 2, one line) before anything runs. Ray is only looked for when
asked for, so ``--help`` and local sweeps never import it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from loadprof.errors import LoadprofError

if TYPE_CHECKING:  # imported when used: `loadprof --help` stays light
    from loadprof.executor import Executor

EXECUTORS = ("local", "ray")
CONCURRENCY_NOTE = "trials run {n} at a time: their timings are taken beside each other"


def _bad(message: str, hint: str | None = None) -> LoadprofError:
    return LoadprofError(message, hint=hint, exit_code=2)


def make_executor(executor: str = "local", *, ray_address: str | None = None, jobs: int | None = None,
                  gpus_per_trial: int | None = None,
                  gpus: Callable[[], list[str]] | None = None) -> tuple["Executor", list[str]]:
    """The executor the options ask for, and notes to show before the sweep starts. ``jobs`` None: one trial
    at a time, or one per GPU set with ``gpus_per_trial``; ``gpus`` lists the visible GPUs (tests fake it)."""
    from loadprof.executor import ThreadExecutor, gpu_sets, visible_gpus

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
        from loadprof.ray_executor import RayExecutor

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
    from loadprof.executor import SerialExecutor, ThreadExecutor

    return ThreadExecutor(jobs) if jobs and jobs > 1 else SerialExecutor()


def executor_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The four options of ``compare`` that say where and how many at once."""
    f = click.option("--gpus-per-trial", type=int, default=None, metavar="K",
                     help="Pin each trial to K GPUs of its own (CUDA_VISIBLE_DEVICES); without --jobs, as many "
                          "trials at once as there are K-GPU sets. Ray: the GPUs a GPU trial's task asks for.")(f)
    f = click.option("--jobs", type=int, default=None, metavar="N",
                     help="Run N trials at once (default 1). On one machine their timings are taken beside each "
                          "other: every report says so. Ray: the local instance's CPUs.")(f)
    f = click.option("--ray-address", default=None, metavar="ADDR",
                     help="With --executor ray: join this running Ray cluster (default: start a local one).")(f)
    return click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                        help="local: trials run here; ray: each trial a Ray task (pip install 'loadprof[ray]').")(f)


def eta_text(done_walls: list[float], remaining: int, running_s: float = 0.0, jobs: int = 1) -> str:
    """ETA from the mean finished trial (rich's own estimate needs a steady rate over 30 s and shows -:--:-- for
    a sweep of a few long trials): mean x what is left, less the time the running trials already spent."""
    if not done_walls or remaining <= 0:
        return "ETA after the first trial" if remaining > 0 else ""
    mean = sum(done_walls) / len(done_walls)
    left = max(0.0, mean * remaining / max(1, jobs) - running_s)
    m, sec = divmod(int(round(left)), 60)
    h, m = divmod(m, 60)
    return f"ETA {h}:{m:02d}:{sec:02d} (mean trial {mean:.1f} s)"


def run_with_progress(session_cls: Any, sweep: Any, out: Path, resume: bool, con: Any, show: bool,
                      force: bool = False, stops: Any = None, executor: "Executor | None" = None) -> Any:
    """Run the session under a progress bar, one line per finished trial above it."""
    from rich.markup import escape
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loadprof.reports.console import trial_line

    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[eta]}", markup=False),
                        console=con, disable=not show, transient=True)
    walls: list[float] = []
    started = {"t": time.monotonic()}
    with progress:
        task = progress.add_task("starting", total=None, eta="")

        def on_start(trial: Any, i: int, n: int) -> None:
            started["t"] = time.monotonic()
            progress.update(task, total=n, description=f"trial {i + 1}/{n}: {trial.strategy.display()}",
                            eta=eta_text(walls, n - i))

        def on_trial(result: Any, i: int, n: int) -> None:
            wall = result.harness.get("parent_wall_s") or result.wall_s
            if wall:
                walls.append(float(wall))
            progress.update(task, completed=i, eta=eta_text(walls, n - i))
            progress.console.print(trial_line(result))

        session = session_cls(sweep, out, resume=resume, force=force, on_start=on_start, on_trial=on_trial,
                              log=lambda s: progress.console.print(f"[dim]{escape(s)}[/]"), stops=stops,
                              executor=executor)
        return session.run()
