"""Small matplotlib figures for the HTML report, returned as inline SVG strings (text kept as text).

Each function returns None when the sweep has nothing to draw, so the report only shows what was measured.
The Agg backend is chosen before pyplot is imported: reports are written on headless machines.
Figures draw the data they are given (loadprof.reports.sections builds it); they never open a file. The per-trial
figures (phase bars, memory timelines) are in loadprof.reports.charts, which uses this module's style and helpers.
"""

from __future__ import annotations

import io
import re
import textwrap
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
from matplotlib.ticker import FixedFormatter, FuncFormatter  # noqa: E402

from loadprof.core import figures  # noqa: E402
from loadprof.core.errors import safe_text  # noqa: E402
from loadprof.results.model import Study  # noqa: E402

STYLE = {"svg.fonttype": "none", "font.size": 8, "font.family": ["DejaVu Sans", "sans-serif"],
         "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 9, "legend.fontsize": 7,
         "legend.frameon": False, "text.parse_math": False}  # labels are user text, never mathtext
WIDTH_IN = 8.0
#: a phase that starts up to this share of the timeline's span before its first sample still gets its line
LEAD = 0.1
OTHER_COLOR = "#bbbbbb"
MiB = 2**20
#: the caption of every study figure: what the points and the bars are
ERROR_CAPTION = "points/bars: median of the repeats; error bars: IQR (q1..q3) of the repeats (none with one repeat)"


def _svg(fig: Any, name: str) -> str:
    """The figure as an <svg> element (no XML prolog or metadata) whose ids all carry ``name``.

    Several figures share one HTML page: matplotlib's ids (figure_1, clip paths, markers) would collide.
    """
    _safe_texts(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"loadprof-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)


def _safe_texts(fig: Any) -> None:
    """Every text of the figure (titles, legends, annotations, fixed tick labels) made encodable: a user label with
    a lone surrogate would fail matplotlib's font renderer, and with it the whole HTML report."""
    for text in fig.findobj(matplotlib.text.Text):
        text.set_text(safe_text(text.get_text()))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if isinstance(fmt, FixedFormatter):
                fmt.seq = [safe_text(str(s)) for s in fmt.seq]
            elif isinstance(fmt, FuncFormatter):  # what set_ticks(..., labels) makes
                fmt.func = lambda x, pos=None, f=fmt.func: safe_text(str(f(x, pos)))


def _byte_unit(max_bytes: float) -> tuple[float, str]:
    """MiB, or GiB once the largest value passes 4 GiB, so axis labels stay short."""
    return (2**30, "GiB") if max_bytes >= 4 * 2**30 else (MiB, "MiB")


def _short(s: str, n: int = 44) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _wrap2(s: str, width: int = 36) -> str:
    """At most two lines; a longer label loses its middle, since strategies differ at the end of the label."""
    lines = textwrap.wrap(s, width) or [""]
    if len(lines) <= 2:
        return "\n".join(lines)
    return f"{lines[0]}\n\u2026{s[-(width - 1):]}"


def _colors(names: Sequence[str]) -> dict[str, str]:
    """Distinct colours (tab10 without its grey, then tab20's light shades); grey is kept for ``other``."""
    t10, t20 = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    palette = [t10(i) for i in range(10) if i != 7] + [t20(i) for i in range(1, 20, 2) if i != 15]
    named = [n for n in names if n != "other"]
    out = {n: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, n in enumerate(named)}
    return {**out, "other": OTHER_COLOR} if "other" in names else out


def _series_labels(series: Sequence[Study]) -> list[str]:
    """Name each series by the fixed settings that differ between them (else its description)."""
    fixed = [s.fixed for s in series]
    keys = [k for k in dict.fromkeys(k for f in fixed for k in f) if len({str(f.get(k)) for f in fixed}) > 1]
    if len(series) > 1 and keys:
        return [_short(", ".join(f"{k.split('.')[-1]}={f.get(k)}" for k in keys), 60) for f in fixed]
    return [_short(s.description, 60) for s in series]


def _series_legend(fig: Any, ax: Any, n: int) -> None:
    """Below the panels, and only with several series (one series is named by its table heading)."""
    if n > 1:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(n, 3))


def _log2_axis(ax: Any, xs: Iterable[float]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks, [str(int(x)) if float(x).is_integer() else f"{x:g}" for x in ticks])
    ax.minorticks_off()


def _iqr(rows: Sequence[Any], key: str, scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """Medians and their IQR as matplotlib's asymmetric yerr ([below], [above]); 0 where a point has no repeats."""
    ys, below, above = [], [], []
    for r in rows:
        y = r[key] / scale
        e = (r.get("estimates") or {}).get(key)
        ys.append(y)
        below.append(max(y - e["q1"] / scale, 0.0) if e else 0.0)
        above.append(max(e["q3"] / scale - y, 0.0) if e else 0.0)
    return ys, [below, above]


def _errorbars(ax: Any, xs: Sequence[float], rows: Sequence[Any], key: str, label: str, scale: float = 1.0) -> None:
    """The median line with its IQR as error bars, over the rows that have ``key``."""
    pairs = [(x, r) for x, r in zip(xs, rows) if r.get(key) is not None]
    if pairs:
        ys, yerr = _iqr([r for _, r in pairs], key, scale)
        ax.errorbar([x for x, _ in pairs], ys, yerr=yerr, marker="o", markersize=3, capsize=2, label=label)


def _caption(fig: Any) -> None:
    fig.suptitle(ERROR_CAPTION, fontsize=7, color="#555555")


def max_new_tokens_plot(curves: Sequence[Study]) -> str | None:
    """Allocation at generate start and generate-call time vs the cap (log2 x), one line per series."""
    curves = [c for c in curves if c.figures.get("points")]
    if not curves:
        return None
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH_IN, 2.6), layout="constrained")
        caps: list[float] = []
        for c, label in zip(curves, _series_labels(curves)):
            pts = c.figures["points"]
            xs = [p["cap"] for p in pts]
            caps += xs
            _errorbars(a1, xs, pts, "generate_start_alloc_bytes", label, MiB)
            _errorbars(a2, xs, pts, figures.GENERATE_CALL_S.key, label)
        for ax, title, ylabel in ((a1, "alloc at generate start", "MiB"), (a2, "generate call", "seconds")):
            _log2_axis(ax, caps)
            ax.set_title(title)
            ax.set_xlabel("max_new_tokens (cap)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        _series_legend(fig, a1, len(curves))
        _caption(fig)
        return _svg(fig, "study-max-new-tokens")


def batch_plot(scalings: Sequence[Study]) -> str | None:
    """Decode throughput and efficiency vs batch size, one line per series."""
    scalings = [b for b in scalings if b.figures.get("rows")]
    if not scalings:
        return None
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH_IN, 2.6), layout="constrained")
        sizes: list[float] = []
        for b, label in zip(scalings, _series_labels(scalings)):
            rows = b.figures["rows"]
            sizes += [r["batch_size"] for r in rows]
            _errorbars(a1, [r["batch_size"] for r in rows], rows, figures.DECODE_TOK_S.key, label)
            eff = [(r["batch_size"], r["efficiency_pct"]) for r in rows if r.get("efficiency_pct") is not None]
            if eff:
                a2.plot(*zip(*eff), marker="o", markersize=3, label=label)
        for ax, title, ylabel in ((a1, "decode throughput", "tok/s (all sequences)"),
                                  (a2, "efficiency = speedup / (batch / smallest)", "%")):
            _log2_axis(ax, sizes)
            ax.set_title(title)
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        a2.axhline(100, color="#888888", linewidth=0.6, linestyle=":")
        _series_legend(fig, a1, len(scalings))
        _caption(fig)
        return _svg(fig, "study-batch")


def quant_plot(comparisons: Sequence[Study]) -> str | None:
    """Weights and decode tok/s per quantization, grouped bars when there are several series."""
    comparisons = [q for q in comparisons if q.figures.get("rows")]
    if not comparisons:
        return None
    quants = list(dict.fromkeys(str(r["quantization"]) for q in comparisons for r in q.figures["rows"]))
    width = 0.8 / len(comparisons)
    scale, unit = _byte_unit(max((r.get("weights_bytes") or 0) for q in comparisons for r in q.figures["rows"]))
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH_IN, 2.6), layout="constrained")
        for i, (q, label) in enumerate(zip(comparisons, _series_labels(comparisons))):
            by = {str(r["quantization"]): r for r in q.figures["rows"]}
            xs = [j + (i - (len(comparisons) - 1) / 2) * width for j in range(len(quants))]
            for ax, key, div in ((a1, "weights_bytes", scale), (a2, figures.DECODE_TOK_S.key, 1.0)):
                rows = [by.get(n) or {} for n in quants]
                ys, yerr = _iqr([r if r.get(key) is not None else {key: 0.0} for r in rows], key, div)
                ax.bar(xs, ys, yerr=yerr, capsize=2, width=width * 0.95, label=label)
        for ax, title, ylabel in ((a1, "weights (+ quant state)", unit), (a2, "decode throughput", "tok/s")):
            ax.set_xticks(range(len(quants)), quants)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        _series_legend(fig, a1, len(comparisons))
        _caption(fig)
        return _svg(fig, "study-quantization")


def study_plots(studies: Iterable[Study]) -> dict[str, str]:
    """Study kind -> SVG, for the kinds the sweep has."""
    studies = list(studies)
    out = {"max_new_tokens": max_new_tokens_plot([s for s in studies if s.kind == "max_new_tokens"]),
           "batch_size": batch_plot([s for s in studies if s.kind == "batch_size"]),
           "quantization": quant_plot([s for s in studies if s.kind == "quantization"])}
    return {k: v for k, v in out.items() if v}


# ------------------------------------------------------------------- per configuration (appended: Pareto)

from html import escape as _xml_escape  # noqa: E402

from loadprof.core.conclusions import ConfigSummary  # noqa: E402
from loadprof.reports.configurations import compared, estimate_cell  # noqa: E402

#: (x objective, y objective, panel title); the memory figure is the peak each model was compared on
PARETO_PANELS = ((figures.LOAD, figures.MEMORY, "real load cost vs peak memory (both: lower is better)"),
                 (figures.TTFT, figures.THROUGHPUT, "TTFT (lower is better) vs decode tok/s (higher is better)"))
PARETO_AXES = {figures.LOAD.name: "real load cost (s)", figures.TTFT.name: "TTFT (ms)",
               figures.THROUGHPUT.name: "decode tok/s"}


def _pareto_key(c: ConfigSummary, objective: figures.Objective) -> str:
    return compared(c, objective).key


def _pareto_tooltip(c: ConfigSummary) -> str:
    """What hovering a point says: the configuration, its model, its standing and the compared figures."""
    unit = lambda k: figures.BY_KEY[k].unit if k in figures.BY_KEY else "bytes"  # noqa: E731
    figs = [f"{k}: {estimate_cell(c.figures.get(k), unit(k))}" for k in c.pareto_on]
    return f"{c.label} ({c.model}), {'Pareto front' if c.pareto else 'dominated'}; " + "; ".join(figs)


def _pareto_point(ax: Any, c: ConfigSummary, xk: str, yk: str, scale: dict[str, float], color: str,
                  gid: str) -> bool:
    """One configuration at its medians with IQR error bars; filled when on the front. False when not drawn."""
    ex, ey = c.figures.get(xk), c.figures.get(yk)
    if ex is None or ey is None or xk not in c.pareto_on or yk not in c.pareto_on:
        return False
    sx, sy = scale.get(xk, 1.0), scale.get(yk, 1.0)
    cont = ax.errorbar([ex.median / sx], [ey.median / sy],
                       xerr=[[(ex.median - ex.q1) / sx], [(ex.q3 - ex.median) / sx]],
                       yerr=[[(ey.median - ey.q1) / sy], [(ey.q3 - ey.median) / sy]], fmt="o", color=color,
                       markerfacecolor=color if c.pareto else "white", markersize=6 if c.pareto else 5,
                       elinewidth=0.8, capsize=2)
    cont[0].set_gid(gid)
    return True


def pareto_plot(configs: Sequence[ConfigSummary]) -> str | None:
    """Load cost vs peak memory and TTFT vs decode tok/s per compared configuration: medians with IQR error bars,
    the Pareto front filled, dominated points hollow, one colour per model; hovering a point names it."""
    pts = [c for c in configs if c.pareto is not None]
    if not pts:
        return None
    models = list(dict.fromkeys(c.model for c in pts))
    colors = _colors(models)
    mem = [c.median(_pareto_key(c, figures.MEMORY)) or 0.0 for c in pts]
    mem_scale, mem_unit = _byte_unit(max(mem))
    scale = {f.key: mem_scale for f in figures.CATALOGUE if f.objective is figures.MEMORY}
    tips: dict[str, str] = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.0), layout="constrained")
        for j, (ax, (xf, yf, title)) in enumerate(zip(axes, PARETO_PANELS)):
            for i, c in enumerate(pts):
                gid = f"pt{j}-{i}"
                if _pareto_point(ax, c, _pareto_key(c, xf), _pareto_key(c, yf), scale, colors[c.model], gid):
                    tips[gid] = _pareto_tooltip(c)
            ax.set_title(title)
            ax.set_xlabel(PARETO_AXES.get(xf.name, xf.name))
            ax.set_ylabel(PARETO_AXES.get(yf.name, f"peak memory ({mem_unit})"))
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[m], label=_short(m, 40)) for m in models]
        handles += [plt.Line2D([], [], marker="o", linestyle="", color="#333333", label="Pareto front (medians)"),
                    plt.Line2D([], [], marker="o", linestyle="", color="#333333", markerfacecolor="white",
                               label="dominated; bars: IQR")]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
        svg = _svg(fig, "pareto")
    for gid, tip in tips.items():
        svg = svg.replace(f'<g id="pareto-{gid}">', f'<g id="pareto-{gid}"><title>{_xml_escape(tip)}</title>', 1)
    return svg
