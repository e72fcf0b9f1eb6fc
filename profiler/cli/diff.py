"""``loadprof diff A B``: the command half. Read both reports (the one reader), run ``analysis.diff``, hand the
result to its renderer (``cli.outputs``: the console table, or md/csv/json/jsonl) and exit with the gate's code.

Bad input (a missing or unreadable report, a bad ``--fail-on``) is one line and exit 2, as JSON with
``--format json`` so a CI script always gets an object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from loadprof.analysis import diff as D
from loadprof.core.errors import LoadprofError


def cli_diff(a_dir: Path, b_dir: Path, threshold_pct: float, console: Any, fail_on: str | None = None,
             as_json: bool = False, fmt: str = "table", warn: Callable[[str], None] | None = None) -> int:
    """Run the diff and return its exit code (``analysis.diff.EXIT_CODES``); errors are one line, code 2."""
    from rich.markup import escape

    from loadprof.cli import outputs
    from loadprof.results.report_file import read_report

    fmt = "json" if as_json else fmt
    try:
        groups = D.parse_fail_on(fail_on)
        a, b = read_report(a_dir), read_report(b_dir)
    except LoadprofError as e:
        if fmt == "json":
            console.out(json.dumps({"exit_code": D.EXIT_BAD_INPUT, "error": e.message}), highlight=False)
        else:
            console.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)  # one line, however long
        return D.EXIT_BAD_INPUT
    for note in (*a.notes, *b.notes) if warn is not None else ():
        warn(note)
    d = D.diff(a.sweep, b.sweep, threshold_pct, fail_on=groups)
    if fmt == "table":
        outputs.diff_console(d, str(a_dir), str(b_dir), console)
    else:
        console.out(outputs.diff_output(d, fmt).rstrip("\n"), highlight=False)
    return d.exit_code
