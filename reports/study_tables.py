"""The studies as tables (loadprof.analysis.studies): the max_new_tokens curve, batch scaling, quantization.

Built once as plain ``Table`` data for every renderer (report.md, report.html, the console), shaped like the
user's own tables (parallel workers: speedup and efficiency; quantization summary: saved %, speedup, TTFT
change) and llama-bench's pp/tg columns. A figure from repeats is printed as median ± half its IQR with the
repeat count in the ``n`` column; a trend only in the words analysis gave it (``Study.notes``: what its fit
allows). Never measures, never calls analysis.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from loadprof.core import figures
from loadprof.reports.sections import Table
from loadprof.results.model import Study
from loadprof.core.units import bytes_h, num, signed_pct

SPREAD_NOTE = "a \u00b1 b: median \u00b1 half the IQR over the n repeats of that point"
PP_TG_NOTE = ("pp = prompt processing (batch x prompt tokens / prefill), tg = token generation (decode tok/s over "
              "all sequences), as llama-bench's columns")


def _numeric(columns: Sequence[str], left: Iterable[str] = ()) -> tuple[bool, ...]:
    skip = set(left)
    return tuple(c not in skip for c in columns)


def pm(row: Mapping[str, Any], key: str, fmt: Callable[[float], str]) -> str:
    """The row's figure, with ``± half IQR`` where it has repeats that differ."""
    v = row.get(key)
    if v is None:
        return "-"
    e = (row.get("estimates") or {}).get(key)
    if e and (e.get("n") or 0) >= 2 and e["q3"] > e["q1"]:
        return f"{fmt(v)} \u00b1 {fmt((e['q3'] - e['q1']) / 2)}"
    return fmt(v)


def _f(spec: str) -> Callable[[float], str]:
    return lambda v: num(v, spec)


def _n(row: Mapping[str, Any]) -> str:
    return str(row.get("repeats") or len(row.get("trial_ids") or ()) or "-")


# ---------------------------------------------------------------- max_new_tokens

def curve_table(study: Study) -> Table:
    c = study.figures
    columns = ("cap", "n", "generate call s", "TTFT ms", "ms/token p50", "alloc at generate start", "new tokens")
    rows = [(str(r["cap"]), _n(r), pm(r, figures.GENERATE_CALL_S.key, _f(".3f")),
             pm(r, figures.TTFT_MS.key, _f(".1f")),
             pm(r, "per_token_ms_p50", _f(".2f")), pm(r, "generate_start_alloc_bytes", bytes_h),
             num(r.get("new_tokens"), ".0f")) for r in c.get("points", [])]
    notes = [*study.notes] + ([f"trends: {c['trend_method']}; {SPREAD_NOTE}"] if c.get("trend_method") else [])
    return Table("max_new_tokens curve", columns, rows, _numeric(columns), study.description, notes)


# ---------------------------------------------------------------- batch, quantization

def batch_table(study: Study) -> Table:
    b = study.figures
    columns = ("batch", "n", "pp tok/s", "tg (decode) tok/s", "speedup", "efficiency", "KV per seq", "KV total",
               "TTFT ms")
    rows = []
    for r in b.get("rows", []):
        marks = [m for m, k in (("best eff", "best_efficiency"), ("best tput", "best_throughput")) if r.get(k)]
        rows.append((f"{r['batch_size']}" + (f" ({', '.join(marks)})" if marks else ""), _n(r),
                     pm(r, figures.PREFILL_TOK_S.key, _f(".1f")), pm(r, figures.DECODE_TOK_S.key, _f(".1f")),
                     "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
                     "-" if r.get("efficiency_pct") is None else f"{r['efficiency_pct']:.1f}%",
                     bytes_h(r.get("kv_bytes_per_seq")), bytes_h(r.get("kv_bytes_total")),
                     pm(r, figures.TTFT_MS.key, _f(".1f"))))
    notes = [f"efficiency = speedup / (batch / {b.get('baseline_batch_size')}) on the medians; best efficiency: "
             f"batch {b.get('best_efficiency_batch_size')}, best throughput: batch {b.get('best_throughput_batch_size')}",
             *study.notes, f"{PP_TG_NOTE}; {SPREAD_NOTE}"]
    return Table("batch scaling", columns, rows, _numeric(columns), study.description, [n for n in notes if n])


def quant_table(study: Study) -> Table:
    q = study.figures
    peak = "peak CUDA" if q.get("peak_source") == "cuda_allocated" else "peak RSS"
    columns = ("quant", "n", "weights", "saved %", peak, "decode tok/s", "speedup", "TTFT change", "load s")
    rows = [(str(r["quantization"]), _n(r), pm(r, "weights_bytes", bytes_h), num(r.get("memory_saved_pct"), ".1f"),
             pm(r, "peak_bytes", bytes_h), pm(r, figures.DECODE_TOK_S.key, _f(".1f")),
             "-" if r.get("decode_speedup") is None else f"{r['decode_speedup']:.2f}x",
             signed_pct(r.get("ttft_change_pct")), pm(r, figures.LOAD_S.key, _f(".2f"))) for r in q.get("rows", [])]
    notes = ([] if q.get("baseline") is not None else
             ["no unquantized point in this series: savings and speedups are not computed"])
    notes.append(f"saved %, speedup and TTFT change compare medians; {SPREAD_NOTE}")
    return Table("quantization", columns, rows, _numeric(columns, ("quant",)), study.description, notes)


STUDY_TABLES = {"max_new_tokens": curve_table, "batch_size": batch_table, "quantization": quant_table}


def study_tables(studies: Iterable[Study]) -> dict[str, list[Table]]:
    """Per study kind, one table per series, in report order (kinds without a series are left out)."""
    studies = list(studies)
    out: dict[str, list[Table]] = {}
    for kind, table in STUDY_TABLES.items():
        tables = [table(s) for s in studies if s.kind == kind]
        if tables:
            out[kind] = tables
    return out


# ---------------------------------------------------------------- console

def render_table(t: Table, console: Console) -> None:
    """Heading on its own line (a table title would wrap to the table's width), the table, then its notes."""
    console.print(f"[bold]{escape(t.title)}[/]: {escape(t.description)}", highlight=False)
    table = RichTable()
    for i, col in enumerate(t.columns):
        table.add_column(escape(col), justify="left" if i == 0 else "right", no_wrap=True)
    for row in t.rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    for note in t.notes:
        console.print(f"  {note}", markup=False, highlight=False)


def render_studies(studies: Iterable[Study], console: Console) -> None:
    """One table per series, in report order; kinds without a series print nothing."""
    for tables in study_tables(studies).values():
        for t in tables:
            render_table(t, console)
