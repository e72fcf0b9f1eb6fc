"""The report's sections as plain data (tables of formatted strings, lines, links), shared by every renderer.

Built here once so the console, report.md, report.html and report.csv never disagree with each other, and so
no renderer has to import another one to reuse a table. Reads the result model only: never measures, never
imports torch, never touches the disk (trial files arrive through a ``loadprof.reports.base.Artifacts``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from loadprof.reports.base import Artifacts
from loadprof.results import (Finding, PhaseTiming, Recommendation, Recommendations, Study, SweepResult,
                              TrialResult)
from loadprof.units import bytes_h, num

SUMMARY_COLUMNS = ("#", "model", "strategy", "status", "import s", "load s", "warmup s", "peak RSS", "TTFT ms",
                   "decode tok/s", "wall s", "reason")
GENERATE_ORDER = ("prepare", "preallocate", "prefill", "decode", "finish")
#: artifact key -> (what it is, where to open it); the order is the order of the links
ARTIFACTS = (("speedscope", "py-spy profile", "open at speedscope.app"),
             ("memory_timeline", "memory timeline", "JSON: t_s, anon and file-backed RSS"),
             ("cuda_snapshot", "CUDA memory snapshot", "open at pytorch.org/memory_viz"),
             ("stdout", "stdout", ""), ("stderr", "stderr", ""), ("py_spy_log", "py-spy log", ""))
SEVERITIES = ("high", "medium", "low")
INCOMPLETE_MARK = "\u2020"
INCOMPLETE_NOTE = f"{INCOMPLETE_MARK} incomplete: the trial ended inside this phase; its time is a lower bound"


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


# ------------------------------------------------------------------------------------------ run and trials

def run_info(sweep: SweepResult) -> list[tuple[str, str]]:
    """Name, source, created, trial count and every env entry (versions, device) as (key, value) pairs."""
    info = [("run", sweep.run_id), ("sweep", sweep.name), ("source", sweep.source),
            ("created", sweep.created_at or "-"), ("trials", str(len(sweep.trials)))]
    if sweep.interrupted:
        info.append(("interrupted", "yes: only the trials that finished are shown"))
    info += [(str(k), str(v)) for k, v in sweep.env.items()]
    return info


def model_label(trial: TrialResult) -> str:
    """The model as the user named it (synthetic shape and dtype, or path / hub id)."""
    m = trial.strategy.model
    return f"{m.label} ({m.synthetic.dtype})" if m.synthetic is not None else m.label


def trial_name(t: TrialResult) -> str:
    """Label and repeat: what every renderer calls a trial."""
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


def status_counts(sweep: SweepResult) -> str:
    """e.g. ``2 ok, 1 crashed``, plus ``(interrupted)`` when the sweep did not finish."""
    counts: dict[str, int] = {}
    for t in sweep.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + (" (interrupted)" if sweep.interrupted else "")


def harness_line(sweep: SweepResult) -> str | None:
    """What the harness itself costs per trial (medians), or None when no trial recorded it."""
    over = [t.harness["overhead_s"] for t in sweep.trials if "overhead_s" in t.harness]
    start = [t.harness["startup_s"] for t in sweep.trials if "startup_s" in t.harness]
    imp = [t.metrics["import_s"] for t in sweep.trials if "import_s" in t.metrics]
    if not over:
        return None
    parts = [f"harness overhead per trial (parent wall - trial wall, median of {len(over)}): "
             f"{statistics.median(over) * 1e3:.0f} ms"]
    if start:
        parts.append(f"of which interpreter start {statistics.median(start) * 1e3:.0f} ms")
    if imp:
        parts.append(f"measured import phase (torch, transformers, model module) {statistics.median(imp):.2f} s, "
                     "inside the trial wall")
    return "; ".join(parts)


def artifact_links(t: TrialResult, artifacts: Artifacts | None = None) -> list[tuple[str, str, str]]:
    """(what, relative href, how to open) for each artifact of the trial; with ``artifacts``, only files it has."""
    links = []
    for key, what, hint in ARTIFACTS:
        name = t.artifacts.get(key)
        if not name:
            continue
        if artifacts is not None and not artifacts.has(t, key):
            continue
        links.append((what, f"trials/{t.trial_id}/{name}", hint))
    return links


def timeline_rows(t: TrialResult, artifacts: Artifacts | None = None) -> list[Sequence[float]]:
    """[t_s, anon_bytes, file_bytes] rows from loadprof.probes.memory.metrics.timeline, else from the trial's
    memory_timeline.json through ``artifacts`` (older reports kept the timeline only there)."""
    tl: Any = t.views.memory.timeline or None
    if tl is None and artifacts is not None and t.artifacts.get("memory_timeline"):
        tl = artifacts.memory_timeline(t)
    if isinstance(tl, Mapping):
        tl = tl.get("rows")
    return [r for r in (tl or []) if isinstance(r, Sequence) and len(r) >= 3]


# ------------------------------------------------------------------------------------------------ phases

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


def _open(nodes: Iterable[PhaseTiming]) -> set[str]:
    return {p.name for p in nodes if p.incomplete}


def _cell(d: Mapping[str, float], name: str, open_: set[str]) -> str:
    return num(d.get(name), ".3f") + (INCOMPLETE_MARK if name in open_ else "")


def phase_tables(sweep: SweepResult) -> list[Table]:
    """Top-level phases, then the children of ``load`` and of ``generate``: one row per trial, seconds."""
    tables = []
    top = [(t, dict(top_level_s(t)), _open(t.phases)) for t in sweep.trials if t.phases]
    if top:
        cols = _union(d for _, d, _ in top)
        columns = ("strategy", *cols, "wall s")
        rows = [(trial_name(t), *(_cell(d, c, o) for c in cols), num(t.wall_s, ".3f")) for t, d, o in top]
        notes = [INCOMPLETE_NOTE] if any(o for *_, o in top) else []
        desc = ("phases on the trial's clock; the gaps between them (wall s minus their sum) are the worker's "
                "own bookkeeping")
        tables.append(Table("top-level phases (s)", columns, rows, _numeric(columns, ("strategy",)), desc, notes))
    for parent, desc in (("load", "children of the load phase; other = load time no child covers"),
                         ("generate", "children of the generate phase summed over the measured calls; "
                                      "prefill includes preallocate; other = generate time no child covers")):
        table = _children_table(sweep, parent, desc)
        if table is not None:
            tables.append(table)
    return tables


def _children_table(sweep: SweepResult, parent: str, desc: str) -> Table | None:
    per = []
    for t in sweep.trials:
        parts = children_s(t, parent)
        if parts is not None:
            nodes = [p for p in t.phases if p.name == parent]
            per.append((t, dict(parts), _open(c for p in nodes for c in p.children), _open(nodes)))
    if not per:
        return None
    cols = [c for c in _union(d for _, d, _, _ in per) if c != "other"] + ["other"]
    columns = ("strategy", *cols, f"{parent} s")
    rows = [(trial_name(t), *(_cell(d, c, o) for c in cols),
             num(sum(p.duration_s for p in t.phases if p.name == parent), ".3f")
             + (INCOMPLETE_MARK if po else "")) for t, d, o, po in per]
    notes = [INCOMPLETE_NOTE] if any(o or po for *_, o, po in per) else []
    return Table(f"{parent} phases (s)", columns, rows, _numeric(columns, ("strategy",)), desc, notes)


def _union(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def figures_available() -> bool:
    """Whether report.html can draw figures: matplotlib is the optional ``plots`` extra."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a broken or blocked entry in sys.modules
        return False


# ---------------------------------------------------------------------------- findings and recommendations

def finding_who(f: Finding) -> str:
    """The strategies a finding is about: its label, else its trial ids."""
    return f.label or ", ".join(f.trial_ids)


def stake_text(f: Finding) -> str:
    """'4.02 s and 1.5 GiB at stake (basis)', or the basis alone where nothing is (an ignored kwarg)."""
    parts = [x for x in (f.stake_s is not None and f"{f.stake_s:.3g} s",
                         f.stake_bytes is not None and bytes_h(f.stake_bytes)) if x]
    head = " and ".join(parts) + " at stake" if parts else ""
    return f"{head} ({f.stake_basis})" if head and f.stake_basis else head or f.stake_basis


def verdict(sweep: SweepResult) -> str | None:
    """The top finding as one line: what every report says first."""
    if not sweep.findings:
        return None
    f = sweep.findings[0]
    kind = "mistake" if f.mistake else "observation"
    stake = " and ".join(x for x in (f.stake_s is not None and f"{f.stake_s:.3g} s",
                                     f.stake_bytes is not None and bytes_h(f.stake_bytes)) if x)
    return f"verdict ({kind}): {f.title}" + (f"; {stake} at stake" if stake else "") + f". Fix: {f.fix}"


def value_text(v: Any, unit: str) -> str:
    """A recommendation figure with its unit, formatted like ``loadprof recommend`` prints it."""
    if not isinstance(v, (int, float)):
        return "-" if v is None else f"{v} {unit}".strip()
    if unit == "bytes":
        return bytes_h(v)
    return {"s": f"{v:.3g} s", "ms": f"{v:.1f} ms", "tok/s": f"{v:.2f} tok/s"}.get(unit, f"{v:g} {unit}".strip())


def recommendations(sweep: SweepResult) -> tuple[Table | None, list[str]]:
    """Best configuration per objective under the memory budget, or (None, []) when the sweep has none."""
    rec = sweep.recommendations
    if not rec.objectives:
        return None, []
    columns = ("objective", "best", "figure", "settings", "runner-up", "tradeoffs")
    rows = [_recommendation_row(obj, o) for obj, o in rec.objectives.items()]
    return Table("recommendations", columns, rows, tuple(False for _ in columns)), _recommendation_notes(rec)


def _recommendation_row(obj: str, o: Recommendation) -> tuple[str, ...]:
    fig = o.figure
    if not o.label:
        return (obj, f"nothing to recommend: {o.reason or 'no candidate'}", "-", "-", "-", "-")
    ru = o.runner_up
    margin = f", margin {o.margin_pct:.1f}%" if o.margin_pct is not None else ""
    runner = f"{ru.label} ({value_text(ru.figure.value, fig.unit)}){margin}" if ru else "-"
    settings = ", ".join(f"{k}={v}" for k, v in (o.settings or {}).items() if v is not None)
    tradeoffs = [*o.tradeoffs] + ([o.reason] if o.reason else [])
    figure = f"{fig.name} = {value_text(fig.value, fig.unit)}"
    return (obj, o.label, figure, settings or "-", runner, "; ".join(tradeoffs) or "-")


def _recommendation_notes(rec: Recommendations) -> list[str]:
    notes = []
    if rec.memory_budget_bytes is not None:
        notes.append(f"memory budget {bytes_h(rec.memory_budget_bytes)}"
                     + (f" on {rec.peak_metric}" if rec.peak_metric else ""))
    if rec.excluded_over_budget:
        notes.append("over budget: " + ", ".join(rec.excluded_over_budget))
    for w in rec.max_new_tokens_warnings:
        notes.append(f"max_new_tokens larger than the answers: {w.label}: {w.advice}")
    return notes


# ------------------------------------------------------------------------------------------------ studies

def signed_pct(v: Any) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _fit_line(name: str, f: Mapping[str, Any] | None, slope: str, extra: str = "") -> str | None:
    if not f:
        return None
    r2 = ", ".join(f"{m} {v:.3f}" for m, v in f["r2_by_model"].items())
    return f"  {name}: {f['model']} in the cap (R^2 {f['r2']:.3f}; {r2}), {slope} per token of cap{extra}"


def curve_notes(study: Study) -> list[tuple[int, str]]:
    """(indent level, text) lines under a max_new_tokens curve (fits, growing sites, covering cap).

    Shared by every renderer so the console, Markdown and HTML say the same thing.
    """
    c = study.figures
    fits = c.get("fits", {})
    lines: list[tuple[int, str | None]] = [(0, x) for x in (
        _fit_line("generate call", fits.get("generate_call_s"),
                  f"{num(c.get('generate_call_ms_per_cap_token'), '.3f')} ms",
                  "" if c.get("generate_call_trend", "none") != "none" else
                  f"; trend: none claimed (R^2 below {c.get('trend_min_r2', 0.8)}: run-to-run noise)"),
        _fit_line("TTFT", fits.get("ttft_ms"), f"{num(c.get('ttft_ms_per_cap_token'), '.3f')} ms"),
        _fit_line("alloc at generate start", fits.get("generate_start_alloc_bytes"),
                  bytes_h(c.get("alloc_bytes_per_cap_token")), f"; growth: {c.get('growth')}"),
    )]
    for s in c.get("sites", [])[:5]:
        share = f", {100 * s['share']:.0f}% of the growth" if s.get("share") is not None else ""
        lines.append((1, f"{s['site']} {s['op']}: {bytes_h(s['bytes_per_cap_token'])} per token of cap{share}"))
    if c.get("observed_new_tokens"):
        save = [x for x in (c.get("saving_bytes") and bytes_h(c["saving_bytes"]),
                            c.get("saving_ms") and f"{c['saving_ms']:.1f} ms") if x]
        lines.append((0, f"observed new tokens: {', '.join(map(str, c['observed_new_tokens']))}; covering cap "
                         f"{c.get('covering_cap')}"
                         + (f" saves {' and '.join(save)} vs cap {c.get('largest_cap')}" if save else "")))
    return [(level, line.strip()) for level, line in lines if line]


def curve_table(study: Study) -> Table:
    c = study.figures
    columns = ("cap", "generate s", "TTFT ms", "ms/token p50", "alloc at generate start", "new tokens")
    rows = [(str(r["cap"]), num(r.get("generate_call_s"), ".3f"), num(r.get("ttft_ms"), ".1f"),
             num(r.get("per_token_ms_p50"), ".2f"), bytes_h(r.get("generate_start_alloc_bytes")),
             num(r.get("new_tokens"), ".0f")) for r in c.get("points", [])]
    notes = [text for _, text in curve_notes(study)]
    return Table("max_new_tokens curve", columns, rows, _numeric(columns), study.description, notes)


def batch_table(study: Study) -> Table:
    b = study.figures
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
    return Table("batch scaling", columns, rows, _numeric(columns), study.description, [note])


def quant_table(study: Study) -> Table:
    q = study.figures
    peak = "peak CUDA" if q.get("peak_source") == "cuda_allocated" else "peak RSS"
    columns = ("quant", "weights", "saved %", peak, "decode tok/s", "speedup", "TTFT change", "load s")
    rows = [(str(r["quantization"]), bytes_h(r.get("weights_bytes")), num(r.get("memory_saved_pct"), ".1f"),
             bytes_h(r.get("peak_bytes")), num(r.get("decode_tok_s"), ".1f"),
             "-" if r.get("decode_speedup") is None else f"{r['decode_speedup']:.2f}x",
             signed_pct(r.get("ttft_change_pct")), num(r.get("load_s"), ".2f")) for r in q.get("rows", [])]
    notes = ([] if q.get("baseline") is not None else
             ["no unquantized point in this series: savings and speedups are not computed"])
    return Table("quantization", columns, rows, _numeric(columns, ("quant",)), study.description, notes)


STUDY_TABLES = {"max_new_tokens": curve_table, "batch_size": batch_table, "quantization": quant_table}


def study_tables(studies: Iterable[Study]) -> dict[str, list[Table]]:
    """Per study kind, one table per series, in report order (kinds without a series are left out)."""
    out: dict[str, list[Table]] = {}
    for kind, table in STUDY_TABLES.items():
        tables = [table(s) for s in studies if s.kind == kind]
        if tables:
            out[kind] = tables
    return out
