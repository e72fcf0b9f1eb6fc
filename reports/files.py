"""Write the file reports of a sweep (report.md, report.html, report.csv) next to its report.json.

Called by the session at the end of a run and by ``loadprof report OUT``; report.json itself is the
session's. Each file is written to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

from pathlib import Path

from loadprof.results import SweepResult

FILES = ("report.md", "report.html", "report.csv")


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_all(sweep: SweepResult, out_dir: Path | str) -> dict[str, Path]:
    """Render and write the three reports into ``out_dir``; returns {"md"|"html"|"csv": path}."""
    from loadprof.reports import csv_report, html, markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"md": _write(out / "report.md", markdown.render(sweep, out)),
            "html": _write(out / "report.html", html.render(sweep, out)),
            "csv": _write(out / "report.csv", csv_report.render(sweep))}
