"""report.md: every section of the report as GitHub-flavoured Markdown.

Lays out the ``Table`` objects of loadprof.reports.sections (which report.html lays out too, so the two never
disagree); columns and wording follow the console. Reads the result model only: never measures, never imports
torch, never opens a file (which trial files exist is asked of the ``Artifacts`` the caller passes in).
"""

from __future__ import annotations

import re
from typing import Any

from loadprof.reports.base import Artifacts, TextRenderer
from loadprof.reports.configurations import tables as configuration_tables
from loadprof.reports.sections import (Table, artifact_links, finding_who, harness_line, phase_tables, recommendations,
                                       run_info, stake_text, status_counts, summary, trial_name)
from loadprof.reports.sampled import sampled_table
from loadprof.reports.study_tables import study_tables
from loadprof.reports.verdict import VerdictBlock, verdict_block
from loadprof.results.model import SweepResult


#: what a Markdown viewer would take for inline HTML or a character reference: a ``<`` opening a tag, comment or
#: declaration, and ``&name;`` / ``&#n;``; only these are backslash-escaped, so ">= 2" reads as written
_HTML_LIKE = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)")


def _cell(s: Any) -> str:
    """One table cell: no newlines, pipes escaped, raw HTML neutralised (viewers render inline HTML)."""
    return _text(s).replace("|", "\\|")


def _text(s: Any) -> str:
    """Inline text: one line, raw HTML neutralised with backslash escapes (not entities: the file stays
    readable as plain text), a leading ``>`` kept from starting a block quote."""
    text = _HTML_LIKE.sub(lambda m: "\\" + m.group(0), str(s).replace("\n", " "))
    return "\\" + text if text.startswith(">") else text


def md_table(t: Table) -> list[str]:
    right = t.right or tuple(False for _ in t.columns)
    lines = ["| " + " | ".join(_cell(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return lines


def _md_table_block(t: Table, level: str = "###") -> list[str]:
    head = f"{level} {_text(t.title)}" + (f": {_text(t.description)}" if t.description else "")
    out = [head, "", *md_table(t), ""]
    out += [f"- {_text(n)}" for n in t.notes]
    return out + ([""] if t.notes else [])


def verdict_lines(block: VerdictBlock) -> list[str]:
    """The verdict block: the top finding (bold), the busy-machine line (quoted), the picks, what to do next."""
    out: list[str] = []
    if block.headline:
        out += [f"**{_text(block.headline)}**", ""]
    if block.busy:
        out += [f"> **{_text(block.busy)}**", ""]
    if block.concurrency:
        out += [f"> **{_text(block.concurrency)}**", ""]
    if block.picks:
        out += ["Use, per objective:", ""] + [f"- **{_text(k)}**: {_text(v)}" for k, v in block.picks] + [""]
    if block.next_steps:
        out += ["Next:", ""] + [f"{i}. {_text(x)}" for i, x in enumerate(block.next_steps, 1)] + [""]
    return out


def render(sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
    """report.md: every section as Markdown; links are relative to the run folder, and with ``artifacts`` only
    point at files that exist."""
    md = [f"# loadprof: {_text(sweep.name)}", "", *verdict_lines(verdict_block(sweep))]
    findings = list(sweep.findings)  # already ranked by loadprof.analysis.findings
    if findings:
        md += [f"## Findings ({len(findings)}, most important first)", ""]
        for i, f in enumerate(findings, 1):
            who = finding_who(f)
            md += [f"{i}. **{_text(f.severity)}** {_text(f.title)}" + (f" ({_text(who)})" if who else ""),
                   f"   - {_text(f.detail)}", f"   - fix: {_text(f.fix)}"]
            if stake_text(f):
                md.append(f"   - {_text(stake_text(f))}")
        md.append("")
    s = summary(sweep)
    md += ["## Summary", "", *md_table(s), "", _text(status_counts(sweep)), ""]
    for t in configuration_tables(sweep):
        md += [f"## {_text(t.title)}", "", _text(t.description), "", *md_table(t), ""]
        md += [f"- {_text(n)}" for n in t.notes] + [""]
    rec_table, rec_notes = recommendations(sweep)
    if rec_table is not None or rec_notes:
        md += ["## Recommendations", ""]
        if rec_table is not None:
            md += [*md_table(rec_table), ""]
        md += [f"- {_text(n)}" for n in rec_notes] + [""]
    studies = study_tables(sweep.studies)
    if studies:
        md += ["## Studies", ""]
        for tables in studies.values():
            for t in tables:
                md += _md_table_block(t)
    phases = phase_tables(sweep) + [x for x in (sampled_table(sweep),) if x is not None]
    if phases:
        md += ["## Phases", ""]
        for t in phases:
            md += _md_table_block(t)
    files = [(t, artifact_links(t, artifacts)) for t in sweep.trials]
    files = [(t, links) for t, links in files if links]
    if files:
        md += ["## Trial files", ""]
        for t, links in files:
            parts = [f"[{what}]({href})" + (f" ({hint})" if hint else "") for what, href, hint in links]
            md.append(f"- {_text(trial_name(t))} (`{t.trial_id}`): " + ", ".join(parts))
        md.append("")
    line = harness_line(sweep)
    if line:
        md += ["## Harness", "", _text(line), ""]
    md += ["## Environment", ""] + [f"- **{_text(k)}**: {_text(v)}" for k, v in run_info(sweep)] + [""]
    return "\n".join(md).rstrip() + "\n"


RENDERER = TextRenderer("markdown", "md", render)
