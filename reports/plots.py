"""Small matplotlib figures for the HTML report, returned as inline SVG strings (text kept as text).

Each function returns None when the sweep has nothing to draw, so the report only shows what was measured.
The Agg backend is chosen before pyplot is imported: reports are written on headless machines.
Figures draw the data they are given (loadprof.reports.sections builds it); they never open a file.
"""

from __future__ import annotations

import io
import re
import textwrap
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from loadprof.reports.sections import children_s, timeline_rows, trial_name  # noqa: E402
from loadprof.results import Study, SweepResult, TrialResult  # noqa: E402

STYLE = {"svg.fonttype": "none", "font.size": 8, "font.family": ["DejaVu Sans", "sans-serif"],
         "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 9, "legend.fontsize": 7,
         "legend.frameon": False, "text.parse_math": False}  # labels are user text, never mathtext
WIDTH_IN = 8.0
MAX_POINTS = 400
#: a phase that starts up to this share of the timeline's span before its first sample still gets its line
LEAD = 0.1
OTHER_COLOR = "#bbbbbb"
MiB = 2**20


def _svg(fig: Any, name: str) -> str:
    """The figure as an <svg> element (no XML prolog or metadata) whose ids all carry ``name``.

    Several figures share one HTML page: matplotlib's ids (figure_1, clip paths, markers) would collide.
    """
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


def phase_bars(sweep: SweepResult, parent: str) -> str | None:
    """Stacked horizontal bars, one per trial: the children of ``parent`` (load or generate) plus other."""
    rows = [(trial_name(t), children_s(t, parent)) for t in sweep.trials]
    rows = [(n, p) for n, p in rows if p]
    if not rows:
        return None
    names: list[str] = []
    for _, parts in rows:
        names += [n for n, _ in parts if n not in names and n != "other"]
    names.append("other")
    colors = _colors(names)
    with plt.rc_context(STYLE):
        labels = [_wrap2(n) for n, _ in rows]
        per_row = 0.34 if any("\n" in lb for lb in labels) else 0.24
        fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.3 + per_row * len(rows)), layout="constrained")
        ys = range(len(rows))
        for name in names:
            vals = [dict(parts).get(name, 0.0) for _, parts in rows]
            lefts = [sum(dict(parts).get(n, 0.0) for n in names[: names.index(name)]) for _, parts in rows]
            ax.barh(ys, vals, left=lefts, color=colors[name], label=name, height=0.7)
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(f"{parent} phases per trial")
        fig.legend(loc="outside lower center", ncol=min(6, len(names)))
        return _svg(fig, f"phases-{parent}")


def _downsample(rows: Sequence[Sequence[float]], n: int = MAX_POINTS) -> list[Sequence[float]]:
    """At most ~n rows, keeping each bucket's row of highest RSS so peaks survive."""
    if len(rows) <= n:
        return list(rows)
    step = len(rows) / n
    return [max(rows[int(i * step): int((i + 1) * step)] or [rows[-1]], key=lambda r: r[1] + r[2]) for i in range(n)]


def _phase_marks(t: TrialResult, lo: float, hi: float) -> list[tuple[float, str]]:
    """Top-level phase starts inside the timeline (see LEAD); starts closer than 7% of the range share a label."""
    marks: list[tuple[float, str]] = []
    for p in sorted(t.phases, key=lambda p: p.start_s):
        if not lo - LEAD * (hi - lo) <= p.start_s <= hi:
            continue
        if marks and p.start_s - marks[-1][0] < 0.07 * (hi - lo):
            marks[-1] = (marks[-1][0], f"{marks[-1][1]}+{p.name}")
        else:
            marks.append((p.start_s, p.name))
    return marks


def memory_timeline(t: TrialResult, rows: Sequence[Sequence[float]] | None = None) -> str | None:
    """Anonymous and file-backed RSS (stacked) over the trial's clock, with a line at each top-level phase start.

    ``rows`` ([t_s, anon, file]) default to the timeline in report.json (``sections.timeline_rows``).
    """
    rows = _downsample(timeline_rows(t) if rows is None else rows)
    if len(rows) < 2:
        return None
    ts = [r[0] for r in rows]
    top = max(r[1] + r[2] for r in rows)
    scale, unit = _byte_unit(top)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH_IN / 2, 2.2), layout="constrained")
        ax.stackplot(ts, [r[1] / scale for r in rows], [r[2] / scale for r in rows], labels=("anon", "file-backed"),
                     colors=("#4c72b0", "#dd8452"), alpha=0.85, linewidth=0)
        for p in t.phases:
            if ts[0] - LEAD * (ts[-1] - ts[0]) <= p.start_s <= ts[-1]:
                ax.axvline(p.start_s, color="#333333", linewidth=0.6, linestyle=":")
        for x, name in _phase_marks(t, ts[0], ts[-1]):
            ax.text(x, 1.01, _short(name, 24), transform=ax.get_xaxis_transform(), fontsize=6, rotation=30,
                    ha="left", va="bottom")
        ax.set_ylim(0, top / scale * 1.3)
        ax.set_xlabel("trial clock (s)")
        ax.set_ylabel(f"RSS ({unit})")
        ax.legend(loc="upper left", ncol=2)
        return _svg(fig, f"mem-{t.trial_id}")


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
            alloc = [(x, p["generate_start_alloc_bytes"] / MiB) for x, p in zip(xs, pts)
                     if p.get("generate_start_alloc_bytes") is not None]
            gen = [(x, p["generate_call_s"]) for x, p in zip(xs, pts) if p.get("generate_call_s") is not None]
            for ax, xy in ((a1, alloc), (a2, gen)):
                if xy:
                    ax.plot(*zip(*xy), marker="o", markersize=3, label=label)
        for ax, title, ylabel in ((a1, "alloc at generate start", "MiB"), (a2, "generate call", "seconds")):
            _log2_axis(ax, caps)
            ax.set_title(title)
            ax.set_xlabel("max_new_tokens (cap)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        _series_legend(fig, a1, len(curves))
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
            tok = [(r["batch_size"], r["decode_tok_s"]) for r in rows if r.get("decode_tok_s") is not None]
            eff = [(r["batch_size"], r["efficiency_pct"]) for r in rows if r.get("efficiency_pct") is not None]
            for ax, xy in ((a1, tok), (a2, eff)):
                if xy:
                    ax.plot(*zip(*xy), marker="o", markersize=3, label=label)
        for ax, title, ylabel in ((a1, "decode throughput", "tok/s (all sequences)"),
                                  (a2, "efficiency = speedup / (batch / smallest)", "%")):
            _log2_axis(ax, sizes)
            ax.set_title(title)
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        a2.axhline(100, color="#888888", linewidth=0.6, linestyle=":")
        _series_legend(fig, a1, len(scalings))
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
            for ax, key, div in ((a1, "weights_bytes", scale), (a2, "decode_tok_s", 1.0)):
                vals = [(by.get(n) or {}).get(key) for n in quants]
                ax.bar(xs, [0 if v is None else v / div for v in vals], width=width * 0.95, label=label)
        for ax, title, ylabel in ((a1, "weights (+ quant state)", unit), (a2, "decode throughput", "tok/s")):
            ax.set_xticks(range(len(quants)), quants)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        _series_legend(fig, a1, len(comparisons))
        return _svg(fig, "study-quantization")


def study_plots(studies: Iterable[Study]) -> dict[str, str]:
    """Study kind -> SVG, for the kinds the sweep has."""
    studies = list(studies)
    out = {"max_new_tokens": max_new_tokens_plot([s for s in studies if s.kind == "max_new_tokens"]),
           "batch_size": batch_plot([s for s in studies if s.kind == "batch_size"]),
           "quantization": quant_plot([s for s in studies if s.kind == "quantization"])}
    return {k: v for k, v in out.items() if v}
