"""Compare two sweeps phase by phase: what got slower, beyond run-to-run noise.

Pure analysis over two SweepResults (parent process: no torch). A change counts only when it exceeds the
largest of three floors: the noise band of the repeats (so a jittery phase does not cry wolf), ``threshold_pct``
of the old value (so tiny relative drifts pass), and an absolute minimum (so microsecond phases never flag).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from loadprof.results import SweepResult, TrialResult

#: phases whose children are compared one by one (plus their uncovered remainder as ``<phase>/other``)
DETAILED = ("load", "generate")
MIB = 2**20
#: metric -> (unit, lower is better, absolute floor as a function of min_abs_s)
METRICS: dict[str, tuple[str, bool, Any]] = {
    "ttft_ms": ("ms", True, lambda s: s * 1e3),
    "decode_tok_s": ("tok/s", False, lambda s: 0.0),
    "peak_rss_bytes": ("bytes", True, lambda s: MIB),
    "peak_cuda_allocated_bytes": ("bytes", True, lambda s: MIB),
}


def phase_values(t: TrialResult) -> dict[str, float]:
    """Durations by path; phases of the same name at one level (two generate calls, two resolves) are summed."""
    out: dict[str, float] = {}
    for p in t.phases:
        out[p.name] = out.get(p.name, 0.0) + p.duration_s
        if p.name in DETAILED and p.children:
            for c in p.children:
                key = f"{p.name}/{c.name}"
                out[key] = out.get(key, 0.0) + c.duration_s
            out[f"{p.name}/other"] = out.get(f"{p.name}/other", 0.0) + p.other_s
    return out


def spread(xs: Sequence[float]) -> float:
    """Run-to-run noise of one side: 3 x MAD from >= 3 repeats (robust to one outlier), max - min from 2, else 0."""
    if len(xs) >= 3:
        m = statistics.median(xs)
        return 3.0 * statistics.median([abs(x - m) for x in xs])
    return max(xs) - min(xs) if len(xs) == 2 else 0.0


def compare_values(a: Sequence[float], b: Sequence[float], lower_is_better: bool, threshold_pct: float,
                   min_abs: float) -> dict[str, Any]:
    """Medians, band and verdict for one quantity measured on both sides."""
    ma, mb = statistics.median(a), statistics.median(b)
    band = max(spread(a), spread(b))
    limit = max(band, threshold_pct / 100.0 * abs(ma), min_abs)
    change = mb - ma
    worse = change if lower_is_better else -change
    verdict = "regression" if worse > limit else "improvement" if -worse > limit else "same"
    return {"a": ma, "b": mb, "change": change, "change_pct": 100.0 * change / ma if ma else None,
            "band": band, "limit": limit, "n_a": len(a), "n_b": len(b), "verdict": verdict}


def _by_strategy(trials: Iterable[TrialResult]) -> dict[str, list[TrialResult]]:
    out: dict[str, list[TrialResult]] = {}
    for t in trials:
        out.setdefault(t.strategy_id, []).append(t)
    return out


def _label(ts: Sequence[TrialResult]) -> str:
    return ts[0].label or ts[0].strategy_id


def match(a: SweepResult, b: SweepResult) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    """Pairs (id_a, id_b, how) by strategy id, then by label when the label is unique on both sides; the rest."""
    ga, gb = _by_strategy(a.trials), _by_strategy(b.trials)
    pairs = [(sid, sid, "id") for sid in ga if sid in gb]
    rest_a = [sid for sid in ga if sid not in gb]
    rest_b = [sid for sid in gb if sid not in ga]
    la: dict[str, list[str]] = {}
    lb: dict[str, list[str]] = {}
    for sid in rest_a:
        la.setdefault(_label(ga[sid]), []).append(sid)
    for sid in rest_b:
        lb.setdefault(_label(gb[sid]), []).append(sid)
    for label, ids in la.items():
        if len(ids) == 1 and len(lb.get(label, ())) == 1:
            pairs.append((ids[0], lb[label][0], "label"))
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    unmatched = [{"side": side, "label": _label(g[sid]), "strategy_id": sid, "trial_ids": [t.trial_id for t in g[sid]]}
                 for side, g, rest, paired in (("a", ga, rest_a, paired_a), ("b", gb, rest_b, paired_b))
                 for sid in rest if sid not in paired]
    return pairs, unmatched


def _rows_for(ta: Sequence[TrialResult], tb: Sequence[TrialResult], threshold_pct: float,
              min_abs_s: float) -> list[dict[str, Any]]:
    oka, okb = [t for t in ta if t.ok], [t for t in tb if t.ok]
    if not oka or not okb:
        if oka == okb:  # both sides failed: nothing to compare, nothing changed
            return []
        status = ("ok" if oka else ta[0].status, "ok" if okb else tb[0].status)
        return [{"kind": "status", "name": "status", "unit": "", "a": status[0], "b": status[1], "change": None,
                 "change_pct": None, "band": None, "limit": None, "n_a": len(oka), "n_b": len(okb),
                 "verdict": "regression" if oka else "improvement"}]
    rows = []
    pa, pb = [phase_values(t) for t in oka], [phase_values(t) for t in okb]
    paths = list(dict.fromkeys([k for d in pa for k in d] + [k for d in pb for k in d]))
    for path in paths:
        xa, xb = [d[path] for d in pa if path in d], [d[path] for d in pb if path in d]
        if xa and xb:
            rows.append({"kind": "phase", "name": path, "unit": "s",
                         **compare_values(xa, xb, True, threshold_pct, min_abs_s)})
        else:
            v = statistics.median(xa or xb)
            rows.append({"kind": "phase", "name": path, "unit": "s", "a": v if xa else None, "b": v if xb else None,
                         "change": None, "change_pct": None, "band": None, "limit": None, "n_a": len(xa),
                         "n_b": len(xb), "verdict": "only in A" if xa else "only in B"})
    for key, (unit, lower, floor) in METRICS.items():
        xa = [v for t in oka if (v := t.metrics.get(key)) is not None]
        xb = [v for t in okb if (v := t.metrics.get(key)) is not None]
        if xa and xb:
            rows.append({"kind": "metric", "name": key, "unit": unit,
                         **compare_values(xa, xb, lower, threshold_pct, floor(min_abs_s))})
    return rows


def _severity(row: Mapping[str, Any]) -> float:
    """How far past its limit a change went (for ordering: worst first)."""
    if row.get("limit") and row.get("change") is not None:
        return abs(row["change"]) / row["limit"]
    return float("inf")


def diff(a: SweepResult, b: SweepResult, threshold_pct: float = 10.0, min_abs_s: float = 0.005) -> dict[str, Any]:
    """Phase and metric medians of every strategy in both runs, with a verdict per row.

    Returns ``{"a": {run_id, name}, "b": {...}, "threshold_pct", "min_abs_s", "matched": [...], "rows": [...],
    "summary": {"regressions": [rows], "improvements": [rows], "unmatched": [...]}}``.
    """
    pairs, unmatched = match(a, b)
    ga, gb = _by_strategy(a.trials), _by_strategy(b.trials)
    rows, matched = [], []
    for ida, idb, how in pairs:
        label = _label(gb[idb])
        matched.append({"label": label, "strategy_id_a": ida, "strategy_id_b": idb, "match": how})
        for r in _rows_for(ga[ida], gb[idb], threshold_pct, min_abs_s):
            rows.append({"strategy": label, "strategy_id_a": ida, "strategy_id_b": idb, "match": how, **r})
    regressions = sorted((r for r in rows if r["verdict"] == "regression"), key=lambda r: -_severity(r))
    improvements = sorted((r for r in rows if r["verdict"] == "improvement"), key=lambda r: -_severity(r))
    return {"a": {"run_id": a.run_id, "name": a.name}, "b": {"run_id": b.run_id, "name": b.name},
            "threshold_pct": threshold_pct, "min_abs_s": min_abs_s, "matched": matched, "rows": rows,
            "summary": {"regressions": regressions, "improvements": improvements, "unmatched": unmatched}}


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if unit == "bytes":
        return f"{v / MIB:.1f} MiB"
    if unit == "s":
        return f"{v * 1e3:.1f} ms" if abs(v) < 1 else f"{v:.3f} s"
    return f"{v:.2f} {unit}" if unit == "tok/s" else f"{v:.1f} {unit}"


def _load(folder: Path) -> SweepResult | None:
    path = Path(folder) / "report.json"
    return SweepResult.from_dict(json.loads(path.read_text())) if path.exists() else None


def cli_diff(a_dir: Path, b_dir: Path, threshold_pct: float, console: Any) -> int:
    """``loadprof diff A B``: 1 when anything regressed beyond noise and threshold, 0 otherwise, 2 without reports."""
    from rich.markup import escape
    from rich.table import Table

    runs = {}
    for name, folder in (("A", a_dir), ("B", b_dir)):
        runs[name] = _load(folder)
        if runs[name] is None:
            console.print(f"[bold red]error:[/] {escape(str(Path(folder) / 'report.json'))} not found "
                          "(run `loadprof compare ... --out DIR` first)")
            return 2
    d = diff(runs["A"], runs["B"], threshold_pct)
    s = d["summary"]
    console.print(f"[bold]diff[/] A={escape(str(a_dir))} ({escape(d['a']['name'])})  "
                  f"B={escape(str(b_dir))} ({escape(d['b']['name'])}): {len(d['matched'])} strategies matched, "
                  f"change must exceed max(noise band, {threshold_pct:g}%, {d['min_abs_s'] * 1e3:g} ms)")
    shown = s["regressions"] + s["improvements"]
    if shown:
        table = Table()
        for col in ("strategy", "phase/metric", "A", "B", "change", "band", "verdict"):
            table.add_column(col, justify="right" if col in ("A", "B", "change", "band") else "left")
        for r in shown:
            u = r["unit"]
            change = ("-" if r["change"] is None else f"{'+' if r['change'] >= 0 else '-'}{_fmt(abs(r['change']), u)}"
                      + ("" if r["change_pct"] is None else f" ({1 + r['change_pct'] / 100:.1f}x)"
                         if r["change_pct"] >= 100 else f" ({r['change_pct']:+.0f}%)"))
            colour = "red" if r["verdict"] == "regression" else "green"
            table.add_row(escape(r["strategy"]), r["name"], _fmt(r["a"], u), _fmt(r["b"], u), change,
                          _fmt(r["band"], u), f"[{colour}]{r['verdict']}[/]")
        console.print(table)
    same = sum(1 for r in d["rows"] if r["verdict"] == "same")
    console.print(f"{len(s['regressions'])} regression(s), {len(s['improvements'])} improvement(s), "
                  f"{same} comparison(s) within noise/threshold")
    for u in s["unmatched"]:
        console.print(f"[yellow]unmatched[/]: only in {u['side'].upper()}: {escape(u['label'])} ({u['strategy_id']})")
    return 1 if s["regressions"] else 0
