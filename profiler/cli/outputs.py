"""The renderers of the commands' answers: ``table`` (rich, on the console) and ``--format md|csv|json|jsonl``.

Each command (``compare`` in cli.main, ``recommend`` in cli.recommend, ``diff`` in cli.diff) parses, asks analysis
and hands the typed result here (a ``SweepResult``, a ``RecommendResult``, the diff), so a format never computes
anything another one did not show; every value is written by ``loadprof.core.units``, every user string escaped
before it reaches rich's markup.
"""

from __future__ import annotations

from typing import Any, Sequence

from loadprof.analysis import diff as D
from loadprof.analysis.recommend import RecommendResult
from loadprof.analysis.stats import COMPARE_METHOD, MIN_REPEATS
from loadprof.core import units
from loadprof.core.diffs import DiffResult, DiffRow
from loadprof.reports.formats import machine, markdown
from loadprof.results.model import Recommendation, Recommendations, SweepResult

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


def diff_output(d: DiffResult, fmt: str) -> str:
    """The diff as json (``DiffResult.to_dict``), one record per row (csv, jsonl: ``DIFF_COLUMNS``) or md."""
    if fmt == "json":
        import json

        return json.dumps(d.to_dict(), indent=1, default=str) + "\n"
    if fmt in ("csv", "jsonl"):
        return machine([{k: getattr(r, k) for k in DIFF_COLUMNS} for r in d.rows], fmt)
    head = (f"diff: {d.a.name} -> {d.b.name}: exit {d.exit_code} ({d.exit_reason})\n\n"
            + "".join(f"note: {n}\n\n" for n in d.notes))
    shown = [r for r in d.rows if r.verdict != D.SAME]
    return head + markdown(DIFF_COLUMNS, ([getattr(r, k) for k in DIFF_COLUMNS] for r in shown)) + (
        f"\n{len(d.rows) - len(shown)} comparison(s) within noise or under the floors; method: {d.method}\n")


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


# ---------------------------------------------------------------- recommend on the console

def recommendation_lines(r: Recommendation) -> list[str]:
    """A recommendation as plain lines: the verdict first, then runner-up, ties, pooled knobs, trade-offs."""
    f = r.figure
    if r.verdict == "none" or (r.label is None and not r.candidates):
        return [f"{r.objective}: nothing to recommend: {r.reason or 'no candidate'}"]
    if r.label is None:
        lead = "; ".join(f"{c.label} {units.estimate(c.estimate, f.unit)}" for c in r.candidates[:4])
        lines = [f"{r.objective}: no pick: {r.rule}", f"ranking by median ({f.name}): {lead}"]
    else:
        lines = [f"{r.objective}: {r.label}  {f.name} = {units.estimate(r.estimate, f.unit)}  [{r.verdict}: {r.rule}]",
                 "settings: " + ", ".join(f"{k}={v}" for k, v in (r.settings or {}).items() if v is not None)]
        if r.tied:
            lines.append("tied with (within the noise): " + ", ".join(r.tied))
            lines += _tie_lines(r)
        elif r.runner_up:
            margin = f", margin {units.percent(r.margin_pct)}" if r.margin_pct is not None else ""
            lines.append(f"runner-up: {r.runner_up.label} ({units.value(r.runner_up.figure.value, f.unit)}){margin}")
    if r.pooled:
        lines.append(f"pooled (cannot affect {r.objective}): " + "; ".join(r.notes[:len(r.pooled)]))
    lines += [f"note: {n}" for n in r.notes[len(r.pooled):]]
    return lines + [f"- {t}" for t in r.tradeoffs]


def _tie_lines(r: Recommendation) -> list[str]:
    """Each tied configuration against the pick: its median, the margin, and both medians' 95% CIs (which
    overlap: that is why nothing is picked between them)."""
    f, pick = r.figure, r.estimate
    out = []
    for c in r.candidates:
        e = c.estimate
        if c.label not in r.tied or e is None or pick is None or not pick.median:
            continue
        ci = (f", 95% CI {units.value(e.lo, f.unit)}..{units.value(e.hi, f.unit)}"
              if e.lo is not None and e.hi is not None else "")
        out.append(f"  {c.label}: {units.estimate(e, f.unit)}{ci}, "
                   f"{units.percent(100 * (e.median - pick.median) / pick.median)} from the pick")
    if out and pick is not None and pick.lo is not None and pick.hi is not None:
        out.insert(0, f"  the pick's 95% CI: {units.value(pick.lo, f.unit)}..{units.value(pick.hi, f.unit)}")
    return out


def _coverage_table(cov: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    pc = cov.percentiles
    t = Table(title=f"output lengths: n={cov.n}, p50 {pc['p50']}, p90 {pc['p90']}, p99 {pc['p99']}, max {pc['max']}")
    for c in ("scenario", "n-prompt", "percentile", "tokens at percentile", "n-predict (max_new_tokens)",
              "coverage", "half the cap", "use case"):
        t.add_column(c)
    for row in cov.rows:
        half = f"{row.lower_cap} ({row.lower_cap_coverage_pct:.1f}%)" if row.lower_cap else "-"
        t.add_row(escape(row.scenario), str(row.prompt_tokens or "-"), f"p{row.percentile}",
                  str(row.percentile_tokens), str(row.cap), f"{row.coverage_pct:.1f}%", half, escape(row.use_case))
    return t


def recommend_console(result: RecommendResult, con: Any) -> None:
    """``loadprof recommend``'s table format: per model, one block per objective, then the rule, what the budget
    excluded, the caps the answers did not need and, with --lengths, the coverage table."""
    from rich.markup import escape

    recs = result.recommendations
    budget = (f", memory budget {units.bytes_h(result.budget_bytes)} on {recs.peak_metric}"
              if result.budget_bytes is not None else "")
    con.print(f"[bold]recommendations[/] for {escape(result.name)} ({escape(result.path)}){escape(budget)}")
    for model in recs.models:
        if len(recs.models) > 1:
            con.print(f"\n[bold underline]model {escape(model)}[/] (models are never compared with each other)")
        for obj in result.objectives:
            r = recs.get(obj, model)
            for i, line in enumerate(recommendation_lines(r) if r is not None else ()):
                con.print(("  " if i else "\n") + line, markup=False, highlight=False)
    con.print(f"\ndecision rule: {COMPARE_METHOD}", markup=False, highlight=False)
    if recs.excluded_over_budget:
        con.print("\n[yellow]over budget[/]: " + escape(", ".join(recs.excluded_over_budget)))
    if recs.max_new_tokens_warnings:
        con.print("\n[yellow]max_new_tokens larger than the answers[/]:")
        for w in recs.max_new_tokens_warnings:
            con.print(f"  - {w.label}: {w.advice}", markup=False)
        con.print("  a cap from real answer lengths: --lengths FILE (token counts or texts)")
    if result.coverage is not None:
        con.print(_coverage_table(result.coverage))
        con.print(f"recommended max_new_tokens: {result.coverage.recommended_max_new_tokens} (p90 rounded up to a "
                  "power of two)")


# ---------------------------------------------------------------- diff on the console

COLOURS = {D.REGRESSION: "red", D.IMPROVEMENT: "green", D.UNDECIDED: "yellow"}


def _diff_table(title: str, rows: Sequence[DiffRow]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("strategy", "figure", "group", "A", "B", "change (± noise)", "%", "n A/B", "gate"):
        table.add_column(col, justify="right" if col in ("A", "B", "change (± noise)", "%", "n A/B") else "left")
    for r in rows:
        colour = COLOURS.get(r.verdict, "white")
        gate = f"[{colour}]gated[/]" if r.gated else "not gated"
        change = units.change(r.change, r.unit, r.noise)
        table.add_row(escape(r.strategy), escape(r.name), r.group, escape(units.value(r.a, r.unit)),
                      escape(units.value(r.b, r.unit)), f"[{colour}]{escape(change)}[/]",
                      units.ratio(r.change_pct, signed=True), f"{r.n_a}/{r.n_b}", gate)
    return table


def _diff_header(d: DiffResult, a_dir: str, b_dir: str, console: Any) -> None:
    from rich.markup import escape

    console.print(f"[bold]diff[/] A={escape(a_dir)} ({escape(d.a.name)})  B={escape(b_dir)} "
                  f"({escape(d.b.name)}): {len(d.matched)} strategies matched; gating on "
                  f"{', '.join(d.fail_on)} (loadprof's own phases never gate)")
    console.print(f"a change counts when the repeats tell A and B apart and it exceeds max({d.threshold_pct:g}% "
                  f"of A, {units.seconds(d.min_abs_s)} / 1 MiB)")
    console.print(f"[dim]method: {escape(d.method)}[/]")
    for note in d.notes:
        console.print(f"[bold yellow]note:[/] {escape(note)}")


def _nothing_comparable(d: DiffResult, console: Any) -> None:
    from rich.markup import escape

    why = ("no strategy matched between the two sweeps (matched by strategy id, then by a label unique on "
           "both sides)" if not d.matched else "the matched strategies failed on both sides: no figure to compare")
    console.print(f"[bold yellow]nothing comparable:[/] {why}")
    for name, side in (("A", d.a), ("B", d.b)):
        held = side.labels
        console.print(f"  {name} holds {len(held)}: " + (escape(", ".join(held)) if held else "no trials"))


def diff_console(d: DiffResult, a_dir: str, b_dir: str, console: Any) -> None:
    """The diff on the console: regressions, improvements, within-noise count, undecided rows, the exit code."""
    from rich.markup import escape

    _diff_header(d, a_dir, b_dir, console)
    if d.exit_code == D.EXIT_NOTHING_COMPARABLE:
        _nothing_comparable(d, console)
    for title, rows in (("regressions", d.regressions), ("improvements", d.improvements)):
        if rows:
            console.print(_diff_table(f"{title} ({len(rows)})", rows))
    console.print(f"{len(d.regressions)} regression(s), {len(d.improvements)} improvement(s), "
                  f"{d.same} comparison(s) within noise or under the floors")
    shown = [r for r in d.undecided if r.beyond_floor]
    if shown:
        console.print(_diff_table(f"undecided: fewer than {MIN_REPEATS} repeats on a side ({len(shown)} "
                                  "beyond the floors, raw change)", shown))
    if len(d.undecided) > len(shown):
        console.print(f"{len(d.undecided) - len(shown)} more undecided comparison(s) under the floors")
    if any(r.gated for r in d.undecided):
        console.print(f"[yellow]{escape(D.RERUN_HINT)}[/]")
    for u in d.unmatched:
        console.print(f"[yellow]unmatched[/]: only in {u.side.upper()}: {escape(u.label)} ({escape(u.strategy_id)})")
    colour = "green" if d.exit_code == D.EXIT_OK else "red" if d.exit_code == D.EXIT_REGRESSION else "yellow"
    console.print(f"[{colour}]exit {d.exit_code}[/]: {escape(d.exit_reason)}")
