"""Console tables for the studies (loadprof.analysis.studies): the max_new_tokens curve, batch scaling, quantization.

Shaped like the user's own tables (parallel workers: speedup and efficiency; quantization summary: saved %,
speedup, TTFT change) so the numbers can be read side by side. Renders the dict only; never measures.
"""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadprof.units import bytes_h, num

BEST = "[bold green]*[/]"


def _signed_pct(v: Any) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _table(console: Console, kind: str, description: str, columns: tuple[str, ...]) -> Table:
    """Heading on its own line (a table title would wrap to the table's width), then an empty table."""
    console.print(f"[bold]{kind}[/]: {escape(description)}", highlight=False)
    table = Table()
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _fit_line(name: str, f: Mapping[str, Any] | None, slope: str, extra: str = "") -> str | None:
    if not f:
        return None
    r2 = ", ".join(f"{m} {v:.3f}" for m, v in f["r2_by_model"].items())
    return f"  {name}: {f['model']} in the cap (R^2 {f['r2']:.3f}; {r2}), {slope} per token of cap{extra}"


def render_curve(c: Mapping[str, Any], console: Console) -> None:
    table = _table(console, "max_new_tokens curve", c["description"],
                   ("cap", "generate s", "TTFT ms", "ms/token p50", "alloc at generate start", "new tokens"))
    for r in c["points"]:
        table.add_row(str(r["cap"]), num(r["generate_call_s"], ".3f"), num(r["ttft_ms"], ".1f"),
                      num(r["per_token_ms_p50"], ".2f"), bytes_h(r["generate_start_alloc_bytes"]),
                      num(r["new_tokens"], ".0f"))
    console.print(table)
    for level, line in curve_notes(c):
        console.print("  " * (level + 1) + line, markup=False, highlight=False)


def curve_notes(c: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(indent level, text) lines under a max_new_tokens curve (fits, growing sites, covering cap).

    Shared by every renderer so the console, Markdown and HTML say the same thing.
    """
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


def render_batch(b: Mapping[str, Any], console: Console) -> None:
    table = _table(console, "batch scaling", b["description"],
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


def render_quant(q: Mapping[str, Any], console: Console) -> None:
    peak = "peak CUDA" if q.get("peak_source") == "cuda_allocated" else "peak RSS"
    table = _table(console, "quantization", q["description"],
                   ("quant", "weights", "saved %", peak, "decode tok/s", "speedup", "TTFT change", "load s"))
    for r in q["rows"]:
        table.add_row(escape(str(r["quantization"])), bytes_h(r["weights_bytes"]), num(r["memory_saved_pct"], ".1f"),
                      bytes_h(r["peak_bytes"]), num(r["decode_tok_s"], ".1f"),
                      "-" if r["decode_speedup"] is None else f"{r['decode_speedup']:.2f}x",
                      _signed_pct(r["ttft_change_pct"]), num(r["load_s"], ".2f"))
    console.print(table)
    if q.get("baseline") is None:
        console.print("  no unquantized point in this series: savings and speedups are not computed",
                      markup=False, highlight=False)


def render_studies(studies: Mapping[str, Any], console: Console) -> None:
    """One table per series; kinds without a series print nothing."""
    for c in studies.get("max_new_tokens", []):
        render_curve(c, console)
    for b in studies.get("batch_size", []):
        render_batch(b, console)
    for q in studies.get("quantization", []):
        render_quant(q, console)
