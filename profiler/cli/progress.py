"""The CLI's side of running a sweep: ``compare``'s executor options, the progress bar with its ETA, and stop
signals held for the length of a command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from loadprof.run.interrupts import StopSignals
from loadprof.run.options import EXECUTORS

if TYPE_CHECKING:
    from loadprof.run.executor import Executor

def install_for_command() -> StopSignals:
    """A ``StopSignals`` installed until the running click command ends (its context closes): the first signal
    stops the sweep cleanly, later ones cannot cut the cleanup short or surface as click's ``Aborted!``."""
    stops = StopSignals()
    stops.install()
    click.get_current_context().call_on_close(stops.restore)
    return stops


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
                      force: bool = False, stops: Any = None, executor: "Executor | None" = None,
                      on_ready: Callable[[], None] | None = None) -> Any:
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
                              executor=executor, on_ready=(lambda todo: on_ready()) if on_ready else None)
        return session.run()
