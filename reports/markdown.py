"""Markdown report, and the section data (tables of formatted strings) that the HTML report shares.

Both file renderers lay out the same ``Table`` objects, built here once, so report.md and report.html never
disagree with each other; columns and wording follow the console (reports/console.py, reports/study_tables.py).
Renderers read the result model only: they never measure and never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from loadprof.results import PhaseTiming, SweepResult, TrialResult
from loadprof.reports.console import harness_line, model_label
from loadprof.units import bytes_h, num
from loadprof.reports.study_tables import _signed_pct, curve_notes

SUMMARY_COLUMNS = ("#", "model", "strategy", "status", "import s", "load s", "warmup s", "peak RSS", "TTFT ms",
                   "decode tok/s", "wall s", "reason")
GENERATE_ORDER = ("prepare", "preallocate", "prefill", "decode", "finish")
#: artifact key -> (what it is, where to open it); the order is the order of the links
ARTIFACTS = (("speedscope", "py-spy profile", "open at speedscope.app"),
             ("memory_timeline", "memory timeline", "JSON: t_s, anon and file-backed RSS"),
             ("cuda_snapshot", "CUDA memory snapshot", "open at pytorch.org/memory_viz"),
             ("stdout", "stdout", ""), ("stderr", "stderr", ""), ("py_spy_log", "py-spy log", ""))
SEVERITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class Table:
    """A titled table of already formatted cells; ``right`` marks the numeric columns."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    right: tuple[bool, ...] = ()
    description: str = ""
    notes: list[str] = field(default_factory=list)


def _numeric(columns: Sequence[str], left: Iterable[str] = ()) -> tuple[bool, ...]:
    skip = set(left)
    return tuple(c not in skip for c in columns)


# ----------------------------------------------------------------- section data (shared with reports/html.py)

def run_info(sweep: SweepResult) -> list[tuple[str, str]]:
    """Name, source, created, trial count and every env entry (versions, device) as (key, value) pairs."""
    info = [("run", sweep.run_id), ("sweep", sweep.name), ("source", sweep.source),
            ("created", sweep.created_at or "-"), ("trials", str(len(sweep.trials)))]
    if sweep.interrupted:
        info.append(("interrupted", "yes: only the trials that finished are shown"))
    info += [(str(k), str(v)) for k, v in sweep.env.items()]
    return info


def trial_name(t: TrialResult) -> str:
    return f"{t.label} r{t.repeat_index}"


def summary(sweep: SweepResult, reason_chars: int = 200) -> Table:
    rows = []
    for i, t in enumerate(sweep.trials, 1):
        m = t.metrics
        rows.append((str(i), model_label(t), trial_name(t), t.status, num(m.get("import_s")), num(m.get("load_s")),
                     num(m.get("warmup_s")), bytes_h(m.get("peak_rss_bytes")), num(m.get("ttft_ms"), ".1f"),
                     num(m.get("decode_tok_s"), ".1f"), num(t.wall_s), (t.reason or "")[:reason_chars]))
    return Table(f"loadprof: {sweep.name} ({len(sweep.trials)} trials)", SUMMARY_COLUMNS, rows,
                 _numeric(SUMMARY_COLUMNS, ("model", "strategy", "status", "reason")))


def top_level_s(t: TrialResult) -> list[tuple[str, float]]:
    """Top-level phases summed by name, in order of first start (a name can repeat)."""
    return _sum_by_name(t.phases)


def _sum_by_name(nodes: Iterable[PhaseTiming]) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    for p in sorted(nodes, key=lambda p: p.start_s):
        out[p.name] = out.get(p.name, 0.0) + p.duration_s
    return list(out.items())


def children_s(t: TrialResult, parent: str) -> list[tuple[str, float]] | None:
    """The children of every top-level ``parent`` phase summed by name, plus ``other`` (the time no child covers).

    None when the trial has no such phase. Generate children keep the pipeline order (prepare .. finish).
    """
    nodes = [p for p in t.phases if p.name == parent]
    if not nodes:
        return None
    parts = _sum_by_name(c for p in nodes for c in p.children)
    if parent == "generate":
        rank = {n: i for i, n in enumerate(GENERATE_ORDER)}
        parts.sort(key=lambda kv: rank.get(kv[0], len(rank)))
    return parts + [("other", sum(p.other_s if p.children else p.duration_s for p in nodes))]


INCOMPLETE_MARK = "\u2020"
INCOMPLETE_NOTE = f"{INCOMPLETE_MARK} incomplete: the trial ended inside this phase; its time is a lower bound"


def _open(nodes: Iterable[PhaseTiming]) -> set[str]:
    return {p.name for p in nodes if p.incomplete}


def phase_tables(sweep: SweepResult) -> list[Table]:
    """Top-level phases, then the children of ``load`` and of ``generate``: one row per trial, seconds."""
    tables = []

    def cell(d: Mapping[str, float], name: str, open_: set[str]) -> str:
        return num(d.get(name), ".3f") + (INCOMPLETE_MARK if name in open_ else "")

    top = [(t, dict(top_level_s(t)), _open(t.phases)) for t in sweep.trials if t.phases]
    if top:
        cols = _union(d for _, d, _ in top)
        columns = ("strategy", *cols, "wall s")
        rows = [(trial_name(t), *(cell(d, c, o) for c in cols), num(t.wall_s, ".3f")) for t, d, o in top]
        notes = [INCOMPLETE_NOTE] if any(o for *_, o in top) else []
        desc = ("phases on the trial's clock; the gaps between them (wall s minus their sum) are the worker's "
                "own bookkeeping")
        tables.append(Table("top-level phases (s)", columns, rows, _numeric(columns, ("strategy",)), desc, notes))
    for parent, desc in (("load", "children of the load phase; other = load time no child covers"),
                         ("generate", "children of the generate phase summed over the measured calls; "
                                      "prefill includes preallocate; other = generate time no child covers")):
        per = []
        for t in sweep.trials:
            parts = children_s(t, parent)
            if parts is not None:
                nodes = [p for p in t.phases if p.name == parent]
                per.append((t, dict(parts), _open(c for p in nodes for c in p.children), _open(nodes)))
        if not per:
            continue
        cols = [c for c in _union(d for _, d, _, _ in per) if c != "other"] + ["other"]
        columns = ("strategy", *cols, f"{parent} s")
        rows = [(trial_name(t), *(cell(d, c, o) for c in cols),
                 num(sum(p.duration_s for p in t.phases if p.name == parent), ".3f")
                 + (INCOMPLETE_MARK if po else "")) for t, d, o, po in per]
        notes = [INCOMPLETE_NOTE] if any(o or po for *_, o, po in per) else []
        tables.append(Table(f"{parent} phases (s)", columns, rows, _numeric(columns, ("strategy",)), desc, notes))
    return tables


def _union(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def curve_table(c: Mapping[str, Any]) -> Table:
    columns = ("cap", "generate s", "TTFT ms", "ms/token p50", "alloc at generate start", "new tokens")
    rows = [(str(r["cap"]), num(r.get("generate_call_s"), ".3f"), num(r.get("ttft_ms"), ".1f"),
             num(r.get("per_token_ms_p50"), ".2f"), bytes_h(r.get("generate_start_alloc_bytes")),
             num(r.get("new_tokens"), ".0f")) for r in c.get("points", [])]
    notes = [text for _, text in curve_notes(c)]
    return Table("max_new_tokens curve", columns, rows, _numeric(columns), c.get("description", ""),
                 notes)


def batch_table(b: Mapping[str, Any]) -> Table:
    columns = ("batch", "decode tok/s", "speedup", "efficiency", "KV per seq", "KV total", "TTFT ms")
    rows = []
    for r in b.get("rows", []):
        marks = [m for m, k in (("best eff", "best_efficiency"), ("best tput", "best_throughput")) if r.get(k)]
        rows.append((f"{r['batch_size']}" + (f" ({', '.join(marks)})" if marks else ""),
                     num(r.get("decode_tok_s"), ".1f"),
                     "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
                     "-" if r.get("efficiency_pct") is None else f"{r['efficiency_pct']:.1f}%",
                     bytes_h(r.get("kv_bytes_per_seq")), bytes_h(r.get("kv_bytes_total")),
                     num(r.get("ttft_ms"), ".1f")))
    note = (f"efficiency = speedup / (batch / {b.get('baseline_batch_size')}); best efficiency: batch "
            f"{b.get('best_efficiency_batch_size')}, best throughput: batch {b.get('best_throughput_batch_size')}")
    return Table("batch scaling", columns, rows, _numeric(columns), b.get("description", ""), [note])


def quant_table(q: Mapping[str, Any]) -> Table:
    peak = "peak CUDA" if q.get("peak_source") == "cuda_allocated" else "peak RSS"
    columns = ("quant", "weights", "saved %", peak, "decode tok/s", "speedup", "TTFT change", "load s")
    rows = [(str(r["quantization"]), bytes_h(r.get("weights_bytes")), num(r.get("memory_saved_pct"), ".1f"),
             bytes_h(r.get("peak_bytes")), num(r.get("decode_tok_s"), ".1f"),
             "-" if r.get("decode_speedup") is None else f"{r['decode_speedup']:.2f}x",
             _signed_pct(r.get("ttft_change_pct")), num(r.get("load_s"), ".2f")) for r in q.get("rows", [])]
    notes = ([] if q.get("baseline") is not None else
             ["no unquantized point in this series: savings and speedups are not computed"])
    return Table("quantization", columns, rows, _numeric(columns, ("quant",)), q.get("description", ""), notes)


def study_tables(studies: Mapping[str, Any]) -> dict[str, list[Table]]:
    """Per study kind, one table per series (kinds without a series are left out)."""
    out = {"max_new_tokens": [curve_table(c) for c in studies.get("max_new_tokens") or []],
           "batch_size": [batch_table(b) for b in studies.get("batch_size") or []],
           "quantization": [quant_table(q) for q in studies.get("quantization") or []]}
    return {k: v for k, v in out.items() if v}


def finding_who(f: Mapping[str, Any]) -> str:
    """The strategies a finding is about: its label, else its trial ids."""
    return str(f.get("label") or ", ".join(f.get("trial_ids") or ()) or "")


def value_text(v: Any, unit: str) -> str:
    """A recommendation figure with its unit, formatted like ``loadprof recommend`` prints it."""
    if not isinstance(v, (int, float)):
        return "-" if v is None else f"{v} {unit}".strip()
    if unit == "bytes":
        return bytes_h(v)
    return {"s": f"{v:.3g} s", "ms": f"{v:.1f} ms", "tok/s": f"{v:.2f} tok/s"}.get(unit, f"{v:g} {unit}".strip())


def recommendations(sweep: SweepResult) -> tuple[Table | None, list[str]]:
    """Best configuration per objective under the memory budget, or (None, []) when the sweep has none.

    Read defensively (``.get``): the dict comes from loadprof.analysis.recommend and may be absent or older.
    """
    rec = getattr(sweep, "recommendations", None) or {}
    if not isinstance(rec, Mapping) or not rec:
        return None, []
    columns = ("objective", "best", "figure", "settings", "runner-up", "tradeoffs")
    rows = []
    for obj, o in (rec.get("objectives") or {}).items():
        o = o or {}
        fig = o.get("figure") or {}
        if not o.get("label"):
            rows.append((str(obj), f"nothing to recommend: {o.get('reason') or 'no candidate'}", "-", "-", "-", "-"))
            continue
        ru = o.get("runner_up") or {}
        margin = f", margin {o['margin_pct']:.1f}%" if isinstance(o.get("margin_pct"), (int, float)) else ""
        runner = (f"{ru.get('label')} ({value_text((ru.get('figure') or {}).get('value'), fig.get('unit', ''))})"
                  f"{margin}" if ru else "-")
        settings = ", ".join(f"{k}={v}" for k, v in (o.get("settings") or {}).items() if v is not None)
        tradeoffs = [*map(str, o.get("tradeoffs") or ())] + ([str(o["reason"])] if o.get("reason") else [])
        figure = f"{fig.get('name', '')} = {value_text(fig.get('value'), fig.get('unit', ''))}"
        rows.append((str(obj), str(o["label"]), figure, settings or "-", runner, "; ".join(tradeoffs) or "-"))
    notes = []
    if rec.get("memory_budget_bytes") is not None:
        notes.append(f"memory budget {bytes_h(rec['memory_budget_bytes'])}"
                     + (f" on {rec['peak_metric']}" if rec.get("peak_metric") else ""))
    if rec.get("excluded_over_budget"):
        notes.append("over budget: " + ", ".join(map(str, rec["excluded_over_budget"])))
    for w in rec.get("max_new_tokens_warnings") or ():
        share = w.get("share")
        advice = w.get("advice") or (f"generated {w.get('generated')} of max_new_tokens={w.get('cap')}"
                                     + (f" ({share:.0%})" if isinstance(share, (int, float)) else ""))
        notes.append(f"max_new_tokens larger than the answers: {w.get('label')}: {advice}")
    table = Table("recommendations", columns, rows, tuple(False for _ in columns)) if rows else None
    return table, notes


def artifact_links(t: TrialResult, out_dir: Path | str | None = None) -> list[tuple[str, str, str]]:
    """(what, relative href, how to open) for each artifact of the trial; with out_dir, only files that exist."""
    links = []
    for key, what, hint in ARTIFACTS:
        name = t.artifacts.get(key)
        if not name:
            continue
        rel = f"trials/{t.trial_id}/{name}"
        if out_dir is not None and not (Path(out_dir) / rel).is_file():
            continue
        links.append((what, rel, hint))
    return links


def status_counts(sweep: SweepResult) -> str:
    counts: dict[str, int] = {}
    for t in sweep.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + (" (interrupted)" if sweep.interrupted else "")


# ------------------------------------------------------------------------------------------- markdown output

def _cell(s: Any) -> str:
    """One table cell: no newlines, pipes escaped, raw HTML neutralised (viewers render inline HTML)."""
    return _text(s).replace("|", "\\|")


def _text(s: Any) -> str:
    """Inline text: one line, raw HTML neutralised."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


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


def render(sweep: SweepResult, out_dir: Path | str | None = None) -> str:
    """report.md: every section of the report as GitHub-flavoured Markdown; links are relative to out_dir."""
    md = [f"# loadprof: {_text(sweep.name)}", ""]
    md += [f"- **{_text(k)}**: {_text(v)}" for k, v in run_info(sweep)] + [""]
    s = summary(sweep)
    md += ["## Summary", "", *md_table(s), "", _text(status_counts(sweep)), ""]
    findings = list(sweep.findings)  # already ranked by loadprof.analysis.findings
    if findings:
        md += [f"## Findings ({len(findings)}, most important first)", ""]
        for i, f in enumerate(findings, 1):
            who = finding_who(f)
            md += [f"{i}. **{_text(f.get('severity', ''))}** {_text(f.get('title', ''))}"
                   + (f" ({_text(who)})" if who else ""),
                   f"   - {_text(f.get('detail', ''))}", f"   - fix: {_text(f.get('fix', ''))}"]
        md.append("")
    rec_table, rec_notes = recommendations(sweep)
    if rec_table is not None or rec_notes:
        md += ["## Recommendations", ""]
        if rec_table is not None:
            md += [*md_table(rec_table), ""]
        md += [f"- {_text(n)}" for n in rec_notes] + [""]
    studies = study_tables(sweep.studies or {})
    if studies:
        md += ["## Studies", ""]
        for tables in studies.values():
            for t in tables:
                md += _md_table_block(t)
    phases = phase_tables(sweep)
    if phases:
        md += ["## Phases", ""]
        for t in phases:
            md += _md_table_block(t)
    files = [(t, artifact_links(t, out_dir)) for t in sweep.trials]
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
    return "\n".join(md).rstrip() + "\n"
