"""report.html: one self-contained file (inline CSS and SVG figures; no script, font or network load).

Same sections and wording as report.md (the tables come from loadprof.reports.sections, the verdict block from
loadprof.reports.verdict), plus the figures of loadprof.reports.charts (phase bars, memory timelines) and
loadprof.reports.plots. Every piece of text from the run is escaped: labels and reasons are user input.
Links to trial files are relative, so the folder can be moved or zipped as a whole. Trial files are never
opened here: which exist, and a memory timeline that report.json lacks, come from the caller's ``Artifacts``.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable

from loadprof.reports.base import Artifacts, TextRenderer
from loadprof.reports.configurations import tables as configuration_tables
from loadprof.reports.sections import (SEVERITIES, Table, artifact_links, finding_who, harness_line, phase_tables,
                                       recommendations, run_info, status_counts, summary,
                                       stake_text, timeline_rows, trial_name)
from loadprof.reports.sampled import sampled_table
from loadprof.reports.study_tables import study_tables
from loadprof.reports.verdict import VerdictBlock, verdict_block
from loadprof.results.model import SweepResult, TrialResult

try:
    from loadprof.reports import charts, plots
except ImportError as _e:  # matplotlib is an extra: without it the page keeps every table and says how to get figures
    if not (_e.name or "").startswith("matplotlib"):
        raise
    plots = charts = None  # type: ignore[assignment]
#: shown instead of the figures when matplotlib is not installed
NO_PLOTS = ("Figures are not drawn: matplotlib, a dependency of loadprof, is missing (an incomplete install). "
            "pip install matplotlib, then loadprof report OUT re-renders this page with them.")

STUDY_TITLES = {"max_new_tokens": "max_new_tokens curve", "batch_size": "batch scaling",
                "quantization": "quantization"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
 background:#fafafa;margin:0}
main{max-width:1320px;margin:0 auto;padding:18px 28px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:30px 0 8px;border-bottom:1px solid #ddd;
 padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
.desc{font-weight:normal;color:#555}
nav a{margin-right:14px;color:#0b61a4;text-decoration:none}nav{margin:6px 0 10px}
dl.info{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:6px 0;font-size:13px}
dl.info dt{color:#666}dl.info dd{margin:0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12.5px;background:#fff;margin:4px 0 6px}
th,td{border:1px solid #e1e1e1;padding:3px 8px;vertical-align:top}
th{background:#f0f2f5;text-align:left;white-space:nowrap}td.n{text-align:right;
 font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fbfbfc}
table.summary td:nth-child(-n+4){white-space:nowrap}table.summary td:last-child{min-width:260px}
.st-ok{color:#1a7f37;font-weight:600}.st-skipped{color:#9a6700;font-weight:600}
.st-failed,.st-crashed{color:#cf222e;font-weight:600}
.st-front{color:#1a7f37;font-weight:600}.st-dominated{color:#777}.st-timeout{color:#8250df;font-weight:600}
.note{background:#fff8e1;border:1px solid #f0d58c;border-radius:4px;padding:6px 10px}
ul.notes{margin:2px 0 10px;padding-left:20px;font-size:12.5px;color:#333}
.finding{background:#fff;border:1px solid #e1e1e1;border-left:6px solid #999;border-radius:4px;
 padding:7px 12px;margin:8px 0}
.finding p{margin:3px 0}.finding .fix{color:#333}.finding .fix b{color:#555}.finding .stake{color:#666}.verdict{font-weight:600;border-left:4px solid #b00;padding:4px 8px;background:#fff6f6}
.finding .who{color:#555}
#verdict{background:#fff;border:1px solid #e1e1e1;border-left:6px solid #b00;border-radius:4px;padding:8px 14px;
 margin:8px 0 12px}#verdict p{margin:3px 0}#verdict .verdict{border:0;background:none;padding:0;font-size:15px}
#verdict dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:6px 0;font-size:13px}
#verdict dt{color:#555;font-weight:600}#verdict dd{margin:0}#verdict ol{margin:2px 0 2px;padding-left:22px;font-size:13px}
#verdict h2{font-size:16px;margin:0 0 4px;border:0;padding:0}
.sev{display:inline-block;min-width:56px;text-align:center;border-radius:3px;color:#fff;font-size:11px;
 font-weight:700;padding:1px 6px;margin-right:8px;text-transform:uppercase}
.sev-high{border-left-color:#cf222e}.sev-high .sev{background:#cf222e}
.sev-medium{border-left-color:#d4a72c}.sev-medium .sev{background:#b7860b}
.sev-low{border-left-color:#3b82c4}.sev-low .sev{background:#3b82c4}
figure{margin:6px 0 10px;background:#fff;border:1px solid #e6e6e6;border-radius:4px;padding:6px;
 display:inline-block;max-width:100%;box-sizing:border-box}
figure svg{max-width:100%;height:auto;display:block}
.trials{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.trial{background:#fff;border:1px solid #e1e1e1;border-radius:4px;padding:8px 10px}
.trial figure{border:0;padding:0;margin:4px 0}
.trial h3{margin:2px 0 4px;font-size:14px}.trial .id{color:#777;font-weight:normal;font-size:12px}
.links{font-size:12.5px;margin:4px 0 0;padding-left:18px}.links .hint{color:#666}
.muted{color:#666;font-size:12.5px;white-space:pre-wrap}
details pre{font-size:11.5px;max-height:240px;overflow:auto;background:#f6f8fa;padding:6px;white-space:pre-wrap}
"""


def _e(s: Any) -> str:
    return escape(str(s), quote=True)


def table_html(t: Table, status_col: str | None = None, css: str = "") -> str:
    right = t.right or tuple(False for _ in t.columns)
    si = t.columns.index(status_col) if status_col in t.columns else -1
    head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = []
        for i, (cell, r) in enumerate(zip(row, right)):
            cls = ' class="n"' if r else (f' class="st-{_e(cell)}"' if i == si else "")
            cells.append(f"<td{cls}>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{_e(css)}"' if css else ""
    return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _notes(notes: Iterable[str]) -> str:
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>' if items else ""


def _figure(svg: str | None, name: str) -> str:
    return f'<figure data-plot="{_e(name)}">{svg}</figure>' if svg else ""


def _findings(sweep: SweepResult) -> str:
    out = [f"<h2 id=\"findings\">Findings <span class=\"desc\">({len(sweep.findings)}, most important first)"
           "</span></h2>"]
    for f in sweep.findings:
        sev = f.severity
        cls = f"sev-{sev}" if sev in SEVERITIES else "sev-other"
        who = finding_who(f)
        who_html = f' <span class="who">({_e(who)})</span>' if who else ""
        out.append(f'<div class="finding {cls}"><p><span class="sev">{_e(sev)}</span><b>{_e(f.title)}'
                   f'</b>{who_html}</p>'
                   f'<p>{_e(f.detail)}</p><p class="fix"><b>fix:</b> {_e(f.fix)}</p>'
                   + (f'<p class="stake">{_e(stake_text(f))}</p>' if stake_text(f) else "") + "</div>")
    return "\n".join(out)


def _verdict(block: VerdictBlock) -> str:
    """The answer first: the top finding and its stake, the pick per objective, what to do next."""
    if block.empty:
        return ""
    out = ['<section id="verdict"><h2>Verdict</h2>']
    if block.headline:
        out.append(f'<p class="verdict">{_e(block.headline)}</p>')
    if block.busy:
        out.append(f'<p class="note" id="busy-machine">{_e(block.busy)}</p>')
    if block.concurrency:
        out.append(f'<p class="note" id="concurrency">{_e(block.concurrency)}</p>')
    if block.picks:
        out.append('<dl class="picks">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in block.picks)
                   + "</dl>")
    if block.next_steps:
        out.append("<p><b>next:</b></p><ol>" + "".join(f"<li>{_e(x)}</li>" for x in block.next_steps) + "</ol>")
    return "".join(out) + "</section>"


def _trial_card(t: TrialResult, artifacts: Artifacts | None, rows: Any, x_max: float | None = None) -> str:
    svg = charts.memory_timeline(t, rows, x_max) if charts else None
    links = []
    for what, href, hint in artifact_links(t, artifacts):
        links.append(f'<li><a href="{_e(href)}">{_e(what)}</a>'
                     + (f' <span class="hint">({_e(hint)})</span>' if hint else "") + "</li>")
    reason = f'<p class="muted">{_e(t.reason)}</p>' if t.reason else ""
    if t.stderr_tail:
        reason += f"<details><summary>stderr tail</summary><pre>{_e(t.stderr_tail)}</pre></details>"
    return (f'<div class="trial"><h3>{_e(trial_name(t))} <span class="id">{_e(t.trial_id)} '
            f'<span class="st-{_e(t.status)}">{_e(t.status)}</span></span></h3>{reason}'
            f'{_figure(svg, "memory-" + t.trial_id)}'
            + (f'<ul class="links">{"".join(links)}</ul>' if links else "") + "</div>")


def _configurations(sweep: SweepResult) -> str:
    """The per-configuration table, each model's Pareto table (front rows marked) and the Pareto figure."""
    out = []
    for i, t in enumerate(configuration_tables(sweep)):
        anchor = ' id="configurations"' if i == 0 else ' id="pareto"'
        out += [f'<h2{anchor}>{_e(t.title)}</h2>', f'<p class="desc">{_e(t.description)}</p>',
                table_html(t, "Pareto"), _notes(t.notes)]
        if i and plots:
            out.append(_figure(plots.pareto_plot(sweep.configurations), "pareto"))
    return "\n".join(x for x in out if x)


def render(sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
    """The whole report as one HTML document (string); with ``artifacts``, links point only at files that exist
    and a trial whose report.json has no memory timeline gets the one from its memory_timeline.json."""
    title = f"loadprof: {sweep.name}"
    body: list[str] = [f"<h1>{_e(title)}</h1>", _verdict(verdict_block(sweep))]
    sections = [("findings", "Findings"), ("summary", "Summary"), ("configurations", "Per configuration"),
                ("recommendations", "Recommendations"), ("studies", "Studies"), ("phases", "Phases"),
                ("trials", "Trials"), ("harness", "Harness"), ("environment", "Environment")]
    rec_table, rec_notes = recommendations(sweep)
    studies = study_tables(sweep.studies)
    present = {"summary": True, "configurations": bool(sweep.configurations), "findings": bool(sweep.findings),
               "recommendations": rec_table is not None or bool(rec_notes), "studies": bool(studies),
               "phases": any(t.phases for t in sweep.trials), "trials": bool(sweep.trials),
               "harness": harness_line(sweep) is not None, "environment": True}
    body.append("<nav>" + "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in sections if present[k]) + "</nav>")
    if plots is None:
        body.append(f'<p class="note" id="no-figures">{_e(NO_PLOTS)}</p>')
    if present["findings"]:
        body.append(_findings(sweep))
    body += ['<h2 id="summary">Summary</h2>', table_html(summary(sweep), "status", "summary"),
             f'<p class="muted">{_e(status_counts(sweep))}</p>', _configurations(sweep)]
    if present["recommendations"]:
        body.append('<h2 id="recommendations">Recommendations</h2>')
        body += [table_html(rec_table) if rec_table is not None else "", _notes(rec_notes)]
    if studies:
        body.append('<h2 id="studies">Studies</h2>')
        figs = plots.study_plots(sweep.studies) if plots else {}
        for kind, tables in studies.items():
            body += [f"<h3>{_e(STUDY_TITLES.get(kind, kind))}</h3>", _figure(figs.get(kind), f"study-{kind}")]
            for t in tables:
                body += [f'<p><b>{_e(t.title)}</b>: <span class="desc">{_e(t.description)}</span></p>',
                         table_html(t), _notes(t.notes)]
    if present["phases"]:
        body.append('<h2 id="phases">Phases</h2>')
        if plots:
            body += [_figure(charts.phase_bars(sweep, p), f"phases-{p}") for p in ("load", "generate")]
        for t in phase_tables(sweep) + [x for x in (sampled_table(sweep),) if x is not None]:
            body += [f'<h3>{_e(t.title)} <span class="desc">{_e(t.description)}</span></h3>', table_html(t),
                     _notes(t.notes)]
    if sweep.trials:
        rows = {t.trial_id: timeline_rows(t, artifacts) for t in sweep.trials} if charts else {}
        x_max = charts.timeline_end_s(sweep.trials, lambda t: rows[t.trial_id]) if charts else None
        body += ['<h2 id="trials">Trials</h2>',
                 '<p class="muted">memory: anonymous and file-backed RSS stacked (their sum is the RSS) over seconds '
                 'since the trial started, one x-axis for every trial; dotted lines at each workload phase start; '
                 "loadprof's own phases (trace, membw, estimate, cleanup) shaded grey and left out of the workload "
                 'peak line; py-spy profiles open at speedscope.app, CUDA snapshots at '
                 'pytorch.org/memory_viz (both viewers read the file in your browser)</p>',
                 '<div class="trials">' + "".join(_trial_card(t, artifacts, rows.get(t.trial_id), x_max)
                                                 for t in sweep.trials) + "</div>"]
    line = harness_line(sweep)
    if line:
        body += ['<h2 id="harness">Harness</h2>', f'<p class="muted">{_e(line)}</p>']
    body += ['<h2 id="environment">Environment</h2>',
             '<dl class="info">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in run_info(sweep)) + "</dl>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(b for b in body if b) + "\n</main></body></html>\n")


RENDERER = TextRenderer("html", "html", render)
