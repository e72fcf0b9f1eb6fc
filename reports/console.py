"""Console renderer (rich): one row per trial, like the user's benchmark summary, plus harness cost.

The CLI prints with ``render`` onto its own console; ``RENDERER`` gives the same text as a string, like every
other format (loadprof.reports.base). Shared wording comes from loadprof.reports.sections.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadprof.core import figures
from loadprof.reports.base import Artifacts, TextRenderer
from loadprof.reports.configurations import print_tables, tables as configuration_tables
from loadprof.reports.sections import (cap_warning_lines, figures_available, harness_line, stake_text, status_counts,
                                       summary)
from loadprof.reports.study_tables import render_studies
from loadprof.reports.verdict import verdict_block
from loadprof.results.model import SweepResult, TrialResult
from loadprof.core import units
from loadprof.core.units import bytes_h, num

STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red", "crashed": "bold red", "timeout": "magenta"}


def trial_line(t: TrialResult) -> str:
    """One line per finished trial, printed above the progress bar."""
    m = t.metrics
    style = STATUS_STYLE.get(t.status, "")
    parts = [f"[{style}]{t.status:<7}[/]", escape(t.label), f"r{t.repeat_index}"]
    if t.ok:
        cost = figures.LOAD_COST_S.read(m)  # what the user pays: a shared lazy import is in it, not in load_s
        parts += [f"load {num(cost if cost is not None else figures.LOAD_S.read(m))} s", f"peak {bytes_h(figures.PEAK_RSS_BYTES.read(m))}"]
        if figures.TTFT_MS.read(m) is not None:
            parts += [f"TTFT {num(figures.TTFT_MS.read(m), '.1f')} ms",
                      f"decode {num(figures.DECODE_TOK_S.read(m), '.1f')} tok/s"]
    else:
        parts.append(f"[dim]{escape((t.reason or '')[:160])}[/]")
    return "  ".join(parts)


def summary_table(sweep: SweepResult) -> Table:
    """The per-trial table (loadprof.reports.sections.summary, the one definition), with the status coloured."""
    t = summary(sweep, reason_chars=120)
    table = Table(title=escape(t.title), show_lines=False)
    for col, right in zip(t.columns, t.right):
        table.add_column(col, justify="right" if right else "left", overflow="fold",
                         no_wrap=col not in ("model", "strategy", "reason"), min_width=16 if col == "strategy" else None)
    status = t.columns.index("status")
    for row in t.rows:
        table.add_row(*(f"[{STATUS_STYLE.get(c, '')}]{c}[/]" if i == status else escape(c) for i, c in enumerate(row)))
    return table


SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}


def render_findings(sweep: SweepResult, console: Console, limit: int = 12) -> None:
    if not sweep.findings:
        return
    console.print(f"[bold]Findings[/] ({len(sweep.findings)}, most important first)")
    for i, f in enumerate(sweep.findings[:limit], 1):
        style = SEVERITY_STYLE.get(f.severity, "")
        who = f" ({escape(f.label)})" if f.label else ""
        console.print(f"{i:>2}. [{style}]{f.severity:<6}[/] {escape(f.title)}{who}", markup=True,
                      highlight=False)
        console.print(f"      {f.detail}", markup=False)
        console.print(f"      fix: {f.fix}", markup=False, style="dim")
        if stake_text(f):
            console.print(f"      {stake_text(f)}", markup=False, style="dim")
    if len(sweep.findings) > limit:
        console.print(f"    ... {len(sweep.findings) - limit} more in report.json")


def render_recommendations(sweep: SweepResult, console: Console) -> None:
    """One line per model and objective: the pick with its spread and verdict, or why there is none."""
    rec = sweep.recommendations
    if not rec.picks or len(sweep.trials) < 2:
        return
    console.print("[bold]Recommendations[/] (details: loadprof recommend OUT)")
    for r in rec.picks:
        f = r.figure
        who = f"{r.model}: " if len(rec.models) > 1 else ""
        if r.label:
            tie = f"; tied with {', '.join(r.tied)}" if r.tied else ""
            shown = units.estimate(r.estimate, f.unit) if r.estimate else units.value(f.value, f.unit)
            text = f"  {who}{r.objective:<10} {r.label}  ({f.name} {shown}; {r.verdict}{tie})"
        else:
            text = f"  {who}{r.objective:<10} no pick: {r.rule or r.reason or 'nothing measured'}"
        console.print(text, markup=False, highlight=False)
    for w in cap_warning_lines(rec, sweep.trials)[:5]:
        console.print(f"  {w}", markup=False, highlight=False, style="yellow")


def render_verdict(sweep: SweepResult, console: Console) -> None:
    """The answer first: the top finding, the busy-machine line, the pick per objective, what to do next."""
    block = verdict_block(sweep)
    if block.headline:
        console.print(block.headline, markup=False, highlight=False, style="bold")
    if block.busy:
        console.print(block.busy, markup=False, highlight=False, style="bold yellow")
    if block.concurrency:
        console.print(block.concurrency, markup=False, highlight=False, style="bold yellow")
    for objective, text in block.picks:
        console.print(f"  use for {objective}: {text}", markup=False, highlight=False)
    for i, step in enumerate(block.next_steps, 1):
        console.print(f"  next {i}. {step}", markup=False, highlight=False, style="cyan")
    if not block.empty:
        console.print()


def render(sweep: SweepResult, console: Console | None = None, out_dir: Any = None) -> None:
    """Print the report; ``out_dir`` (only printed, never opened) names where the files are."""
    console = console or Console()
    render_verdict(sweep, console)
    render_findings(sweep, console)
    console.print(summary_table(sweep))
    print_tables(configuration_tables(sweep), console)
    if sweep.studies:
        render_studies(sweep.studies, console)
    render_recommendations(sweep, console)
    line = harness_line(sweep)
    if line:
        console.print(line, markup=False, style="dim")
    console.print(status_counts(sweep))
    if sweep.env:
        env = ", ".join(f"{k} {v}" for k, v in sweep.env.items())
        console.print(f"environment: {env}", markup=False, highlight=False, style="dim")
    if out_dir is not None:
        plots = "plots" if figures_available() else "tables only: matplotlib is missing, pip install matplotlib for figures"
        console.print(f"results: {out_dir}/report.html ({plots}), report.md, report.csv, configurations.csv, "
                      f"report.json, results.jsonl; per-trial logs and profiles in {out_dir}/trials/",
                      highlight=False, markup=False)


def render_text(sweep: SweepResult, artifacts: Artifacts | None = None, width: int = 160) -> str:
    """What ``render`` prints, as plain text (no colour) at a fixed width, so it does not depend on the terminal."""
    buf = io.StringIO()
    render(sweep, Console(file=buf, width=width, color_system=None, force_terminal=False, force_jupyter=False,
                          force_interactive=False))
    return buf.getvalue()


RENDERER = TextRenderer("console", "txt", render_text)
