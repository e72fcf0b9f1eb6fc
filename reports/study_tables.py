"""Console tables for the studies (loadprof.analysis.studies): the max_new_tokens curve, batch scaling, quantization.

Shaped like the user's own tables (parallel workers: speedup and efficiency; quantization summary: saved %,
speedup, TTFT change) so the numbers can be read side by side. Renders the dict only; never measures.
The notes under a curve come from loadprof.reports.sections, so the file reports say the same.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadprof.reports.sections import curve_notes, signed_pct
from loadprof.results import Study
from loadprof.units import bytes_h, num

BEST = "[bold green]*[/]"


def _table(console: Console, kind: str, description: str, columns: tuple[str, ...]) -> Table:
    """Heading on its own line (a table title would wrap to the table's width), then an empty table."""
    console.print(f"[bold]{kind}[/]: {escape(description)}", highlight=False)
    table = Table()
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def render_curve(study: Study, console: Console) -> None:
    c = study.figures
    table = _table(console, "max_new_tokens curve", study.description,
                   ("cap", "generate s", "TTFT ms", "ms/token p50", "alloc at generate start", "new tokens"))
    for r in c["points"]:
        table.add_row(str(r["cap"]), num(r["generate_call_s"], ".3f"), num(r["ttft_ms"], ".1f"),
                      num(r["per_token_ms_p50"], ".2f"), bytes_h(r["generate_start_alloc_bytes"]),
                      num(r["new_tokens"], ".0f"))
    console.print(table)
    for level, line in curve_notes(study):
        console.print("  " * (level + 1) + line, markup=False, highlight=False)


def render_batch(study: Study, console: Console) -> None:
    b = study.figures
    table = _table(console, "batch scaling", study.description,
                   ("batch", "decode tok/s", "speedup", "efficiency", "KV per seq", "KV total", "TTFT ms"))
    for r in b["rows"]:
        marks = ((f" {BEST}eff" if r["best_efficiency"] else "")
                 + (f" {BEST}tput" if r["best_throughput"] else ""))
        table.add_row(f"{r['batch_size']}{marks}", num(r["decode_tok_s"], ".1f"),
                      "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      "-" if r["efficiency_pct"] is None else f"{r['efficiency_pct']:.1f}%",
                      bytes_h(r["kv_bytes_per_seq"]), bytes_h(r["kv_bytes_total"]), num(r["ttft_ms"], ".1f"))
    console.print(table)
    console.print(f"  efficiency = speedup / (batch / {b['baseline_batch_size']}); best efficiency: batch "
                  f"{b['best_efficiency_batch_size']}, best throughput: batch {b['best_throughput_batch_size']}",
                  markup=False, highlight=False)


def render_quant(study: Study, console: Console) -> None:
    q = study.figures
    peak = "peak CUDA" if q.get("peak_source") == "cuda_allocated" else "peak RSS"
    table = _table(console, "quantization", study.description,
                   ("quant", "weights", "saved %", peak, "decode tok/s", "speedup", "TTFT change", "load s"))
    for r in q["rows"]:
        table.add_row(escape(str(r["quantization"])), bytes_h(r["weights_bytes"]), num(r["memory_saved_pct"], ".1f"),
                      bytes_h(r["peak_bytes"]), num(r["decode_tok_s"], ".1f"),
                      "-" if r["decode_speedup"] is None else f"{r['decode_speedup']:.2f}x",
                      signed_pct(r["ttft_change_pct"]), num(r["load_s"], ".2f"))
    console.print(table)
    if q.get("baseline") is None:
        console.print("  no unquantized point in this series: savings and speedups are not computed",
                      markup=False, highlight=False)


RENDERERS = {"max_new_tokens": render_curve, "batch_size": render_batch, "quantization": render_quant}


def render_studies(studies: Iterable[Study], console: Console) -> None:
    """One table per series, in report order; kinds without a series print nothing."""
    studies = list(studies)
    for kind, render in RENDERERS.items():
        for s in studies:
            if s.kind == kind:
                render(s, console)
