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
    a sweep of a few long trials): the running trial(s) take the mean, less what they already spent (never
    below 0: a trial past the mean is about to end), and the rest the mean each. ``remaining`` counts the running
    trials; ``running_s`` is how long the current one has run, so the ETA moves while it runs."""
    if remaining <= 0:
        return ""
    if not done_walls:
        return f"ETA after the first trial (running {_clock(running_s)})" if running_s else "ETA after the first trial"
    mean = sum(done_walls) / len(done_walls)
    waves = -(-remaining // max(1, jobs))  # trials left, a wave of ``jobs`` at a time
    left = max(0.0, mean - running_s) + mean * (waves - 1)
    return f"ETA {_clock(left)} (mean trial {mean:.1f} s)"


def _clock(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}"


class _EtaState:
    """What the ETA column reads on every refresh: finished walls, trials left, when the current one started."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.walls: list[float] = []
        self.remaining = 0
        self.started: float | None = None

    def text(self) -> str:
        running = self.clock() - self.started if self.started is not None else 0.0
        return eta_text(self.walls, self.remaining, running)


def run_with_progress(session_cls: Any, sweep: Any, out: Path, resume: bool, con: Any, show: bool,
                      force: bool = False, stops: Any = None, executor: "Executor | None" = None,
                      on_ready: Callable[[], None] | None = None) -> Any:
    """Run the session under a progress bar, one line per finished trial above it."""
    from rich.markup import escape
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from loadprof.reports.console import trial_line

    class EtaColumn(ProgressColumn):
        """Re-computed at every refresh (rich's timer, 10 Hz): the ETA moves while a long trial runs."""

        def render(self, task: Any) -> Text:
            return Text(eta.text())

    eta = _EtaState(time.monotonic)
    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), EtaColumn(), console=con, disable=not show, transient=True)
    with progress:
        task = progress.add_task("starting", total=None)

        def on_start(trial: Any, i: int, n: int) -> None:
            eta.started, eta.remaining = time.monotonic(), n - i
            progress.update(task, total=n, description=f"trial {i + 1}/{n}: {trial.strategy.display()}")

        def on_trial(result: Any, i: int, n: int) -> None:
            wall = result.harness.get("parent_wall_s") or result.wall_s
            if wall:
                eta.walls.append(float(wall))
            eta.started, eta.remaining = None, n - i
            progress.update(task, completed=i)
            progress.console.print(trial_line(result))

        session = session_cls(sweep, out, resume=resume, force=force, on_start=on_start, on_trial=on_trial,
                              log=lambda s: progress.console.print(f"[dim]{escape(s)}[/]"), stops=stops,
                              executor=executor, on_ready=(lambda todo: on_ready()) if on_ready else None)
        return session.run()
