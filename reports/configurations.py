"""The per-configuration tables (median ± half IQR over repeats, and each model's Pareto front), built once.

Every format shows the same cells, like llama-bench's ``± stddev``: a figure from repeats is printed with its
spread so a reader never compares two medians that the noise cannot tell apart. Reads ``sweep.configurations``
(loadprof.analysis.aggregate) only; ``print_tables`` lays the same ``Table`` objects out on a rich console.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from loadprof.core import figures
from loadprof.core.conclusions import ConfigSummary, Estimate
from loadprof.reports.sections import Table
from loadprof.results.model import SweepResult
from loadprof.core import units

TITLE = "Per configuration (median ± half IQR, n repeats)"
PARETO_TITLE = "Pareto front per model"
NEEDS_REPEAT = "± needs repeat >= 2"
PARETO_DESCRIPTION = ("per model (never across models), the configurations no other configuration of that model "
                      "beats on every one of real load cost, peak memory and TTFT (lower is better) and decode "
                      "tok/s (higher is better). Dominance is decided on medians only: a difference within the "
                      "noise (the ± of the cells) is not decided by it")
SPREAD_NOTE = ("± is half the interquartile range (q1..q3) of the ok repeats; report.json and configurations.csv "
               "also hold q1, q3 and the bootstrap 95% CI of the median")


def estimate_cell(est: Estimate | None, unit: str) -> str:
    """``1.23 s ± 40.0 ms``: median ± half the IQR (the n column says how many repeats); one repeat, the bare
    median (its spread would be a fake 0)."""
    return units.estimate(est, unit, repeats=False)


def n_cell(c: ConfigSummary) -> str:
    return str(c.n) if c.n == c.n_trials else f"{c.n} of {c.n_trials}"


def configurations_table(sweep: SweepResult) -> Table | None:
    """One row per strategy: model, label, ok repeats, then each figure any configuration has, as median ± spread."""
    configs = sweep.configurations
    if not configs:
        return None
    shown = [f for f in figures.PER_CONFIGURATION if any(f.key in c.figures for c in configs)]
    columns = ("model", "configuration", "n", *(f.label for f in shown))
    rows = [(c.model, c.label, n_cell(c), *(estimate_cell(f.read(c.figures), f.unit) for f in shown))
            for c in configs]
    notes = [SPREAD_NOTE]
    if any(c.n == 1 for c in configs):
        notes.append(f"{NEEDS_REPEAT}: a configuration with n = 1 shows its one value")
    if any(c.n < c.n_trials for c in configs):
        notes.append("n = ok repeats of all trials; failed, crashed, timed-out and skipped trials count in no figure")
    right = tuple(i >= 2 for i in range(len(columns)))
    return Table(TITLE, columns, rows, right, "one row per strategy over its repeats", notes)


def compared(c: ConfigSummary, objective: figures.Objective) -> figures.Figure:
    """The figure ``c`` was compared on for ``objective`` (the memory one: whichever peak is in ``pareto_on``)."""
    on = [figures.by_key(k) for k in c.pareto_on if k in figures.BY_KEY]
    return next((f for f in on if f.objective is objective), figures.objective_figure(objective.name))


def pareto_table(sweep: SweepResult) -> Table | None:
    """The compared configurations of each model, front first; None when no model has two to compare."""
    configs = [c for c in sweep.configurations if c.pareto is not None]
    if not configs:
        return None
    labels = {c.strategy_id: c.label for c in sweep.configurations}
    models = list(dict.fromkeys(c.model for c in configs))
    configs.sort(key=lambda c: (models.index(c.model), not c.pareto))
    columns = ("model", "configuration", "Pareto", *(o.label for o in figures.OBJECTIVES), "dominated by")
    rows = []
    for c in configs:
        on = [compared(c, o) for o in figures.OBJECTIVES]
        cells = [estimate_cell(f.read(c.figures), f.unit) if f.key in c.pareto_on else "-" for f in on]
        by = ", ".join(labels.get(s, s) for s in c.dominated_by) or "-"
        rows.append((c.model, c.label, "front" if c.pareto else "dominated", *cells, by))
    right = tuple(3 <= i < 3 + len(figures.OBJECTIVES) for i in range(len(columns)))
    return Table(PARETO_TITLE, columns, rows, right, PARETO_DESCRIPTION, _pareto_notes(configs))


def _pareto_notes(configs: Sequence[ConfigSummary]) -> list[str]:
    notes = []
    for model in dict.fromkeys(c.model for c in configs):
        first = next(c for c in configs if c.model == model)
        on = first.pareto_on
        if len(on) < len(figures.OBJECTIVES):
            notes.append(f"{model}: compared on {', '.join(on)} only (the other figures were not measured by every "
                         "configuration of this model)")
        elif compared(first, figures.MEMORY) is figures.PEAK_CUDA_ALLOCATED_BYTES:
            notes.append(f"{model}: peak memory is the CUDA allocator peak")
    return notes


def tables(sweep: SweepResult) -> list[Table]:
    """The per-configuration table and, when any model has two configurations to compare, its Pareto table."""
    return [t for t in (configurations_table(sweep), pareto_table(sweep)) if t is not None]


def print_tables(ts: Iterable[Table], console: Console) -> None:
    """The tables on a rich console: heading on its own line (a table title wraps to the table's width)."""
    for t in ts:
        console.print(f"[bold]{escape(t.title)}[/]" + (f": {escape(t.description)}" if t.description else ""),
                      highlight=False)
        rt = RichTable()
        right = t.right or tuple(False for _ in t.columns)
        for col, r in zip(t.columns, right):
            rt.add_column(escape(col), justify="right" if r else "left", no_wrap=r, overflow="fold")
        for row in t.rows:
            rt.add_row(*(escape(cell) for cell in row))
        console.print(rt)
        for note in t.notes:
            console.print(f"  {note}", markup=False, highlight=False)
