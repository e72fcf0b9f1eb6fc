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

from loadprof.reports.base import Artifacts, TextRenderer
from loadprof.reports.sections import (figures_available, harness_line, model_label, stake_text, status_counts,
                                       value_text, verdict)
from loadprof.reports.study_tables import render_studies
from loadprof.results import SweepResult, TrialResult
from loadprof.units import bytes_h, num

STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red", "crashed": "bold red", "timeout": "magenta"}


def trial_line(t: TrialResult) -> str:
    """One line per finished trial, printed above the progress bar."""
    m = t.metrics
    style = STATUS_STYLE.get(t.status, "")
    parts = [f"[{style}]{t.status:<7}[/]", escape(t.label), f"r{t.repeat_index}"]
    if t.ok:
        parts += [f"load {num(m.get('load_s'))} s", f"peak {bytes_h(m.get('peak_rss_bytes'))}"]
        if m.get("ttft_ms") is not None:
            parts += [f"TTFT {num(m.get('ttft_ms'), '.1f')} ms", f"decode {num(m.get('decode_tok_s'), '.1f')} tok/s"]
    else:
        parts.append(f"[dim]{escape((t.reason or '')[:160])}[/]")
    return "  ".join(parts)


def summary_table(sweep: SweepResult) -> Table:
    table = Table(title=f"loadprof: {sweep.name} ({len(sweep.trials)} trials)", show_lines=False)
    for col, just in (("#", "right"), ("model", "left"), ("strategy", "left"), ("status", "left"),
                      ("import s", "right"), ("load s", "right"), ("warmup s", "right"), ("peak RSS", "right"),
                      ("TTFT ms", "right"), ("decode tok/s", "right"), ("wall s", "right"), ("reason", "left")):
        table.add_column(col, justify=just, overflow="fold", no_wrap=col not in ("strategy", "reason"))
    for i, t in enumerate(sweep.trials, 1):
        m = t.metrics
        table.add_row(
            str(i), escape(model_label(t)), escape(f"{t.label} r{t.repeat_index}"),
            f"[{STATUS_STYLE.get(t.status, '')}]{t.status}[/]",
            num(m.get("import_s")), num(m.get("load_s")), num(m.get("warmup_s")), bytes_h(m.get("peak_rss_bytes")),
            num(m.get("ttft_ms"), ".1f"), num(m.get("decode_tok_s"), ".1f"), num(t.wall_s),
            escape((t.reason or "")[:120]),
        )
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
    picks = [(o, r) for o, r in sweep.recommendations.objectives.items() if r.label]
    if not picks or len(sweep.trials) < 2:
        return
    console.print("[bold]Recommendations[/] (details: loadprof recommend OUT)")
    for obj, r in picks:
        f = r.figure
        console.print(f"  {obj:<10} {escape(r.label or '')}  ({f.name} {value_text(f.value, f.unit)})", highlight=False)
    for w in sweep.recommendations.max_new_tokens_warnings[:5]:
        console.print(f"  [yellow]max_new_tokens[/] {escape(w.label)}: {escape(w.advice)}", highlight=False)


def render(sweep: SweepResult, console: Console | None = None, out_dir: Any = None) -> None:
    """Print the report; ``out_dir`` (only printed, never opened) names where the files are."""
    console = console or Console()
    line = verdict(sweep)
    if line:
        console.print(line, markup=False, highlight=False, style="bold")
    console.print(summary_table(sweep))
    if sweep.studies:
        render_studies(sweep.studies, console)
    render_findings(sweep, console)
    render_recommendations(sweep, console)
    line = harness_line(sweep)
    if line:
        console.print(f"[dim]{line}[/]")
    console.print(status_counts(sweep))
    if out_dir is not None:
        figures = "plots" if figures_available() else "tables only: pip install 'loadprof[plots]' for figures"
        console.print(f"results: {out_dir}/report.html ({figures}), report.md, report.csv, report.json, results.jsonl; "
                      f"per-trial logs and profiles in {out_dir}/trials/", highlight=False, markup=False)


def render_text(sweep: SweepResult, artifacts: Artifacts | None = None, width: int = 160) -> str:
    """What ``render`` prints, as plain text (no colour) at a fixed width, so it does not depend on the terminal."""
    buf = io.StringIO()
    render(sweep, Console(file=buf, width=width, color_system=None, force_terminal=False, force_jupyter=False,
                          force_interactive=False))
    return buf.getvalue()


RENDERER = TextRenderer("console", "txt", render_text)
