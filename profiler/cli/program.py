"""``loadprof run``: diagnose a program as it is (``loadprof run -- python app.py``, ``loadprof run -m pkg``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from loadprof.core.errors import LoadprofError

EPILOG = """Exit codes: the program's own when it exits by itself (128 + N when a signal loadprof did not send
killed it); 0 when --until stopped it; 130 when Ctrl-C stopped it (143 SIGTERM, 129 SIGHUP: 128 + the signal),
with what was measured kept; 124 past --timeout; 2 bad arguments or an unusable --out (nothing started)."""


def program_command(cmd: tuple[str, ...], module: str | None, python: str = sys.executable) -> list[str]:
    """The command to start: ``-m module ARGS`` and ``app.py ARGS`` run with this Python, anything else as given."""
    if module:
        return [python, "-m", module, *cmd]
    if not cmd:
        raise LoadprofError("nothing to run", exit_code=2, hint="loadprof run -- python app.py, or loadprof run -m pkg")
    if cmd[0].endswith(".py"):
        return [python, *cmd]
    return list(cmd)


def build_strategy(argv: list[str], *, until: str, settle: float, sampling_hz: int, memory_limit: str | None,
                   timeout: float | None, cwd: str | None = None) -> Any:
    """The one Strategy a ``loadprof run`` is (checked: a bad value exits 2 before anything starts)."""
    from loadprof.run.program import NO_TIMEOUT_S
    from loadprof.run.until import Until
    from loadprof.strategies.model import ProgramSpec, Strategy, program_model

    Until.parse(until, settle)
    program = ProgramSpec(cmd=tuple(argv), cwd=cwd, until=until.strip().lower(), settle_s=settle)
    return Strategy(model=program_model(program), generate=None, timeout_s=timeout or NO_TIMEOUT_S,
                    memory_limit=memory_limit, sampling_hz=sampling_hz, program=program)


@click.command("run", epilog=EPILOG, context_settings={"ignore_unknown_options": True,
                                                       "allow_interspersed_args": False})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default ./loadprof-runs/<program>-<timestamp>).")
@click.option("--until", "until", default="exit", show_default=True, metavar="exit|loaded|first-token|SECONDS",
              help="Stop the program (SIGTERM, then SIGKILL) when its models are loaded (no load for --settle "
                   "seconds), at its first generated token, or SECONDS after it started; exit: wait for it.")
@click.option("--settle", default=3.0, show_default=True, type=float, help="Seconds without a load that --until "
              "loaded waits after the last one.")
@click.option("--sampling-hz", default=50, show_default=True, type=click.IntRange(0, 1000),
              help="py-spy sampling rate (0: off).")
@click.option("--memory-limit", default=None, help="RLIMIT_DATA for the program, e.g. 8GiB.")
@click.option("--timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Stop the program after this many seconds (exit 124). Default: none.")
@click.option("-m", "module", default=None, help="Run a module, like python -m (with loadprof's Python).")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def run(out: Path | None, until: str, settle: float, sampling_hz: int, memory_limit: str | None,
        timeout: float | None, module: str | None, cmd: tuple[str, ...]) -> None:
    """Run a program unchanged, as one isolated trial, and diagnose its model loading and generation.

    \b
      loadprof run -- python app.py MODEL_DIR
      loadprof run --until loaded -- python server.py
      loadprof run -m mypkg.serve --port 8000

    Every from_pretrained (models, tokenizers, processors, configs), pipeline(...), safetensors load_file,
    generate and each model's first forward is a phase; the rest is sampled (py-spy) with memory. The program's
    output goes to the terminal; the report goes to --out (report.json, report.md, report.html).
    """
    from rich.console import Console

    from loadprof.reports import console as console_report
    from loadprof.run.interrupts import StopSignals
    from loadprof.run.program import program_sweep, run_and_report
    from loadprof.results.jsonl import default_out

    strategy = build_strategy(program_command(cmd, module), until=until, settle=settle, sampling_hz=sampling_hz,
                              memory_limit=memory_limit, timeout=timeout)
    out = out or default_out(program_sweep(strategy))
    con = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)  # stdout: the program's
    con.print(f"[bold]loadprof run[/]: {strategy.program.label} -> {out}", markup=True, highlight=False)
    stops = StopSignals()
    result, ran = run_and_report(strategy, out, stops=stops, log=lambda s: con.print(f"loadprof: {s}", markup=False))
    if not stops.hurry:
        console_report.render(result, con, out_dir=out)
    sys.exit(ran.exit_code)
