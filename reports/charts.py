"""The per-trial figures of report.html: phase bars (load and generate) and memory timelines, as inline SVG.

Draws what loadprof.reports.breakdown computes: the load bar names your functions and library areas, shows
``warmup/forward`` with the bytes it read, folds tiny phases into one ``other``, and carries a tooltip
(``<title>``) on every bar segment. Memory timelines share one x-axis (seconds since the trial started) and
shade loadprof's own phases, which the workload peak line leaves out. Never opens a file.
"""

from __future__ import annotations

from html import escape as _xml_escape
from typing import Any, Sequence

from loadprof.reports.breakdown import (FORWARD, UNEXPLAINED, Segment, dwarfed, fold_small, forward_read_bytes,
                                        generate_segments, harness_spans, load_segments, workload_peak_bytes)
from loadprof.reports.plots import (LEAD, MiB, OTHER_COLOR, STYLE, WIDTH_IN, _byte_unit, _colors, _short, _svg,
                                    _wrap2, plt)
from loadprof.reports.sections import timeline_rows, trial_name
from loadprof.results.model import SweepResult, TrialResult
from loadprof.core.units import bytes_h

MAX_POINTS = 400
SPECIAL = {UNEXPLAINED: OTHER_COLOR, FORWARD: "#3d3d3d"}
HARNESS_SHADE = "#e8e8e8"


def _add_titles(svg: str, prefix: str, tips: dict[str, str]) -> str:
    """A ``<title>`` (the browser's tooltip) inside each ``<g id=...>`` matplotlib wrote for a gid'd artist."""
    for gid, tip in tips.items():
        svg = svg.replace(f'<g id="{prefix}-{gid}">', f'<g id="{prefix}-{gid}"><title>{_xml_escape(tip)}</title>', 1)
    return svg


def _segment_colors(order: Sequence[str]) -> dict[str, str]:
    named = [n for n in order if n not in SPECIAL and not n.startswith("other (")]
    colors = {k: v for k, v in _colors(named).items() if k != "other"}
    for n in order:
        colors.setdefault(n, SPECIAL.get(n, "#d9d9d9"))
    return colors


def phase_bars(sweep: SweepResult, parent: str) -> str | None:
    """Stacked horizontal bars, one per trial. ``load``: its steps, the uncovered time by what the samples saw,
    and warmup/forward; ``generate``: its children plus other. A share panel is added when one bar dwarfs another."""
    build = load_segments if parent == "load" else generate_segments
    raw = [(t, build(t)) for t in sweep.trials]
    raw = [(t, segs) for t, segs in raw if segs and sum(s.seconds for s in segs) > 0]
    if not raw:
        return None
    rows, order = fold_small([(trial_name(t), segs) for t, segs in raw])
    colors = _segment_colors(order)
    totals = [sum(s.seconds for s in segs) for _, segs in rows]
    shares = dwarfed(totals)
    name = f"phases-{parent}"
    tips: dict[str, str] = {}
    with plt.rc_context(STYLE):
        labels = [_wrap2(n) for n, _ in rows]
        per_row = 0.34 if any("\n" in lb for lb in labels) else 0.26
        fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(WIDTH_IN, 1.5 + per_row * len(rows)),
                                 layout="constrained", squeeze=False, width_ratios=(3, 2) if shares else None)
        for j, ax in enumerate(axes[0]):
            for i, ((label, segs), total) in enumerate(zip(rows, totals)):
                left = 0.0
                for s in segs:
                    width = s.seconds / total * 100 if j else s.seconds
                    bar = ax.barh([i], [width], left=[left], color=colors[s.name], height=0.7,
                                  label=None if j else s.name)
                    gid = f"b{j}-{i}-{order.index(s.name) if s.name in order else 0}"
                    bar.patches[0].set_gid(gid)
                    tips[gid] = (f"{label}: {s.name} {s.seconds:.3f} s ({100 * s.seconds / total:.0f}% of "
                                 f"{total:.2f} s)" + (f" — {s.tip}" if s.tip else ""))
                    left += width
                if not j:
                    read = forward_read_bytes(raw[i][0]) if parent == "load" else None
                    ax.text(total, i, f" {total:.2f} s" + (f", forward read {bytes_h(read)}" if read else ""),
                            va="center", fontsize=6.5)
            ax.set_yticks(range(len(rows)), labels if not j else [""] * len(rows), fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("% of each trial's bar" if j else "seconds")
            if not j:
                ax.set_xlim(0, max(totals) * 1.3)
        what = "load + first forward (warmup/forward)" if parent == "load" else "generate (measured calls)"
        axes[0][0].set_title(f"{what} per trial: what the time went to")
        if shares:
            axes[0][1].set_title(f"shares (largest bar is > {20:g}x the smallest)")
        handles, names = axes[0][0].get_legend_handles_labels()
        legend = dict(zip(names, handles))
        fig.legend([legend[n] for n in order if n in legend], [_short(n, 48) for n in order if n in legend],
                   loc="outside lower center", ncol=min(4, len(order)))
        svg = _svg(fig, name)
    return _add_titles(svg, name, tips)


def _downsample(rows: Sequence[Sequence[float]], n: int = MAX_POINTS) -> list[Sequence[float]]:
    """At most ~n rows, keeping each bucket's row of highest RSS so peaks survive."""
    if len(rows) <= n:
        return list(rows)
    step = len(rows) / n
    return [max(rows[int(i * step): int((i + 1) * step)] or [rows[-1]], key=lambda r: r[1] + r[2]) for i in range(n)]


def _phase_marks(t: TrialResult, lo: float, hi: float, span: float) -> list[tuple[float, str]]:
    """Workload top-level phase starts inside the timeline (see LEAD); starts closer than 7% of the axis ``span``
    share a label."""
    marks: list[tuple[float, str]] = []
    skip = {n for *_, n in harness_spans(t)}
    for p in sorted(t.phases, key=lambda p: p.start_s):
        if p.name in skip or not lo - LEAD * (hi - lo) <= p.start_s <= hi:
            continue
        if marks and p.start_s - marks[-1][0] < 0.07 * span:
            marks[-1] = (marks[-1][0], f"{marks[-1][1]}+{p.name}")
        else:
            marks.append((p.start_s, p.name))
    return marks


def timeline_end_s(trials: Sequence[TrialResult], rows_of: Any = None) -> float | None:
    """The latest timeline sample over ``trials``: the shared right edge of every memory timeline."""
    ends = [r[-1][0] for t in trials if (r := (rows_of(t) if rows_of else timeline_rows(t)))]
    return max(ends) if ends else None


def memory_timeline(t: TrialResult, rows: Sequence[Sequence[float]] | None = None,
                    x_max: float | None = None) -> str | None:
    """Anonymous and file-backed RSS (stacked) over seconds since the trial started (0 .. ``x_max``, shared by
    every trial), workload phases marked, loadprof's own phases shaded and left out of the peak line."""
    rows = _downsample(timeline_rows(t) if rows is None else rows)
    if len(rows) < 2:
        return None
    ts = [r[0] for r in rows]
    spans = harness_spans(t)
    peak = workload_peak_bytes(t, rows) or max(r[1] + r[2] for r in rows)
    scale, unit = _byte_unit(peak)
    top = peak / scale * 1.3
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH_IN / 2, 2.6 if spans else 2.3), layout="constrained")
        ax.stackplot(ts, [r[1] / scale for r in rows], [r[2] / scale for r in rows], labels=("anon", "file-backed"),
                     colors=("#4c72b0", "#dd8452"), alpha=0.85, linewidth=0)
        if spans:
            a, b = spans[0][0], spans[-1][1]
            clipped = any(r[1] + r[2] > peak * 1.3 for r in rows if a <= r[0] <= b)
            ax.axvspan(a, b, color=HARNESS_SHADE, alpha=0.8, zorder=3, linewidth=0,
                               label="loadprof's own: " + ", ".join(n for *_, n in spans)
                               + (" (clipped)" if clipped else "") + " - not the workload")
            mark = ax.text((a + b) / 2, 0.5, "loadprof", transform=ax.get_xaxis_transform(), ha="center",
                           va="center", rotation=90, fontsize=5.5, color="#444444", zorder=4, clip_on=True)
            mark.set_in_layout(False)
        ax.axhline(peak / scale, color="#b00020", linewidth=0.7, linestyle="--", zorder=5)
        ax.text(0.99, peak / scale, f"workload peak {bytes_h(peak)}", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=6, color="#b00020", zorder=5)
        x_hi = max(x_max or 0.0, ts[-1])
        for x, name in _phase_marks(t, ts[0], ts[-1], x_hi):
            ax.axvline(x, color="#333333", linewidth=0.6, linestyle=":")
            # phases that start close together share a mark: one name a line, never cut (the layout makes room)
            ax.text(x, 1.01, "\n".join(name.split("+")), transform=ax.get_xaxis_transform(), fontsize=5.5,
                    ha="left", va="bottom", linespacing=1.0)
        ax.set_xlim(0, x_hi * 1.04)
        ax.set_ylim(0, top)
        ax.set_xlabel("seconds since the trial started")
        ax.set_ylabel(f"RSS ({unit})")
        h, lb = ax.get_legend_handles_labels()
        shade = [i for i, x in enumerate(lb) if x.startswith("loadprof's own")]
        ax.legend([h[i] for i in range(len(h)) if i not in shade], [lb[i] for i in range(len(h)) if i not in shade],
                  loc="upper left", ncol=2)
        if shade:  # its long name goes below the panel
            fig.legend([h[shade[0]]], [lb[shade[0]]], loc="outside lower center", fontsize=6)
        return _svg(fig, f"mem-{t.trial_id}")


__all__ = ["Segment", "memory_timeline", "phase_bars", "timeline_end_s", "MiB"]
