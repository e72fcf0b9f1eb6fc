"""Write the file reports of a sweep (report.md, report.html, report.csv, configurations.csv) next to its
report.json.

Called by the session at the end of a run and by ``loadprof report OUT``; report.json itself is the
session's. This is the one module of loadprof.reports that touches the disk: it writes the files (each through
a temporary name and a rename, see loadprof.reports.base.TextRenderer) and gives renderers an
``ArtifactReader`` over the trial folders, so that the renderers themselves never open a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadprof.reports.base import Renderer
from loadprof.results.model import SweepResult, TrialResult

FILES = ("report.md", "report.html", "report.csv", "configurations.csv")


@dataclass(frozen=True)
class ArtifactReader:
    """``loadprof.reports.base.Artifacts`` over a run folder: ``out_dir/trials/<trial_id>/<artifact name>``."""

    out_dir: Path

    def _path(self, trial: TrialResult, key: str) -> Path | None:
        name = trial.artifacts.get(key)
        return Path(self.out_dir) / "trials" / trial.trial_id / name if name else None

    def has(self, trial: TrialResult, key: str) -> bool:
        path = self._path(trial, key)
        return path is not None and path.is_file()

    def memory_timeline(self, trial: TrialResult) -> Any:
        path = self._path(trial, "memory_timeline")
        if path is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


def file_renderers() -> list[Renderer]:
    """The formats written beside report.json, in writing order.

    Imported on call, not at module import: html pulls in matplotlib (an optional extra, slow to import), and a
    format module reloaded without it (tests) is the one used.
    """
    from loadprof.reports import csv_report, html, markdown

    return [markdown.RENDERER, html.RENDERER, csv_report.RENDERER, csv_report.CONFIGURATIONS]


def write_all(sweep: SweepResult, out_dir: Path | str) -> dict[str, Path]:
    """Render and write every file report into ``out_dir``; returns {suffix: path} for the report.* files
    ({"md"|"html"|"csv": path}) and {file name: path} for the others ({"configurations.csv": path})."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = ArtifactReader(out)
    return {getattr(r, "filename", "") or r.suffix: r.write(sweep, out, artifacts) for r in file_renderers()}
