"""A sweep as pandas DataFrames, for notebooks: one row per trial, or one row per phase.

pandas is an optional extra (``pip install 'loadprof[pandas]'``): imported only when a frame is asked for, so
the CLI and the worker never pay for it. Columns keep report.json's names and units (``_s``, ``_ms``,
``_bytes``, ``_tok_s``); a strategy's knobs are flattened to the YAML paths that set them (``load.dtype``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from loadprof.core.errors import LoadprofError

#: the knobs a row names, as the YAML spells them
KNOB_PATHS = ("load.device_map", "load.dtype", "load.quantization", "load.offload", "load.validation",
              "load.file_cache", "load.attn_implementation", "generate.prompt_tokens", "generate.max_new_tokens",
              "generate.batch_size", "generate.cache_implementation", "generate.stop_after")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise LoadprofError("pandas is not installed", hint="pip install 'loadprof[pandas]'", exit_code=2) from None
    return pandas


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def trial_row(t: Any) -> dict[str, Any]:
    """One trial: identity, status, knobs, and every scalar metric (nested ones are left to report.json)."""
    s = t.strategy
    row: dict[str, Any] = {"trial_id": t.trial_id, "strategy_id": t.strategy_id, "label": t.label,
                           "model": s.model.label, "repeat_index": t.repeat_index, "status": t.status,
                           "reason": t.reason, "wall_s": t.wall_s}
    for path in KNOB_PATHS:
        v = s.at(path)
        row[path] = v if _scalar(v) else "custom"
    row["load.loader"] = s.load.loader.target if s.load.loader else None
    row.update({k: v for k, v in t.metrics.items() if _scalar(v) and k not in row})
    return row


def _walk(phases: Iterable[Any], prefix: str = "", depth: int = 0) -> Iterator[tuple[str, int, Any]]:
    for p in phases:
        path = f"{prefix}/{p.name}" if prefix else p.name
        yield path, depth, p
        yield from _walk(p.children, path, depth + 1)


def trials_frame(sweep: Any) -> Any:
    """One row per trial of a ``SweepResult`` (core module: typed loosely so it imports nothing above it)."""
    return _pandas().DataFrame([trial_row(t) for t in sweep.trials])


def phases_frame(sweep: Any) -> Any:
    """One row per phase of every trial: its path (``load/weights/materialize``), depth, start/end on the
    trial's clock, duration and the time no child covers (``other_s``)."""
    rows = [{"trial_id": t.trial_id, "label": t.label, "repeat_index": t.repeat_index, "status": t.status,
             "phase": path, "depth": depth, "start_s": p.start_s, "end_s": p.end_s, "duration_s": p.duration_s,
             "other_s": p.other_s, "incomplete": p.incomplete}
            for t in sweep.trials for path, depth, p in _walk(t.phases)]
    columns = ["trial_id", "label", "repeat_index", "status", "phase", "depth", "start_s", "end_s", "duration_s",
               "other_s", "incomplete"]
    return _pandas().DataFrame(rows, columns=columns)
