"""The ``loadprof`` command. Never imports torch at module level: --help and expand stay instant.

Exit codes of compare: 0 every trial ok or skipped; 1 the sweep finished but a
trial failed, crashed or timed out; 2 bad input or an unusable output folder (nothing ran); 74 the output
folder stopped taking writes mid-run (finished trials kept); 130 interrupted by Ctrl-C (SIGINT), 143 by
SIGTERM, 129 by SIGHUP (128 + the signal; the trial in flight is stopped, what finished is kept). diff: see its --help (codes named in loadprof.analysis.diff).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from loadprof import __version__
from loadprof.core.errors import LoadprofError
from loadprof.core import figures
from loadprof.reports.formats import FORMATS
from loadprof.cli.progress import executor_options

EXIT_OUTPUT = 74  # EX_IOERR: an output (the folder, stdout) stopped taking writes
EXIT_TRIAL_FAILED = 1  # bad input exits 2 through LoadprofError.exit_code; a stop signal 128 + its number


def _console(stderr: bool = False) -> Any:
    """Rich console; off a terminal (CI logs, pipes) use a wide page instead of rich's 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


def _fail(e: LoadprofError) -> None:
    con = _console(stderr=True)
    con.print("[bold red]error:[/]", end=" ")
    con.print(e.message, markup=False, soft_wrap=True)  # one line, however long: CI logs grep it
    if e.hint:
        con.print(f"  hint: {e.hint}", markup=False, soft_wrap=True)
    sys.exit(e.exit_code)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoadprofError as e:
            _fail(e)
        except BrokenPipeError:  # `loadprof ... | head`: the reader left; what finished is on disk
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail again
            _fail(LoadprofError("stdout was closed by its reader (broken pipe)", exit_code=EXIT_OUTPUT))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadprof")
def main() -> None:
    """Where the time and memory of Hugging Face model loading and generation go.

    Start with: loadprof compare strategies/examples/quickstart.yaml
    """
    # the parent never reaches the network, whatever the environment says (hub lookups read the local cache;
    # huggingface_hub reads these when first imported, which is after this: every import here is lazy)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if sys.stdout is None:  # started with stdout closed (`loadprof compare ... >&-`): nowhere to say anything
        raise LoadprofError("stdout is closed; loadprof needs somewhere to write", exit_code=EXIT_OUTPUT,
                            hint="redirect it instead: >/dev/null or >file")
    for stream in (sys.stdout, sys.stderr):  # a label or message no terminal encoding can show is escaped, not fatal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


@main.command()
@click.argument("yaml_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default ./loadprof-runs/<name>-<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out, skipping finished trial ids (the "
              "folder must hold a loadprof sweep; without --resume it must be absent or empty).")
@click.option("--force", is_flag=True, help="With --resume: continue even though YAML_FILE expands to another "
              "sweep than the one that made --out (its trials are added to that folder).")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table (the console report), or the answer on stdout with progress on stderr: md (report.md), "
                   "json (report.json), csv (one row per trial), jsonl (one trial per line)")
@executor_options
def compare(yaml_file: Path, out: Path | None, resume: bool, force: bool, progress: bool, fmt: str, executor: str,
            ray_address: str | None, jobs: int | None, gpus_per_trial: int | None) -> None:
    """Run every trial of YAML_FILE, each in a process of its own, and report.

    Exit codes: 0 every trial ok or skipped; 1 a trial failed, crashed or timed out; 2 bad input or an unusable
    output folder (nothing ran); 74 the output folder stopped taking writes mid-run (disk full, file size limit,
    read-only): finished trials kept, continue with --resume; 130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by
    SIGHUP (the trial in flight is stopped with everything it started; finished trials and the report are kept).
    """
    from loadprof.cli.progress import install_for_command

    stops = install_for_command()  # Ctrl-C, SIGTERM, SIGHUP: a clean stop, exit 128 + signal, for the whole command
    from loadprof.strategies.preflight import check_environment, load_checked

    sweep, preflight_notes = load_checked(yaml_file)  # SpecError -> exit 2 before anything runs or is made
    from loadprof.run.session import Session, default_out
    from loadprof.reports import console as console_report

    if out is None:
        if resume:
            raise LoadprofError("--resume needs --out (the folder of the sweep to continue)", exit_code=2)
        out = default_out(sweep)
    if force and not resume:
        raise LoadprofError("--force goes with --resume (it lets a different sweep continue in --out)", exit_code=2)
    check_environment(sweep.strategies, out)  # the output folder's place and the caches, still before anything
    from rich.markup import escape

    from loadprof.results.jsonl import OutputWriteError
    from loadprof.cli.progress import run_with_progress
    from loadprof.run.options import make_executor

    runner, notes = make_executor(executor, ray_address=ray_address, jobs=jobs, gpus_per_trial=gpus_per_trial)
    con = _console(stderr=fmt != "table")  # a machine format owns stdout
    trials = sweep.trials()

    def header() -> None:
        """Printed once the output folder is accepted: a refused run never announces a folder it did not make."""
        con.print(f"[bold]loadprof[/] {escape(sweep.name)}: {len(sweep.strategies)} strategies x {sweep.repeat} "
                  f"repeat(s) = {len(trials)} trials -> {escape(str(out))}")
        for note in [*sweep.dropped, *preflight_notes, *notes]:
            con.print(f"[yellow]note:[/] {escape(note)}")

    try:
        result = run_with_progress(Session, sweep, out, resume, con, progress, force=force, stops=stops,
                                   executor=runner, on_ready=header)
    except OutputWriteError as e:  # what finished is on disk: show it, then the one line saying how to go on
        if e.result is not None:
            console_report.render(e.result, con)  # no out_dir: the report files may not have been written
        raise
    if result.interrupted or stops.signum is not None:
        _stopped(result, con, out, stops)
    if fmt == "table":
        console_report.render(result, con, out_dir=out)
    else:
        from loadprof.cli.outputs import compare_output

        click.echo(compare_output(result, fmt), nl=False)
    if any(t.status in ("failed", "crashed", "timeout") for t in result.trials):
        sys.exit(EXIT_TRIAL_FAILED)


def _stopped(result: Any, con: Any, out: Path, stops: Any) -> None:
    """A stopped sweep's end: the summary (not when asked twice, nor to a hung-up terminal), one line, exit
    128 + the first signal."""
    from rich.markup import escape

    from loadprof.run.interrupts import exit_code, signal_name
    from loadprof.reports import console as console_report

    try:
        if not stops.hurry:
            console_report.render(result, con, out_dir=out)
        con.print(f"[yellow]interrupted ({signal_name(stops.signum)})[/]: finished trials kept; continue with "
                  f"--resume --out {escape(str(out))}")
    except OSError:  # a hung-up terminal (SIGHUP): everything is in the output folder
        pass
    sys.exit(exit_code(stops.signum))


EXPAND_ROWS = 200  #: rows of ``expand``'s table without --all: 10,000 rows help nobody (and rich takes seconds)


@main.command()
@click.argument("yaml_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the strategies as JSON.")
@click.option("--all", "show_all", is_flag=True, help=f"List every strategy (the table shows the first {EXPAND_ROWS}).")
def expand(yaml_file: Path, as_json: bool, show_all: bool) -> None:
    """Print the trial matrix of YAML_FILE without running anything (no torch import)."""
    from rich.table import Table
    from rich.text import Text

    from loadprof.strategies.preflight import load_checked

    sweep, notes = load_checked(yaml_file)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps({"name": sweep.name, "repeat": sweep.repeat,
                               "strategies": [s.to_dict() | {"id": s.id} for s in sweep.strategies]}, indent=1))
        return
    table = Table(title=Text(f"{sweep.name}: {len(sweep.strategies)} strategies x {sweep.repeat} = "  # user text:
                             f"{len(sweep.trials())} trials"  # literal, never markup
                             + ("; run order: r0 of every strategy, then r1, ..." if sweep.repeat > 1 else "")))
    for col in ("#", "id", "label", "model", "device_map", "dtype", "quant", "validation", "cache", "loader",
                "prompt", "max_new", "batch", "kv", "timeout s"):
        table.add_column(col)
    shown = sweep.strategies if show_all else sweep.strategies[:EXPAND_ROWS]
    for i, s in enumerate(shown, 1):
        ld, g = s.load, s.generate
        dm = ld.device_map if isinstance(ld.device_map, str) else "custom"
        cells = (str(i), s.id, s.display(), s.model.label, dm, ld.dtype, ld.quantization, ld.validation,
                 ld.file_cache, ld.loader.target if ld.loader else "-",
                 *(map(str, (g.prompt_tokens, g.max_new_tokens, g.batch_size, g.cache_implementation))
                   if g else ("-",) * 4), f"{s.timeout_s:g}")
        table.add_row(*(Text(str(c)) for c in cells))
    _console().print(table)
    if len(shown) < len(sweep.strategies):
        _console().print(f"... {len(sweep.strategies) - len(shown)} more: --all lists them, --json gives them as data")
    for note in sweep.dropped:
        _console().print(f"note: {note}", markup=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the sweep YAML (for editor completion; no torch import).

    Save it (loadprof schema > loadprof.schema.json) and start a sweep file with
    # yaml-language-server: $schema=./loadprof.schema.json
    """
    from loadprof.strategies.schema import sweep_schema

    click.echo(json.dumps(sweep_schema(), indent=1))


@main.command("make-model")
@click.option("--shape", default="tiny", show_default=True, help="tiny, gpt2, gpt2-medium, qwen2.5-0.5b, ...")
@click.option("--arch", default=None, help="gpt2, llama, qwen2, mistral (default: the shape's own)")
@click.option("--dtype", default="bfloat16", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-shard-size", default="200MB", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
def make_model(shape: str, arch: str | None, dtype: str, seed: int, max_shard_size: str, force: bool) -> None:
    """Synthesize a real checkpoint (real architecture, seeded random weights) in the loadprof cache."""
    from loadprof.strategies import synthetic
    from loadprof.strategies.model import SyntheticSpec

    spec = SyntheticSpec(arch=arch, shape=shape, dtype=dtype, seed=seed, max_shard_size=max_shard_size)
    path = synthetic.make_model(spec, force=force)
    click.echo(str(path))


@main.command()
@click.argument("target")
@click.option("--dtype", "dtypes", multiple=True, default=("auto",), show_default=True,
              help="auto, float32, float16, bfloat16 (or fp32, fp16, bf16; int8/int4 mean fp16 with bnb 8/4-bit); "
                   "repeat it for a table across dtypes")
@click.option("--quantization", "quantizations", multiple=True, default=("none",), show_default=True,
              help="none, bnb-8bit, bnb-4bit-nf4, bnb-4bit-fp4 (or int8, int4); repeatable")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--prompt-tokens", default=32, show_default=True, type=int)
@click.option("--max-new-tokens", default=32, show_default=True, type=int)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table, md, csv, json (raw bytes) or jsonl")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def estimate(target: str, dtypes: tuple[str, ...], quantizations: tuple[str, ...], batch_size: int,
             prompt_tokens: int, max_new_tokens: int, fmt: str, as_json: bool) -> None:
    """What TARGET should need, from its config alone (no weights are read).

    TARGET is a synthetic shape (qwen2.5-7b, llama:qwen2.5-0.5b), a checkpoint folder, a sweep YAML (one row per
    distinct model x dtype/quantization x generate settings) or a hub id already in the local cache. Repeat
    --dtype / --quantization for one row per combination, like `accelerate estimate-memory` (plus the KV cache).
    """
    from loadprof.strategies.model import GenerateSpec

    GenerateSpec(prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, batch_size=batch_size)  # validates
    from loadprof.analysis.estimate import (ESTIMATE_COLUMNS, dtype_grid, estimate_command, estimate_record,
                                            estimate_rows)

    ctx = click.get_current_context()
    given = {n for n in ("dtypes", "quantizations", "batch_size", "prompt_tokens", "max_new_tokens")
             if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT}  # a YAML's own unless given
    rows = []
    for dtype, quantization in dtype_grid(dtypes, quantizations):
        for e in estimate_command(target, dtype=dtype, quantization=quantization, batch_size=batch_size,
                                  prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                                  overrides=frozenset(given)):
            if e not in rows:
                rows.append(e)
    fmt = "json" if as_json else fmt
    if fmt == "table":
        from loadprof.reports.formats import rich_table

        _console().print(rich_table("Estimated memory (from config, no weights read)", ESTIMATE_COLUMNS,
                                    estimate_rows(rows), right=("params", "weights", "per layer", "KV/token",
                                                                "KV dynamic", "KV static", "total")))
    elif fmt == "md":
        from loadprof.reports.formats import markdown

        click.echo(markdown(ESTIMATE_COLUMNS, estimate_rows(rows)), nl=False)
    else:
        from loadprof.reports.formats import machine

        click.echo(machine([estimate_record(e) for e in rows] if fmt != "json" else [e.to_dict() for e in rows],
                           fmt), nl=False)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report(out: Path) -> None:
    """Re-render the reports of a finished (or interrupted) sweep without re-running it.

    Writes report.md, report.html and report.csv in OUT (report.json is left as the sweep wrote it).
    """
    from loadprof.results.runlock import RunLock

    with RunLock.acquire(out, log=_warn):  # not while a sweep writes the folder, nor two at once
        paths = _rerender(out)
    _console().print("re-rendered: " + ", ".join(str(p) for p in paths.values()), highlight=False, markup=False)


def _rerender(out: Path) -> dict[str, Path]:
    """``loadprof report``'s work, under the folder's lock: read, analyse, write the files, show the report."""
    from loadprof.analysis.sweep import analyse_sweep
    from loadprof.reports import console as console_report
    from loadprof.reports.files import write_all
    from loadprof.results.jsonl import OutputWriteError, is_output_error
    from loadprof.results.report_file import read_run

    read = read_run(out)
    _warn_all(read.notes)
    result = analyse_sweep(read.sweep)
    try:
        paths = write_all(result, out)
    except OSError as e:  # report.json and results.jsonl are only read: nothing measured is lost
        msg = f"cannot write the reports to {out}: {e.strerror or e}; report.json and results.jsonl are untouched"
        hint = "make room or make the folder writable, then run loadprof report again"
        if is_output_error(e):
            raise OutputWriteError(msg, hint=hint) from None
        raise LoadprofError(msg, hint=hint, exit_code=2) from None
    console_report.render(result, _console(), out_dir=out)
    return paths


def _warn(note: str) -> None:
    """What a reader forgave (skipped trials or lines), one line on stderr: stdout may be a machine format."""
    _console(stderr=True).print(f"warning: {note}", markup=False, soft_wrap=True, highlight=False)


def _warn_all(notes: Any) -> None:
    for note in notes:
        _warn(note)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--objective", type=click.Choice(figures.OBJECTIVE_NAMES), default=None,
              help="One objective (default: all four).")
@click.option("--memory-budget", default=None, help="Exclude strategies whose peak memory exceeds this (e.g. 16GiB).")
@click.option("--lengths", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Output token counts (JSONL/CSV/text, or texts with --tokenizer): a max_new_tokens coverage table.")
@click.option("--tokenizer", default=None, help="A local tokenizer folder, to count tokens of texts in --lengths.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table, md, csv, json or jsonl (one pick per line)")
def recommend(out: Path, objective: str | None, memory_budget: str | None, lengths: Path | None,
              tokenizer: str | None, fmt: str) -> None:
    """Which measured configuration to use for an objective, with the figures behind it and the trade-offs."""
    from loadprof.cli.recommend import cli_recommend

    sys.exit(cli_recommend(out, objective, memory_budget, lengths, tokenizer, _console(), fmt, warn=_warn))


@main.command(epilog="Exit codes: 0 no gated regression; 1 at least one gated regression beyond noise (the table "
                     "names the strategy and figure); 2 a report is missing or unreadable, or a bad option; 3 "
                     "insufficient data: a gated figure had fewer than 3 ok repeats on a side (a decided regression "
                     "still exits 1); 4 nothing comparable: no strategy matched between the two sweeps.")
@click.argument("a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", "threshold_pct", default=10.0, show_default=True, type=float,
              help="A change counts only beyond this percentage of A's value (and 5 ms / 1 MiB), and only when the "
                   "repeats tell A and B apart.")
@click.option("--fail-on", "fail_on", default=None, metavar="GROUPS",
              help=f"Comma-separated groups that gate: load ({figures.LOAD_COST_S.key}), ttft, prefill, decode, "
                   "memory, status (ok before, failing now), phases (every workload phase; off by default); 'all' "
                   "for every group. "
                   "Default: load,ttft,prefill,decode,memory,status. loadprof's own phases never gate.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table, md (the changed rows), csv/jsonl (every row), json (the whole diff)")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def diff(a: Path, b: Path, threshold_pct: float, fail_on: str | None, fmt: str, as_json: bool) -> None:
    """Compare run B against run A per strategy, figure and phase; a CI gate (exit codes below).

    A regression needs the repeats to tell A and B apart (Student's t on log values, Holm's correction across
    the gated comparisons, >= 3 repeats per side) and a change beyond the threshold.
    """
    from loadprof.cli.diff import cli_diff

    sys.exit(cli_diff(a, b, threshold_pct, _console(), fail_on=fail_on, fmt="json" if as_json else fmt, warn=_warn))


from loadprof.cli import predict as _predict, program as _program  # noqa: E402 - commands in modules of their own
main.add_command(_program.run)  # `loadprof run -- CMD`
main.add_command(_predict.predict)  # `loadprof predict TARGET`

if __name__ == "__main__":
    main()
