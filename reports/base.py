"""The one shape every renderer has, and the one door through which renderers see trial files.

A renderer turns a ``SweepResult`` into text (``render``) and can put that text in ``report.<suffix>``
(``write``), so ``loadprof.reports.files.write_all`` writes every format from one list. Renderers never open
trial files themselves: whatever they need from disk (does an artifact exist, the full memory timeline) they
ask of an ``Artifacts`` the caller passes in, so rendering stays a pure function of its inputs and testable
without a run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from loadprof.results.model import SweepResult, TrialResult


@runtime_checkable
class Artifacts(Protocol):
    """What renderers may learn about a trial's files (``trials/<trial_id>/<name>`` under the run folder)."""

    def has(self, trial: TrialResult, key: str) -> bool:
        """Whether the artifact ``trial.artifacts[key]`` is there (links point only at files that exist)."""
        ...

    def memory_timeline(self, trial: TrialResult) -> Any:
        """The trial's memory_timeline artifact, parsed (a dict with ``rows`` or a list), or None if unreadable."""
        ...


@runtime_checkable
class Renderer(Protocol):
    """One output format: ``name`` (e.g. markdown), ``suffix`` (its file is ``report.<suffix>``)."""

    name: str
    suffix: str

    def render(self, sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
        """The whole report as text; without ``artifacts`` every named artifact is linked, none is read."""
        ...

    def write(self, sweep: SweepResult, out_dir: Path | str, artifacts: Artifacts | None = None) -> Path:
        """Render into ``out_dir/report.<suffix>``; returns the path."""
        ...


RenderFn = Callable[[SweepResult, "Artifacts | None"], str]


@dataclass(frozen=True)
class TextRenderer:
    """A ``Renderer`` made of a render function, so a format module only writes that function.

    ``write`` goes through a temporary name and a rename, so a reader never sees half a report. ``filename``
    replaces ``report.<suffix>`` for a second file of one format (configurations.csv beside report.csv).
    """

    name: str
    suffix: str
    render_fn: RenderFn
    filename: str = ""

    def render(self, sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
        return self.render_fn(sweep, artifacts)

    def write(self, sweep: SweepResult, out_dir: Path | str, artifacts: Artifacts | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / (self.filename or f"report.{self.suffix}")
        tmp = path.with_name(path.name + ".tmp")
        text = self.render(sweep, artifacts)
        try:
            tmp.write_text(text, encoding="utf-8", errors="backslashreplace")  # a lone surrogate never fails it
            tmp.replace(path)
        except OSError:  # disk full, file size limit: no half-written .tmp left behind, the old file stays
            tmp.unlink(missing_ok=True)
            raise
        return path
