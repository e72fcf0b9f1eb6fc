"""The ``loadprof`` command. Never imports torch at module level: --help and expand stay instant.

Exit codes of compare: 0 every trial ok or skipped; 1 the sweep finished but a
trial failed, crashed or timed out; 2 bad input (nothing ran); 130 interrupted
(what finished is kept). diff: 1 when a regression exceeds the threshold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from loadprof import __version__
from loadprof.errors import LoadprofError

EXIT_TRIAL_FAILED, EXIT_INTERRUPTED = 1, 130  # bad input exits 2 through LoadprofError.exit_code


def _console(stderr: bool = False) -> Any:
    """Rich console; off a terminal (CI logs, pipes) use a wide page instead of rich's 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


def _fail(e: LoadprofError) -> None:
    con = _console(stderr=True)
    con.print("[bold red]error:[/]", end=" ")
    con.print(e.message, markup=False)
    if e.hint:
        con.print(f"  hint: {e.hint}", markup=False)
    sys.exit(e.exit_code)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoadprofError as e:
            _fail(e)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadprof")
def main() -> None:
    """Where the time and memory of Hugging Face model loading and generation go.

    Start with: loadprof compare strategies/examples/quickstart.yaml
    """


@main.command()
@click.argument("yaml_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default ./loadprof-runs/<name>-<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue a sweep in --out, skipping finished trial ids.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
def compare(yaml_file: Path, out: Path | None, resume: bool, progress: bool) -> None:
    """Run every trial of YAML_FILE, each in a fresh process, and report."""
    from loadprof.strategies.expand import load_sweep

    sweep = load_sweep(yaml_file)  # SpecError -> exit 2 before anything runs
    from loadprof.session import Session, default_out
    from loadprof.reports import console as console_report

    if out is None:
        if resume:
            raise LoadprofError("--resume needs --out (the folder of the sweep to continue)", exit_code=2)
        out = default_out(sweep)
    con = _console()
    trials = sweep.trials()
    con.print(f"[bold]loadprof[/] {sweep.name}: {len(sweep.strategies)} strategies x {sweep.repeat} repeat(s) "
              f"= {len(trials)} trials -> {out}")
    for note in sweep.dropped:
        con.print(f"[yellow]note:[/] {note}")
    result = _run_with_progress(Session, sweep, out, resume, con, progress)
    console_report.render(result, con, out_dir=out)
    if result.interrupted:
        con.print(f"[yellow]interrupted[/]: finished trials kept; continue with --resume --out {out}")
        sys.exit(EXIT_INTERRUPTED)
    if any(t.status in ("failed", "crashed", "timeout") for t in result.trials):
        sys.exit(EXIT_TRIAL_FAILED)


def _run_with_progress(session_cls: Any, sweep: Any, out: Path, resume: bool, con: Any, show: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from loadprof.reports.console import trial_line

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=con, disable=not show, transient=True)
    with progress:
        task = progress.add_task("starting", total=None)

        def on_start(trial: Any, i: int, n: int) -> None:
            progress.update(task, total=n, description=f"trial {i + 1}/{n}: {trial.strategy.display()}")

        def on_trial(result: Any, i: int, n: int) -> None:
            progress.update(task, completed=i)
            progress.console.print(trial_line(result))

        session = session_cls(sweep, out, resume=resume, on_start=on_start, on_trial=on_trial,
                              log=lambda s: progress.console.print(f"[dim]{s}[/]"))
        return session.run()


@main.command()
@click.argument("yaml_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the strategies as JSON.")
def expand(yaml_file: Path, as_json: bool) -> None:
    """Print the trial matrix of YAML_FILE without running anything (no torch import)."""
    from rich.table import Table

    from loadprof.strategies.expand import load_sweep

    sweep = load_sweep(yaml_file)
    if as_json:
        click.echo(json.dumps({"name": sweep.name, "repeat": sweep.repeat,
                               "strategies": [s.to_dict() | {"id": s.id} for s in sweep.strategies]}, indent=1))
        return
    table = Table(title=f"{sweep.name}: {len(sweep.strategies)} strategies x {sweep.repeat} = {len(sweep.trials())} trials")
    for col in ("#", "id", "label", "model", "device_map", "dtype", "quant", "validation", "cache", "loader",
                "prompt", "max_new", "batch", "kv", "timeout s"):
        table.add_column(col)
    for i, s in enumerate(sweep.strategies, 1):
        ld, g = s.load, s.generate
        dm = ld.device_map if isinstance(ld.device_map, str) else "custom"
        table.add_row(str(i), s.id, s.display(), s.model.label, dm, ld.dtype, ld.quantization, ld.validation,
                      ld.file_cache, ld.loader.target if ld.loader else "-",
                      *(map(str, (g.prompt_tokens, g.max_new_tokens, g.batch_size, g.cache_implementation))
                        if g else ("-",) * 4), f"{s.timeout_s:g}")
    _console().print(table)
    for note in sweep.dropped:
        _console().print(f"note: {note}")


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
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, float16, bfloat16")
@click.option("--quantization", default="none", show_default=True, help="none, bnb-8bit, bnb-4bit-nf4, bnb-4bit-fp4")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--prompt-tokens", default=32, show_default=True, type=int)
@click.option("--max-new-tokens", default=32, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the estimates as JSON.")
def estimate(target: str, dtype: str, quantization: str, batch_size: int, prompt_tokens: int,
             max_new_tokens: int, as_json: bool) -> None:
    """What TARGET should need, from its config alone (no weights are read).

    TARGET is a synthetic shape (qwen2.5-7b, llama:qwen2.5-0.5b), a checkpoint folder, a sweep YAML (one row per
    distinct model x dtype/quantization x generate settings) or a hub id already in the local cache.
    """
    from loadprof.strategies.model import DTYPES, QUANTIZATIONS, GenerateSpec
    from loadprof.errors import SpecError

    if dtype not in DTYPES:
        raise SpecError(f"invalid dtype {dtype!r}; allowed: {', '.join(DTYPES)}", path="--dtype")
    if quantization not in QUANTIZATIONS:
        raise SpecError(f"invalid quantization {quantization!r}; allowed: {', '.join(QUANTIZATIONS)}",
                        path="--quantization")
    GenerateSpec(prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, batch_size=batch_size)  # validates
    from loadprof.analysis.estimate import estimate_command, render_estimates

    rows = estimate_command(target, dtype=dtype, quantization=quantization, batch_size=batch_size,
                            prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in rows], indent=1))
    else:
        _console().print(render_estimates(rows))


@main.command()
@click.argument("out", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report(out: Path) -> None:
    """Re-render the reports of a finished (or interrupted) sweep without re-running it.

    Writes report.md, report.html and report.csv in OUT (report.json is left as the sweep wrote it).
    """
    from loadprof.results import SweepResult
    from loadprof.session import REPORT, read_results
    from loadprof.reports import console as console_report

    path = out / REPORT
    if path.exists():
        result = SweepResult.from_dict(json.loads(path.read_text()))
    else:
        trials = read_results(out)
        if not trials:
            raise LoadprofError(f"{out} has neither {REPORT} nor finished trials", exit_code=2)
        result = SweepResult(run_id=out.name, name=out.name, source="?", created_at="", trials=tuple(trials),
                             interrupted=True)
    from loadprof.analysis.sweep import analyse_sweep
    from loadprof.reports.files import write_all

    result = analyse_sweep(result)

    paths = write_all(result, out)
    console_report.render(result, _console(), out_dir=out)
    _console().print("re-rendered: " + ", ".join(str(p) for p in paths.values()), highlight=False)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--objective", type=click.Choice(["load", "memory", "ttft", "throughput"]), default=None,
              help="One objective (default: all four).")
@click.option("--memory-budget", default=None, help="Exclude strategies whose peak memory exceeds this (e.g. 16GiB).")
@click.option("--lengths", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Output token counts (JSONL/CSV/text, or texts with --tokenizer): a max_new_tokens coverage table.")
@click.option("--tokenizer", default=None, help="A local tokenizer folder, to count tokens of texts in --lengths.")
def recommend(out: Path, objective: str | None, memory_budget: str | None, lengths: Path | None,
              tokenizer: str | None) -> None:
    """Which measured configuration to use for an objective, with the figures behind it and the trade-offs."""
    from loadprof.analysis.recommend import cli_recommend

    sys.exit(cli_recommend(out, objective, memory_budget, lengths, tokenizer, _console()))


@main.command()
@click.argument("a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", "threshold_pct", default=10.0, show_default=True, type=float,
              help="A change counts only beyond this percentage and beyond the repeats' noise band.")
def diff(a: Path, b: Path, threshold_pct: float) -> None:
    """Compare two runs per strategy and phase; exit 1 when something got slower beyond the threshold (for CI)."""
    from loadprof.analysis.diff import cli_diff

    sys.exit(cli_diff(a, b, threshold_pct, _console()))


if __name__ == "__main__":
    main()
