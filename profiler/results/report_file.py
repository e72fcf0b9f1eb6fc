"""The one reader of report.json (and, for ``loadprof report``, of a folder's results.jsonl when report.json is gone).

Every command that reads a finished sweep (``report``, ``recommend``, ``diff``) and the Python API
(``loadprof.load_report``) come through here, so a hand-edited, truncated or hostile file is answered the same way
everywhere: one line naming the file and what is wrong (``LoadprofError``, exit 2), never a traceback. What the
file cannot be: larger than ``MAX_REPORT_BYTES``, nested deeper than ``MAX_DEPTH``, not UTF-8, not JSON, not an
object, of an unknown ``schema_version``, without a ``run_id``, with ``trials`` not a list. What is forgiven and
said in a note: a trial that does not read as a trial (unknown status, wrong shape: the same check as a
results.jsonl line) is skipped and counted; a part of what analysis concluded that does not read is left out
(``loadprof report`` recomputes it). NaN, Infinity and numbers beyond a float read as missing values, and so does
a string under a key whose unit suffix says it is a number (``"<phase>_s": "fast"``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from loadprof.core.circumstances import Circumstances
from loadprof.core.conclusions import ConfigSummary, Finding, Recommendations, studies_from_dict
from loadprof.core.errors import LoadprofError
from loadprof.core.units import NUMBER_SUFFIXES  # a string under such a key reads as missing
from loadprof.results.jsonl import RESULTS, BadRecord, read_results_file, trial_from_record
from loadprof.results.model import READABLE_SCHEMA_VERSIONS, SweepResult, TrialResult

REPORT = "report.json"
#: the largest report.json read: a sweep of thousands of trials with sampled stacks is tens of MiB
MAX_REPORT_BYTES = 256 * 2**20
#: the deepest nesting of lists and objects read: a report's phase trees and payloads stay under 30 levels
MAX_DEPTH = 100
#: mappings of free text whose keys may carry a unit suffix (an estimate's formulas); a strategy is checked whole
FREE_TEXT = ("formulas", "strategy")
#: skipped trials named in the note, at most
SHOWN = 3


class ReportWarning(UserWarning):
    """What ``loadprof.load_report`` forgave in a file (skipped trials, conclusions left out)."""


@dataclass(frozen=True)
class ReportRead:
    """A sweep read back, and what was forgiven on the way (one line each)."""

    sweep: SweepResult
    notes: tuple[str, ...] = ()


def _bad(path: Path, what: str, hint: str | None = None) -> LoadprofError:
    return LoadprofError(f"{path} is unreadable: {what}", hint=hint, exit_code=2)


def report_path(path: str | Path) -> Path:
    """``path`` itself when it names a .json file, else the report.json in that folder."""
    p = Path(path)
    return p / REPORT if p.is_dir() or p.suffix != ".json" else p


def _finite(text: str) -> float | None:
    v = float(text)
    return v if math.isfinite(v) else None


def _parse(path: Path) -> Any:
    """The file's JSON, within the size and depth limits; NaN, Infinity and 1e999 read as null."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise _bad(path, f"{size:,} bytes, over the {MAX_REPORT_BYTES // 2**20} MiB a report.json may be")
        with open(path, "rb") as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
    except OSError as e:
        raise _bad(path, e.strerror or type(e).__name__) from None
    if len(raw) > MAX_REPORT_BYTES:
        raise _bad(path, f"over the {MAX_REPORT_BYTES // 2**20} MiB a report.json may be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=lambda _: None, parse_float=_finite)
    except RecursionError:
        raise _bad(path, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise _bad(path, f"not JSON ({str(e)[:80]})") from None


def _clean(doc: Any, path: Path) -> None:
    """In place: strings (and booleans) under number-suffixed keys dropped, outside ``FREE_TEXT``; nesting past
    ``MAX_DEPTH`` refused. Iterative, so no depth the parser accepted can exhaust the stack here."""
    todo: list[tuple[Any, int, bool]] = [(doc, 1, True)]
    while todo:
        node, depth, clean = todo.pop()
        if depth > MAX_DEPTH:
            raise _bad(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if clean:
                for k in [k for k, v in node.items() if isinstance(v, (str, bool)) and k.endswith(NUMBER_SUFFIXES)]:
                    del node[k]
            todo += [(v, depth + 1, clean and k not in FREE_TEXT) for k, v in node.items()
                     if isinstance(v, (dict, list))]
        elif isinstance(node, list):
            todo += [(v, depth + 1, clean) for v in node if isinstance(v, (dict, list))]


def _trials(records: list[Any]) -> tuple[tuple[TrialResult, ...], str | None]:
    """The records that read as trials, and a note counting (and naming the first reasons of) the others."""
    good, skipped = [], []
    for i, rec in enumerate(records):
        try:
            good.append(trial_from_record(rec))
        except BadRecord as e:
            skipped.append(f"trial {i}: {e}")
    if not skipped:
        return tuple(good), None
    more = "; ..." if len(skipped) > SHOWN else ""
    return tuple(good), (f"skipped {len(skipped)} unreadable trial{'s' if len(skipped) != 1 else ''} "
                         f"({'; '.join(skipped[:SHOWN])}{more})")


def _part(doc: Mapping[str, Any], key: str, read: Callable[[Any], Any], empty: Any, notes: list[str]) -> Any:
    """One part of what analysis concluded, or ``empty`` with a note when it does not read."""
    if doc.get(key) is None:
        return empty
    try:
        return read(doc[key])
    except Exception as e:  # noqa: BLE001 - derived data: whatever it trips on, it is recomputed from the trials
        notes.append(f"its {key} do not read ({type(e).__name__}): left out; `loadprof report` recomputes them")
        return empty


def _sweep(doc: Any, path: Path) -> ReportRead:
    if not isinstance(doc, dict):
        raise _bad(path, f"a JSON {type(doc).__name__}, not a loadprof report (an object)")
    version = doc.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise _bad(path, f"schema_version {repr(version)[:20]}; this loadprof reads "
                         f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}",
                   hint="re-render it with the loadprof that wrote it, or rerun the sweep")
    run_id = doc.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise _bad(path, "no run_id")
    if not isinstance(doc.get("trials"), list):
        raise _bad(path, f"trials is {'missing' if 'trials' not in doc else type(doc['trials']).__name__}, "
                         "not a list")
    trials, skipped = _trials(doc["trials"])
    notes = [skipped] if skipped else []
    text = lambda key, default: doc[key] if isinstance(doc.get(key), str) else default  # noqa: E731
    sweep = SweepResult(
        run_id=run_id, name=text("name", run_id), source=text("source", "?"), created_at=text("created_at", ""),
        trials=trials, env=doc["env"] if isinstance(doc.get("env"), dict) else {},
        interrupted=doc.get("interrupted") is True,
        findings=_part(doc, "findings", lambda v: tuple(Finding.from_dict(f) for f in v), (), notes),
        studies=_part(doc, "studies", studies_from_dict, (), notes),
        recommendations=_part(doc, "recommendations", Recommendations.from_dict, Recommendations(), notes),
        configurations=_part(doc, "configurations", lambda v: tuple(ConfigSummary.from_dict(c) for c in v), (),
                             notes),
        circumstances=_part(doc, "circumstances", Circumstances.from_dict, Circumstances(), notes))
    return ReportRead(sweep, tuple(f"{path}: {n}" for n in notes))


def read_report(path: str | Path) -> ReportRead:
    """The sweep in ``path`` (a sweep folder or its report.json), validated; ``LoadprofError`` (exit 2) when it
    cannot be read, one line naming the file and what is wrong."""
    p = report_path(path)
    if not p.is_file():
        raise LoadprofError(f"{p} not found", hint="pass a sweep folder written by `loadprof compare ... --out DIR` "
                                                   "or its report.json", exit_code=2)
    doc = _parse(p)
    _clean(doc, p)
    return _sweep(doc, p)


def load_report(path: str | Path) -> SweepResult:
    """``read_report(path).sweep``; what was forgiven (skipped trials) is a ``ReportWarning``."""
    read = read_report(path)
    for note in read.notes:
        warnings.warn(note, ReportWarning, stacklevel=2)
    return read.sweep


def read_run(folder: Path) -> ReportRead:
    """A sweep folder's result for re-rendering: its report.json, else the trials of its results.jsonl that read
    (an interrupted sweep; skipped lines counted in a note); exit 2 when neither has a trial to show."""
    if (folder / REPORT).exists():
        try:
            return read_report(folder / REPORT)
        except LoadprofError as e:
            if e.hint or not (folder / RESULTS).is_file():
                raise
            raise LoadprofError(e.message, hint="delete it to re-render from results.jsonl", exit_code=2) from None
    found = read_results_file(folder)
    if not found.trials:
        raise LoadprofError(f"{folder} has neither {REPORT} nor finished trials", exit_code=2)
    note = found.warning() and f"{folder}: {found.warning()}"
    return ReportRead(SweepResult(run_id=folder.name, name=folder.name, source="?", created_at="",
                                  trials=tuple(found.trials), interrupted=True), (note,) if note else ())
