"""``loadprof diff A B``: read both reports, run ``analysis.diff``, show the verdict, exit with the gate's code.

The CLI side of the diff (it reads files and renders; ``loadprof.analysis.diff`` does neither): regressions
first, then improvements, the within-noise count, then the rows the repeats could not decide. Every user string
(labels, folder names, phase names) is escaped before it reaches rich's markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from loadprof.analysis import diff as D
from loadprof.analysis.stats import MIN_REPEATS
from loadprof.core.errors import LoadprofError
from loadprof.results.model import SweepResult

REPORT = "report.json"


def load_report(folder: Path) -> SweepResult:
    """The SweepResult in ``folder``; a missing or unreadable report is bad input (exit 2)."""
    path = Path(folder) / REPORT
    if not path.is_file():
        raise LoadprofError(f"{path} not found (run `loadprof compare ... --out DIR` first)",
                            exit_code=D.EXIT_BAD_INPUT)
    try:
        return SweepResult.from_dict(json.loads(path.read_text()))
    except LoadprofError as e:
        raise LoadprofError(f"{path}: {e.message}", exit_code=D.EXIT_BAD_INPUT) from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LoadprofError(f"{path} is unreadable: {type(e).__name__}: {e}", exit_code=D.EXIT_BAD_INPUT) from e


def cli_diff(a_dir: Path, b_dir: Path, threshold_pct: float, console: Any, fail_on: str | None = None,
             as_json: bool = False, fmt: str = "table") -> int:
    """Run the diff and return its exit code (``analysis.diff.EXIT_CODES``); errors are one line, code 2."""
    from rich.markup import escape

    fmt = "json" if as_json else fmt
    as_json = fmt == "json"
    try:
        groups = D.parse_fail_on(fail_on)
        a, b = load_report(a_dir), load_report(b_dir)
    except LoadprofError as e:
        if as_json:
            console.out(json.dumps({"exit_code": D.EXIT_BAD_INPUT, "error": e.message}), highlight=False)
        else:
            console.print(f"[bold red]error:[/] {escape(e.message)}")
        return D.EXIT_BAD_INPUT
    d = D.diff(a, b, threshold_pct, fail_on=groups)
    if fmt == "table":
        render(d, str(a_dir), str(b_dir), console)
    else:
        from loadprof.cli.outputs import diff_output

        console.out(diff_output(d, fmt).rstrip("\n"), highlight=False)
    return int(d["exit_code"])


# ---------------------------------------------------------------- formatting

def _scale(v: float, unit: str) -> tuple[float, str, int]:
    """Factor, unit and decimals to print ``v`` (and a ± beside it) in."""
    if unit == "bytes":
        return 1 / D.MIB, "MiB", 1
    if unit == "s":
        return (1e3, "ms", 1) if abs(v) < 0.9995 else (1.0, "s", 2)
    return 1.0, unit, 2 if unit == "tok/s" else 1


def fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    f, u, n = _scale(v, unit)
    return f"{v * f:.{n}f} {u}"


def fmt_change(r: Mapping[str, Any]) -> str:
    """The difference of medians with its noise band: ``+1.52 s (±0.08)``; raw (no ±) without repeats."""
    c = r.get("change")
    if c is None:
        return "-"
    f, u, n = _scale(c, r["unit"])
    band = f" (±{r['noise'] * f:.{n}f})" if r.get("noise") is not None else ""
    return f"{'+' if c >= 0 else '-'}{abs(c) * f:.{n}f} {u}{band}"


def fmt_pct(r: Mapping[str, Any]) -> str:
    p = r.get("change_pct")
    if p is None:
        return "-"
    return f"{1 + p / 100:.1f}x" if p >= 100 else f"{p:+.0f}%"


# ---------------------------------------------------------------- rendering

COLOURS = {D.REGRESSION: "red", D.IMPROVEMENT: "green", D.UNDECIDED: "yellow"}


def _table(title: str, rows: Sequence[Mapping[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("strategy", "figure", "group", "A", "B", "change (± noise)", "%", "n A/B", "gate"):
        table.add_column(col, justify="right" if col in ("A", "B", "change (± noise)", "%", "n A/B") else "left")
    for r in rows:
        colour = COLOURS.get(r["verdict"], "white")
        gate = f"[{colour}]gated[/]" if r["gated"] else "not gated"
        table.add_row(escape(r["strategy"]), escape(r["name"]), r["group"], escape(fmt_value(r["a"], r["unit"])),
                      escape(fmt_value(r["b"], r["unit"])), f"[{colour}]{escape(fmt_change(r))}[/]", fmt_pct(r),
                      f"{r['n_a']}/{r['n_b']}", gate)
    return table


def _header(d: Mapping[str, Any], a_dir: str, b_dir: str, console: Any) -> None:
    from rich.markup import escape

    console.print(f"[bold]diff[/] A={escape(a_dir)} ({escape(d['a']['name'])})  B={escape(b_dir)} "
                  f"({escape(d['b']['name'])}): {len(d['matched'])} strategies matched; gating on "
                  f"{', '.join(d['fail_on'])} (loadprof's own phases never gate)")
    console.print(f"a change counts when the repeats tell A and B apart and it exceeds max({d['threshold_pct']:g}% "
                  f"of A, {d['min_abs_s'] * 1e3:g} ms / 1 MiB)")
    console.print(f"[dim]method: {escape(d['method'])}[/]")
    for note in d.get("notes", ()):
        console.print(f"[bold yellow]note:[/] {escape(note)}")


def _nothing_comparable(d: Mapping[str, Any], console: Any) -> None:
    from rich.markup import escape

    why = ("no strategy matched between the two sweeps (matched by strategy id, then by a label unique on "
           "both sides)" if not d["matched"] else "the matched strategies failed on both sides: no figure to compare")
    console.print(f"[bold yellow]nothing comparable:[/] {why}")
    for side in ("a", "b"):
        held = d["sides"][side]
        console.print(f"  {side.upper()} holds {len(held)}: " + (escape(", ".join(held)) if held else "no trials"))


def render(d: Mapping[str, Any], a_dir: str, b_dir: str, console: Any) -> None:
    """The diff on the console: regressions, improvements, within-noise count, undecided rows, the exit code."""
    from rich.markup import escape

    _header(d, a_dir, b_dir, console)
    s = d["summary"]
    if d["exit_code"] == D.EXIT_NOTHING_COMPARABLE:
        _nothing_comparable(d, console)
    for title, rows in (("regressions", s["regressions"]), ("improvements", s["improvements"])):
        if rows:
            console.print(_table(f"{title} ({len(rows)})", rows))
    console.print(f"{len(s['regressions'])} regression(s), {len(s['improvements'])} improvement(s), "
                  f"{s['same']} comparison(s) within noise or under the floors")
    shown = [r for r in s["undecided"] if r["beyond_floor"]]
    if shown:
        console.print(_table(f"undecided: fewer than {MIN_REPEATS} repeats on a side ({len(shown)} "
                             "beyond the floors, raw change)", shown))
    if len(s["undecided"]) > len(shown):
        console.print(f"{len(s['undecided']) - len(shown)} more undecided comparison(s) under the floors")
    if any(r["gated"] for r in s["undecided"]):
        console.print(f"[yellow]{escape(D.RERUN_HINT)}[/]")
    for u in s["unmatched"]:
        console.print(f"[yellow]unmatched[/]: only in {u['side'].upper()}: {escape(u['label'])} ({escape(u['strategy_id'])})")
    colour = "green" if d["exit_code"] == D.EXIT_OK else "red" if d["exit_code"] == D.EXIT_REGRESSION else "yellow"
    console.print(f"[{colour}]exit {d['exit_code']}[/]: {escape(d['exit_reason'])}")
