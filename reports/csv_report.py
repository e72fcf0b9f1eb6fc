"""report.csv: one row per trial for spreadsheets and pandas (named csv_report so it never shadows stdlib csv);
configurations.csv: one row per configuration, each figure as median, q1, q3, ci_lo, ci_hi, n.

Columns: identity and status, every top-level phase as ``<name>_s``, the load children as ``load.<child>_s``
(plus ``load.other_s``), then the scalar metrics under their own keys (units already in the names).
The column set is the union over trials, so a sweep with mixed phases still has one header.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from loadprof.core import figures
from loadprof.core.payloads import MachinePayload
from loadprof.reports.base import Artifacts, TextRenderer
from loadprof.reports.sections import children_s, model_label, top_level_s
from loadprof.results.model import SweepResult, TrialResult

ID_COLUMNS = ("trial_id", "strategy_id", "label", "model", "repeat", "status", "reason", "wall_s")
#: metrics first in this order when present; any other scalar metric follows, alphabetically
MAIN_METRICS = (figures.PEAK_RSS_BYTES.key, figures.TTFT_MS.key, "cold_ttft_ms", figures.DECODE_TOK_S.key,
                figures.DECODE_TOK_S_PER_SEQ.key, "per_token_ms_p50", "per_token_ms_p90", "per_token_ms_p99",
                figures.GENERATE_CALL_S.key, "new_tokens", "weights_bytes", "param_count", "storage_read_bytes",
                "achieved_read_gb_s", "read_bandwidth_fraction", figures.PEAK_CUDA_ALLOCATED_BYTES.key,
                "generate_start_alloc_bytes")
HARNESS = ("startup_s", "overhead_s")
#: from ``harness.machine``: how busy the machine was around the trial (loadprof.analysis.busy)
MACHINE = ("others_cpu_cores", "steal_share")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _phase_columns(t: TrialResult) -> dict[str, float]:
    cols = {f"{name}_s": s for name, s in top_level_s(t)}
    cols.update({f"load.{name}_s": s for name, s in children_s(t, "load") or ()})
    return cols


def _phase_order(cols: list[str]) -> list[str]:
    """Top-level phases before the load children, each group in first-seen order."""
    return [c for c in cols if not c.startswith("load.")] + [c for c in cols if c.startswith("load.")]


def _row(t: TrialResult) -> tuple[dict[str, Any], list[str]]:
    """The row, and its phase columns in order (a metric such as the load phase's total yields to the phase
    column of that name)."""
    phases = _phase_columns(t)
    row: dict[str, Any] = {"trial_id": t.trial_id, "strategy_id": t.strategy_id, "label": t.label,
                           "model": model_label(t), "repeat": t.repeat_index, "status": t.status,
                           "reason": t.reason or "", "wall_s": t.wall_s, **phases}
    row.update({k: v for k, v in t.metrics.items() if k not in row and _scalar(v)})
    row.update({f"harness.{k}": t.harness[k] for k in HARNESS if k in t.harness})
    machine = t.payload(MachinePayload)  # column names from when the record was harness.machine
    if machine is not None:
        row.update({f"harness.machine.{k}": getattr(machine, k) for k in MACHINE})
    return row, list(phases)


def render(sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
    """The CSV text (header + one row per trial); missing values are empty cells; ``artifacts`` is not needed.

    Column order: identity, phases (first-seen order), main metrics, the other metrics sorted, harness (then
    ``harness.machine.others_cpu_cores`` / ``steal_share``: how busy the machine was).
    """
    rows, phase_cols = [], []
    for t in sweep.trials:
        row, cols = _row(t)
        rows.append(row)
        phase_cols += [c for c in cols if c not in phase_cols]
    phase_cols = _phase_order(phase_cols)
    seen = set().union(*rows) if rows else set()
    main = [k for k in MAIN_METRICS if k in seen and k not in phase_cols]
    harness = [f"harness.{k}" for k in HARNESS if f"harness.{k}" in seen]
    harness += [f"harness.machine.{k}" for k in MACHINE if f"harness.machine.{k}" in seen]
    rest = sorted(seen - {*ID_COLUMNS, *phase_cols, *main, *harness})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*ID_COLUMNS, *phase_cols, *main, *rest, *harness], restval="",
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


RENDERER = TextRenderer("csv", "csv", render)

#: per figure, the Estimate fields configurations.csv spells out (``<figure>.<stat>``), ci_* = bootstrap 95% CI
ESTIMATE_COLUMNS = (("median", "median"), ("q1", "q1"), ("q3", "q3"), ("ci_lo", "lo"), ("ci_hi", "hi"), ("n", "n"))
CONFIG_ID_COLUMNS = ("strategy_id", "label", "model", "n", "n_trials", "pareto", "pareto_on", "dominated_by")


def render_configurations(sweep: SweepResult, artifacts: Artifacts | None = None) -> str:
    """configurations.csv: one row per configuration (``sweep.configurations``); columns ``<figure>.median``,
    ``.q1``, ``.q3``, ``.ci_lo``, ``.ci_hi``, ``.n`` for each figure any configuration has, unrounded."""
    configs = sweep.configurations
    keys = [f.key for f in figures.PER_CONFIGURATION if any(f.key in c.figures for c in configs)]
    columns = [*CONFIG_ID_COLUMNS, *(f"{k}.{col}" for k in keys for col, _ in ESTIMATE_COLUMNS)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for c in configs:
        row: dict[str, Any] = {"strategy_id": c.strategy_id, "label": c.label, "model": c.model, "n": c.n,
                               "n_trials": c.n_trials, "pareto": "" if c.pareto is None else c.pareto,
                               "pareto_on": " ".join(c.pareto_on), "dominated_by": " ".join(c.dominated_by)}
        for k, est in c.figures.items():
            row.update({f"{k}.{col}": getattr(est, attr) for col, attr in ESTIMATE_COLUMNS})
        writer.writerow({k: "" if v is None else v for k, v in row.items() if k in columns})
    return buf.getvalue()


CONFIGURATIONS = TextRenderer("configurations-csv", "csv", render_configurations, filename="configurations.csv")
