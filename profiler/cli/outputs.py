"""``--format md|csv|json|jsonl`` for compare, recommend and diff: the same answer, for a PR or a script.

``table`` (the default) stays each command's rich console output; this module gives the others, built from
the one result model (a ``SweepResult``, a ``Recommendations``, the diff dict), so a format never computes
anything the console did not show.
"""

from __future__ import annotations

from typing import Any, Mapping

from loadprof.reports.formats import machine, markdown
from loadprof.results.model import Recommendations, SweepResult

DIFF_COLUMNS = ("strategy", "kind", "name", "group", "unit", "a", "b", "change", "noise", "change_pct", "n_a", "n_b",
                "verdict", "gated")


def pick_record(r: Any) -> dict[str, Any]:
    """One recommendation as a flat record: verdict, pick, figure with its spread, how it was decided."""
    e = r.estimate
    return {"model": r.model, "objective": r.objective, "verdict": r.verdict, "label": r.label,
            "figure": r.figure.name, "unit": r.figure.unit, "median": e.median if e else r.figure.value,
            "q1": e.q1 if e else None, "q3": e.q3 if e else None, "n": e.n if e else None, "rule": r.rule,
            "tied": list(r.tied), "runner_up": r.runner_up.label if r.runner_up else None,
            "margin_pct": r.margin_pct, "pooled": list(r.pooled), "reason": r.reason,
            "settings": dict(r.settings or {}), "tradeoffs": list(r.tradeoffs)}


def recommendations_output(recs: Recommendations, fmt: str, sweep: SweepResult | None = None) -> str:
    if fmt == "json":
        import json

        return json.dumps(recs.to_dict(), indent=1, default=str) + "\n"
    if fmt in ("csv", "jsonl"):
        return machine([pick_record(r) for r in recs.picks], fmt)
    from loadprof.reports.markdown import md_table
    from loadprof.reports.sections import recommendations

    table, notes = recommendations(sweep if sweep is not None else SweepResult("", "", "", "", recommendations=recs))
    if table is None:
        return "nothing to recommend\n"
    return "\n".join([*md_table(table), "", *[f"- {n}" for n in notes]]) + "\n"


def diff_output(d: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(d, indent=1, default=str) + "\n"
    rows = [{k: r.get(k) for k in DIFF_COLUMNS} for r in d["rows"]]
    if fmt in ("csv", "jsonl"):
        return machine(rows, fmt)
    head = (f"diff: {d['a']['name']} -> {d['b']['name']}: exit {d['exit_code']} ({d['exit_reason']})\n\n"
            + "".join(f"note: {n}\n\n" for n in d.get("notes", ())))
    shown = [r for r in d["rows"] if r["verdict"] != "same"]
    return head + markdown(DIFF_COLUMNS, ([r.get(k) for k in DIFF_COLUMNS] for r in shown)) + (
        f"\n{len(d['rows']) - len(shown)} comparison(s) within noise or under the floors; method: {d['method']}\n")


def compare_output(result: SweepResult, fmt: str) -> str:
    """The sweep's answer: md = report.md, json = report.json, csv = one row per trial, jsonl = one trial per line."""
    if fmt == "md":
        from loadprof.reports import markdown as md

        return md.render(result)
    if fmt == "json":
        import json

        return json.dumps(result.to_dict(), indent=1, default=str) + "\n"
    if fmt == "csv":
        from loadprof.reports import csv_report

        return csv_report.render(result)
    return machine([t.to_dict() for t in result.trials], "jsonl")
