"""The report's sections as plain data (tables of formatted strings, lines, links), shared by every renderer.

Built here once so the console, report.md, report.html and report.csv never disagree with each other, and so
no renderer has to import another one to reuse a table. Reads the result model only: never measures, never
imports torch, never touches the disk (trial files arrive through a ``loadprof.reports.base.Artifacts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from loadprof.core import figures
from loadprof.core.payloads import MemoryPayload
from loadprof.reports.base import Artifacts
from loadprof.results.model import (IN_PROCESS, Finding, PhaseTiming, Recommendation, Recommendations, SweepResult,
                              TrialResult)
from loadprof.core import units

#: the per-trial table; "load cost s" is the real load cost (load + validation + first forward, and a shared lazy
#: import where the trial had one): what a user pays and what recommendations compare, not the load phase alone
SUMMARY_COLUMNS = ("#", "model", "strategy", "status", "import s", "load cost s", "warmup s", "peak RSS", "TTFT ms",
                   "decode tok/s", "wall s", "reason")
GENERATE_ORDER = ("prepare", "preallocate", "prefill", "decode", "finish")
#: artifact key -> (what it is, where to open it); the order is the order of the links
ARTIFACTS = (("speedscope", "py-spy profile", "open at speedscope.app"),
             ("memory_timeline", "memory timeline", "JSON: t_s, anon and file-backed RSS"),
             ("cuda_snapshot", "CUDA memory snapshot", "open at pytorch.org/memory_viz"),
             ("stdout", "stdout", ""), ("stderr", "stderr", ""), ("py_spy_log", "py-spy log", ""))
SEVERITIES = ("high", "medium", "low")
INCOMPLETE_MARK = "\u2020"
#: the phase tables' total column: "generate s" alone would read as one call (the studies' "generate call s")
PARENT_TOTAL = {"generate": "generate total s"}
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
    """The model as the user named it (synthetic shape and stored dtype, or path / hub id), plus the dtype the
    trial loaded it as when the strategy asked for one: ``tiny (bfloat16, loaded as float32)``."""
    m = trial.strategy.model
    stored = m.synthetic.dtype if m.synthetic is not None else None
    loaded = trial.strategy.load.dtype
    loaded = loaded if loaded and loaded != "auto" and loaded != stored else None
    dtypes = ", ".join(x for x in (stored, loaded and f"loaded as {loaded}") if x)
    return f"{m.label} ({dtypes})" if dtypes else m.label


def wall_s(t: TrialResult) -> float | None:
    """The trial's wall; for a trial killed at its timeout, the parent's wall until the kill (the worker's own
    clock stops at its last event, which can be long before it was killed)."""
    parent = t.harness.get("parent_wall_s")
    if t.status == "timeout" and isinstance(parent, (int, float)):
        return max(parent, t.wall_s or 0.0)
    return t.wall_s


def wall_cell(t: TrialResult, fmt: str = ".2f") -> str:
    """``wall s`` cell: a timeout trial's wall says it was killed (``>= 600.00 (killed)``)."""
    w = wall_s(t)
    return f"{units.num(w, fmt)} (killed)" if t.status == "timeout" and w is not None else units.num(w, fmt)


def trial_name(t: TrialResult) -> str:
    """Label and repeat: what every renderer calls a trial."""
    return f"{t.label} r{t.repeat_index}"


def summary(sweep: SweepResult, reason_chars: int = 200) -> Table:
    rows = []
    for i, t in enumerate(sweep.trials, 1):
        m = t.metrics
        rows.append((str(i), model_label(t), trial_name(t), t.status, units.num(figures.IMPORT_S.read(m)),
                     units.num(figures.LOAD_COST_S.read(m)), units.num(m.get("warmup_s")),
                     units.bytes_h(figures.PEAK_RSS_BYTES.read(m)), units.num(figures.TTFT_MS.read(m), ".1f"),
                     units.num(figures.DECODE_TOK_S.read(m), ".1f"), wall_cell(t),
                     (t.reason or "")[:reason_chars]))
    return Table(f"loadprof: {sweep.name} ({len(sweep.trials)} trials)", SUMMARY_COLUMNS, rows,
                 _numeric(SUMMARY_COLUMNS, ("model", "strategy", "status", "reason")))


def status_counts(sweep: SweepResult) -> str:
    """e.g. ``2 ok, 1 crashed``, plus ``(interrupted)`` when the sweep did not finish."""
    counts: dict[str, int] = {}
    for t in sweep.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + (" (interrupted)" if sweep.interrupted else "")


def harness_line(sweep: SweepResult) -> str | None:
    """What the harness itself costs per trial (``sweep.circumstances.harness``, medians), or None when no trial
    recorded it; trials forked from a pre-imported zygote say their import was paid once per zygote; blocks measured
    in the user's own process (loadprof.profile()) are said not to be isolated."""
    h = sweep.circumstances.harness
    inproc = [t for t in sweep.trials if t.harness.get("isolation") == IN_PROCESS]  # loadprof.profile() blocks
    lead = [f"{len(inproc)} of {len(sweep.trials)} trials {inproc[0].harness.get('isolation_note') or IN_PROCESS}"] \
        if inproc else []
    if h is None:
        return "; ".join(lead) or None
    ms = lambda v: units.ms(v * 1e3)  # noqa: E731
    parts = [*lead, f"harness overhead per trial (parent wall - trial wall, median of {h.trials}): "
             f"{ms(h.overhead_s)}"]
    if h.startup_s is not None:
        parts.append(f"of which interpreter start {ms(h.startup_s)}")
    if h.own_import_s is not None:
        parts.append(f"loadprof's own import phase (torch, transformers' top level, its probes; what the load "
                     f"imports lazily is the load's) {units.seconds(h.own_import_s)}, inside the trial wall")
    if h.forked:
        parts.append(f"{h.forked} trials forked from {len(h.zygote_import_s)} pre-imported zygote(s) (isolation: "
                     f"forkserver; their import phase is pre-imported, near zero"
                     + (f", fork to trial start {ms(h.fork_start_s)}" if h.fork_start_s is not None else "")
                     + f"), the zygotes' own import {' + '.join(units.seconds(s) for s in h.zygote_import_s)}, "
                     "paid once each")
    if h.shared:
        parts.append(f"{h.shared} of them shared their load's lazy import with their repeat round (isolation: auto): "
                     f"{len(h.round_imports_s)} import(s) of "
                     + " + ".join(units.seconds(s) for s in h.round_imports_s)
                     + ", each timed once in a fresh sub-zygote and counted in its round's real load costs")
    return "; ".join(parts)


def busy_line(sweep: SweepResult) -> str | None:
    """"busy machine: other processes used 0.9 cores on average during 3 of 8 trials (worst: <label> 1.4 cores,
    steal 0%); timings may be inflated — rerun on an idle machine", or None when no trial was busy."""
    b = sweep.circumstances.busy
    if b is None:
        return None
    w = b.worst
    load = f", load average {w.loadavg_1m_start:.1f} on {w.cpu_count} cores" if w.load_over_cores else ""
    return (f"busy machine: other processes used {b.mean_others_cores:.1f} cores on average during {len(b.busy)} "
            f"of {b.measured} trials (worst: {w.label} {w.others_cpu_cores:.1f} cores, steal "
            f"{units.pct(w.steal_share)}{load}); timings may be inflated — rerun on an idle machine")


def concurrency_line(sweep: SweepResult) -> str | None:
    """"trials ran 4 at a time: their timings were taken beside each other" (``--jobs``, Ray), or None when
    every trial ran alone."""
    c = sweep.circumstances.concurrency
    if c is None:
        return None
    who = "trials" if c.trials == c.of else f"{c.trials} of {c.of} trials"
    return f"{who} ran {c.at_once} at a time: their timings were taken beside each other"


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
    """[t_s, anon_bytes, file_bytes] rows from the memory probe's payload (its thinned timeline), else from the
    trial's memory_timeline.json through ``artifacts`` (older reports kept the timeline only there)."""
    memory = t.payload(MemoryPayload)
    tl: Any = memory.timeline.rows if memory is not None and memory.timeline.rows else None
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
    return units.num(d.get(name), ".3f") + (INCOMPLETE_MARK if name in open_ else "")


def phase_tables(sweep: SweepResult) -> list[Table]:
    """Top-level phases, then the children of ``load`` and of ``generate``: one row per trial, seconds."""
    tables = []
    top = [(t, dict(top_level_s(t)), _open(t.phases)) for t in sweep.trials if t.phases]
    if top:
        cols = _union(d for _, d, _ in top)
        columns = ("strategy", *cols, "wall s")
        rows = [(trial_name(t), *(_cell(d, c, o) for c in cols), wall_cell(t, ".3f")) for t, d, o in top]
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
        if parent == "load" and (bounds := load_bounds_table(sweep)) is not None:
            tables.append(bounds)
    return tables


BOUND_STEPS = ("weights", "read", "place", "convert", "assign")


def load_bounds_table(sweep: SweepResult) -> Table | None:
    """Each trial's load against the machine: method, bytes, GB/s of each data step and of the whole real load,
    and that rate's share of the read bound (loadprof.analysis.derive.load_bounds)."""
    ts = [t for t in sweep.trials if t.ok and t.metrics.get("load_read_bytes")]
    if not ts:
        return None
    steps = [s for s in BOUND_STEPS if any(s in (t.metrics.get("load_gb_s_by_step") or {}) for t in ts)]
    columns = ("strategy", "method", "workers", "read", "placed", *(f"{s} GB/s" for s in steps),
               figures.LOAD_GB_S.label, "read bound", figures.LOAD_BOUND_FRACTION.label)
    rows = []
    for t in ts:
        m = t.metrics
        rate = m.get("load_gb_s_by_step") or {}
        bound = (f"{m['load_bound']} {units.gb_s(m['load_bound_gb_s'])}" if m.get("load_bound_gb_s")
                 else units.MISSING)
        rows.append((trial_name(t), str(m.get("load_method") or t.strategy.load.method),
                     str(m.get("load_workers") or units.MISSING), units.bytes_h(m.get("load_read_bytes")),
                     units.bytes_h(m.get("load_placed_bytes")), *(units.num(rate.get(s)) for s in steps),
                     units.num(figures.LOAD_GB_S.read(m)), bound, units.pct(figures.LOAD_BOUND_FRACTION.read(m))))
    desc = ("the load against the machine: GB/s of each data step of load, and bytes read / real load cost "
            "(load + validation + first forward) against the read bound measured before the trial (storage "
            "sequential read when cold, page-cache read when warm)")
    return Table("load against the machine's bounds", columns, rows, _numeric(columns, ("strategy", "method",
                                                                                     "read bound")), desc)


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
    columns = ("strategy", *cols, PARENT_TOTAL.get(parent, f"{parent} s"))
    rows = [(trial_name(t), *(_cell(d, c, o) for c in cols),
             units.num(sum(p.duration_s for p in t.phases if p.name == parent), ".3f")
             + (INCOMPLETE_MARK if po else "")) for t, d, o, po in per]
    notes = [INCOMPLETE_NOTE] if any(o or po for *_, o, po in per) else []
    return Table(f"{parent} phases (s)", columns, rows, _numeric(columns, ("strategy",)), desc, notes)


def _union(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def figures_available() -> bool:
    """Whether report.html can draw figures: matplotlib is a dependency, but an incomplete install may lack it."""
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
    parts = [x for x in (f.stake_s is not None and units.seconds(f.stake_s),
                         f.stake_bytes is not None and units.bytes_h(f.stake_bytes)) if x]
    head = " and ".join(parts) + " at stake" if parts else ""
    return f"{head} ({f.stake_basis})" if head and f.stake_basis else head or f.stake_basis


def verdict(sweep: SweepResult) -> str | None:
    """The top finding as one line: what every report says first."""
    if not sweep.findings:
        return None
    f = sweep.findings[0]
    kind = "mistake" if f.mistake else "observation"
    stake = " and ".join(x for x in (f.stake_s is not None and units.seconds(f.stake_s),
                                     f.stake_bytes is not None and units.bytes_h(f.stake_bytes)) if x)
    return f"verdict ({kind}): {f.title}" + (f"; {stake} at stake" if stake else "") + f". Fix: {f.fix}"


def recommendations(sweep: SweepResult) -> tuple[Table | None, list[str]]:
    """What to use per model and objective, with its spread and how it was decided; (None, []) when none."""
    rec = sweep.recommendations
    if not rec.picks:
        return None, []
    many = len(rec.models) > 1
    columns = (*(("model",) if many else ()), "objective", "verdict", "configuration", "figure", "decided by",
               "runner-up / tied", "settings", "tradeoffs")
    rows = [(*((o.model,) if many else ()), *_recommendation_row(o)) for o in rec.picks]
    return (Table("recommendations", columns, rows, tuple(False for _ in columns)),
            _recommendation_notes(rec, sweep.trials))


def _recommendation_row(o: Recommendation) -> tuple[str, ...]:
    fig = o.figure
    if o.verdict == "none" or (o.label is None and not o.candidates):
        return (o.objective, "none", "-", "-", o.reason or "no candidate", "-", "-", "-")
    if o.label is None:
        lead = "; ".join(f"{c.label} {units.estimate(c.estimate, fig.unit)}" for c in o.candidates[:3])
        return (o.objective, "no pick", "-", f"{fig.name}: {lead}", o.rule, "-", "-", "-")
    ru = o.runner_up
    margin = f", margin {units.percent(o.margin_pct)}" if o.margin_pct is not None else ""
    runner = ("tied: " + ", ".join(o.tied) if o.tied else
              f"{ru.label} ({units.value(ru.figure.value, fig.unit)}){margin}" if ru else "-")
    settings = ", ".join(f"{k}={v}" for k, v in (o.settings or {}).items() if v is not None)
    tradeoffs = [*o.tradeoffs] + ([o.reason] if o.reason else [])
    shown = units.estimate(o.estimate, fig.unit) if o.estimate else units.value(fig.value, fig.unit)
    return (o.objective, o.verdict, o.label, f"{fig.name} = {shown}", o.rule or "-",
            runner, settings or "-", "; ".join(tradeoffs) or "-")


def _recommendation_notes(rec: Recommendations, trials: Iterable[TrialResult] = ()) -> list[str]:
    notes = [f"decision rule: {rec.picks[0].method}"] if rec.picks and rec.picks[0].method else []
    pooled = dict.fromkeys(n for r in rec.picks for n in r.notes[:len(r.pooled)])
    notes += [f"pooled for an objective they cannot affect: {n}" for n in pooled]
    notes += list(dict.fromkeys(n for r in rec.picks for n in r.notes[len(r.pooled):]))
    if rec.memory_budget_bytes is not None:
        notes.append(f"memory budget {units.bytes_h(rec.memory_budget_bytes)}"
                     + (f" on {rec.peak_metric}" if rec.peak_metric else ""))
    if rec.excluded_over_budget:
        notes.append("over budget: " + ", ".join(rec.excluded_over_budget))
    return notes + cap_warning_lines(rec, trials)


def cap_warning_lines(rec: Recommendations, trials: Iterable[TrialResult] = ()) -> list[str]:
    """One "max_new_tokens larger than the answers" line per series: warnings whose strategies differ only in
    max_new_tokens (found through ``trials``; else warnings with the same model and answer length) share a line."""
    by_id = {t.trial_id: t for t in trials}
    groups: dict[str, list[Any]] = {}
    for w in rec.max_new_tokens_warnings:
        t = next((by_id[i] for i in w.trial_ids if i in by_id), None)
        if t is not None:
            d = t.strategy.to_dict()
            d["generate"] = {k: v for k, v in d["generate"].items() if k != "max_new_tokens"}
            d.pop("label", None)
            key = repr(d)
        else:
            key = f"generated {w.generated}"
        groups.setdefault(key, []).append(w)
    lines = []
    for ws in groups.values():
        if len(ws) == 1:
            lines.append(f"max_new_tokens larger than the answers: {ws[0].label}: {ws[0].advice}")
            continue
        caps = sorted({w.cap for w in ws if w.cap is not None})
        shares = [w.share for w in ws if isinstance(w.share, (int, float))]
        used = f" (answers used {100 * min(shares):.0f}-{100 * max(shares):.0f}% of them)" if shares else ""
        gen = max((w.generated for w in ws if w.generated is not None), default=None)
        lines.append(f"max_new_tokens larger than the answers: {', '.join(w.label for w in ws)}: answers stopped at "
                     f"{gen} tokens under caps {', '.join(map(str, caps))}{used}; set max_new_tokens near {gen}")
    return lines
