"""The run folder on disk: its name and rules, ``sweep.json`` with the sweep's fingerprint, and
``results.jsonl`` written in whole lines and read tolerantly.

Why a module of its own: everything a sweep keeps goes through here, so the rules that protect it live in one
place. A default folder never leaves ``./loadprof-runs`` (the sweep name is one safe path component); an
existing folder is never overwritten (``--resume`` continues the same sweep, ``--force`` a different one); a
line that does not read as a trial (torn, not UTF-8, too deep, wrong shape) is skipped and counted, never
fatal, and the user's file is never rewritten; a write that fails (disk full, file size limit, read-only) ends
the sweep with every complete line kept and the command that continues it (exit ``EXIT_OUTPUT``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shlex
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from loadprof.results.runlock import LOCK
from loadprof.core.errors import LoadprofError
from loadprof.results.model import STATUSES, SweepResult, TrialResult

RESULTS, SWEEP_FILE = "results.jsonl", "sweep.json"
#: compare's exit code when the output folder stopped taking writes mid-run (BSD sysexits EX_IOERR)
EXIT_OUTPUT = 74
#: a trial line is tens of KiB; anything past this is not one (and is not read into memory whole)
MAX_LINE_BYTES = 32 << 20
NAME_MAX = 64
_IO_WORDS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit reached",
             errno.EROFS: "file system read-only", errno.EIO: "I/O error"}
_IO_FIX = {errno.ENOSPC: "free space", errno.EDQUOT: "free space",
           errno.EFBIG: "raise the file size limit (ulimit -f)", errno.EROFS: "make the disk writable",
           errno.EIO: "check the disk"}
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_UNIT_SUFFIXES = ("_s", "_ms", "_ns", "_bytes", "_tok_s")


class OutputWriteError(LoadprofError):
    """The output folder stopped taking writes mid-run; ``result`` holds what finished (kept on disk)."""

    exit_code = EXIT_OUTPUT

    def __init__(self, message: str, *, hint: str | None = None, result: SweepResult | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=EXIT_OUTPUT)
        self.result = result


def is_output_error(e: BaseException) -> bool:
    """An OSError that means "the disk will not take it" (as opposed to a bug or a missing program)."""
    return isinstance(e, OSError) and e.errno in _IO_WORDS


def write_failure(e: OSError, where: Path, kept: int, out: Path, source: str) -> OutputWriteError:
    """The one line a failed write ends a sweep with: what, where, what was kept, how to continue."""
    what = _IO_WORDS.get(e.errno or 0, e.strerror or type(e).__name__)
    target = Path(e.filename) if getattr(e, "filename", None) else where
    fix = _IO_FIX.get(e.errno or 0, "fix the output folder")
    return OutputWriteError(f"{what} while writing {target}: {kept} trials kept; {fix} and continue with "
                            f"`loadprof compare {shlex.quote(source)} --resume --out {shlex.quote(str(out))}`")


@contextlib.contextmanager
def file_size_limit_raises() -> Iterator[None]:
    """SIGXFSZ ignored while the sweep writes, so a file-size limit (``ulimit -f``) raises EFBIG on the write that
    hits it instead of killing the process with a torn line and no report (restored afterwards)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGXFSZ"):
        yield
        return
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, previous)


# ------------------------------------------------------------------------------------------------ the folder

def safe_name(name: str, limit: int = NAME_MAX) -> str:
    """The sweep name as one path component: [A-Za-z0-9._-] kept, other runs collapsed to ``-``, no leading dot
    (no ``..``, no hidden folder), capped, never empty."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")[:limit].rstrip("-")
    return s or "sweep"


def default_out(sweep: Any, root: Path = Path("loadprof-runs")) -> Path:
    """``root/<safe-name>-<timestamp>``, checked (resolved) to be directly inside ``root``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = root / f"{safe_name(sweep.name)}-{stamp}"
    if out.resolve().parent != root.resolve():
        raise LoadprofError(f"sweep name {sweep.name!r} would leave {root}", exit_code=2,
                            hint="rename the sweep or pass --out")
    return out


def prepare_out(out: Path, *, resume: bool) -> None:
    """Apply the folder rules, then prove the folder takes writes, before anything runs (exit 2 otherwise).

    Without ``--resume`` the folder must be absent or empty (a user's own files are never overwritten); with it,
    it must hold a loadprof sweep."""
    if out.exists() and not out.is_dir():
        raise LoadprofError(f"--out {out} is a file, not a folder", exit_code=2)
    if resume and not (out / SWEEP_FILE).is_file():
        raise LoadprofError(f"{out} holds no loadprof sweep (no {SWEEP_FILE}) to resume", exit_code=2,
                            hint="give --out the folder of the sweep to continue, or drop --resume")
    if not resume and out.is_dir() and any(p.name != LOCK for p in out.iterdir()):  # our own lock aside
        raise LoadprofError(f"output folder {out} exists and is not empty", exit_code=2,
                            hint="pass --resume to continue the sweep in it, or --out a new or empty folder")
    probe = out / f".loadprof-write-probe-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"loadprof\n")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as e:
        raise LoadprofError(f"cannot write to {out}: {e.strerror or e}", exit_code=2,
                            hint="choose a writable --out folder") from None


# ------------------------------------------------------------------------------------ sweep.json, fingerprint

def fingerprint(strategy_ids: list[str], repeat: int) -> str:
    """What makes two sweeps the same sweep: the set of strategy ids (each hashes the strategy, label aside)
    and the repeat count."""
    blob = json.dumps({"strategies": sorted(set(strategy_ids)), "repeat": repeat}, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _record_ids(rec: Mapping[str, Any]) -> list[str]:
    ids = rec.get("strategy_ids")
    if not isinstance(ids, list):  # a sweep.json from before fingerprints: its strategies carry their ids
        ids = [s.get("id") for s in rec.get("strategies") or () if isinstance(s, Mapping)]
    return [i for i in ids if isinstance(i, str)]


def _difference(old: Mapping[str, Any], ids: list[str], repeat: int) -> str:
    before, now = set(_record_ids(old)), set(ids)
    parts = []
    if now - before:
        parts.append(f"{len(now - before)} strategies not in the original sweep")
    if before - now:
        parts.append(f"{len(before - now)} of the original strategies missing")
    if old.get("repeat") != repeat:
        parts.append(f"repeat {repeat} instead of {old.get('repeat')}")
    return ", ".join(parts) or "a different fingerprint"


def check_same_sweep(out: Path, sweep: Any, *, force: bool) -> list[str]:
    """On ``--resume``: refuse (exit 2) a sweep other than the one that made ``out``, unless ``force``.
    Returns the fingerprints of earlier sweeps the folder already mixes (kept in the new sweep.json)."""
    path = out / SWEEP_FILE
    try:
        old = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as e:
        raise LoadprofError(f"{path} is unreadable ({type(e).__name__}); cannot tell which sweep {out} holds",
                            exit_code=2, hint="resume with the folder a loadprof sweep wrote") from None
    ids = [s.id for s in sweep.strategies]
    new = fingerprint(ids, sweep.repeat)
    was = old.get("fingerprint") or fingerprint(_record_ids(old), old.get("repeat") or 0)
    earlier = [f for f in old.get("mixes") or () if isinstance(f, str)]
    if was == new:
        return earlier
    if not force:
        raise LoadprofError(f"{out} holds another sweep: {_difference(old, ids, sweep.repeat)}", exit_code=2,
                            hint="resume with the YAML that made it, use another --out, or pass --force to add "
                                 "this sweep's trials to that folder anyway")
    return [*earlier, was]


def write_sweep_json(out: Path, sweep: Any, mixes: list[str] | None = None) -> None:
    """The expanded sweep and its fingerprint; ``mixes``: earlier sweeps' fingerprints forced into the folder."""
    ids = [s.id for s in sweep.strategies]
    record = {"name": sweep.name, "source": sweep.source, "repeat": sweep.repeat,
              "fingerprint": fingerprint(ids, sweep.repeat), "strategy_ids": ids,
              "strategies": [s.to_dict() | {"id": s.id} for s in sweep.strategies]}
    if mixes:
        record["mixes"] = mixes
    tmp = out / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    tmp.replace(out / SWEEP_FILE)


# ------------------------------------------------------------------------------------------ results.jsonl

@dataclass
class ReadResults:
    """What ``results.jsonl`` held: the trials that read whole, and (line number, why) for each skipped line."""

    trials: list[TrialResult] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def warning(self, shown: int = 3) -> str | None:
        """One line naming how many lines were skipped and why (the first few); None when none were."""
        if not self.skipped:
            return None
        why = "; ".join(f"line {n}: {reason}" for n, reason in self.skipped[:shown])
        more = "; ..." if len(self.skipped) > shown else ""
        return (f"skipped {len(self.skipped)} unreadable line{'s' if len(self.skipped) != 1 else ''} of {RESULTS} "
                f"({why}{more}); their trials run again with --resume, the file is left as it is")


class BadRecord(ValueError):
    """A trial record (a results.jsonl line, a report.json trial) that is not a trial analysis can read."""


def _check_shape(d: Any) -> None:
    """The types analysis relies on, checked before it sees them (a hand-edited or foreign line)."""
    if not isinstance(d, dict):
        raise BadRecord(f"a JSON {type(d).__name__}, not an object")
    for key, types in (("trial_id", str), ("strategy_id", str), ("label", str), ("status", str),
                       ("strategy", dict)):
        if not isinstance(d.get(key), types):
            raise BadRecord(f"{key} missing or not a {types.__name__}")
    if not _SAFE_ID.fullmatch(d["trial_id"]):
        raise BadRecord("trial_id is not a loadprof trial id")
    if d["status"] not in STATUSES:
        raise BadRecord(f"status {d['status'][:20]!r} unknown")
    if not isinstance(d.get("repeat_index"), int) or isinstance(d.get("repeat_index"), bool):
        raise BadRecord("repeat_index missing or not an integer")
    for key, types in (("metrics", dict), ("probes", dict), ("harness", dict), ("env", dict), ("artifacts", dict),
                       ("phases", list), ("notes", list)):
        if key in d and not isinstance(d[key], types):
            raise BadRecord(f"{key} is a {type(d[key]).__name__}, not a {'mapping' if types is dict else 'list'}")
    for key in ("wall_s",):
        if d.get(key) is not None and not _is_number(d[key]):
            raise BadRecord(f"{key} is not a number")
    for key, v in (d.get("metrics") or {}).items():
        if key.endswith(_UNIT_SUFFIXES) and v is not None and not _is_number(v):
            raise BadRecord(f"metrics.{key[:40]} is not a number")
    _check_phases(d.get("phases") or [])


def _check_phases(phases: list[Any]) -> None:
    """Each phase a mapping with a string name, numeric start and end, and children of the same shape."""
    todo = list(phases)
    while todo:
        p = todo.pop()
        if not (isinstance(p, dict) and isinstance(p.get("name"), str) and _is_number(p.get("start_s"))
                and _is_number(p.get("end_s")) and isinstance(p.get("children", []), list)):
            raise BadRecord("a phase without a name, a numeric start_s and end_s")
        todo += p.get("children", [])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_line(raw: bytes) -> TrialResult:
    """One results.jsonl line -> a TrialResult; ``BadRecord`` (a ValueError) saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord(f"invalid UTF-8 at byte {e.start}") from None
    try:
        d = json.loads(text)
    except RecursionError:
        raise BadRecord("JSON nested too deep") from None
    except ValueError as e:
        raise BadRecord(f"not JSON ({str(e)[:60]})") from None
    return trial_from_record(d)


def trial_from_record(d: Any) -> TrialResult:
    """A parsed trial record -> a TrialResult, its shape checked first (the types analysis relies on) and its
    probes' payloads read once; ``BadRecord`` saying why not. Shared by results.jsonl and report.json."""
    _check_shape(d)
    try:
        trial = TrialResult.from_dict(d)  # every probe payload read strictly, by its type
    except Exception as e:  # noqa: BLE001 - whatever a foreign line trips on, it is not a trial we can analyse
        raise BadRecord(f"not a loadprof trial ({type(e).__name__})") from None
    return trial


def _lines(f: Any, limit: int) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, bytes or None when over ``limit``, ends with a newline), never holding more than ``limit``."""
    n = 0
    while raw := f.readline(limit + 1):
        n += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield n, None, bool(rest)
            continue
        yield n, raw, raw.endswith(b"\n")


def read_results_file(out: Path, limit: int = MAX_LINE_BYTES) -> ReadResults:
    """Every trial that reads whole from ``out/results.jsonl``; each other non-blank line skipped with its reason
    (a torn last line, from a sweep killed mid-write, is one of them)."""
    found = ReadResults()
    path = out / RESULTS
    if not path.is_file():
        return found
    with open(path, "rb") as f:
        for n, raw, complete in _lines(f, limit):
            if raw is None:
                found.skipped.append((n, f"longer than {limit:,} bytes"))
                continue
            if not raw.strip():
                continue
            try:
                found.trials.append(parse_line(raw))
            except BadRecord as e:
                found.skipped.append((n, "torn last line (no newline: the sweep was stopped mid-write)"
                                      if not complete else str(e)))
    return found


def read_results(out: Path) -> list[TrialResult]:
    """The finished trials in ``out`` (unreadable lines skipped; see ``read_results_file`` for which and why)."""
    return read_results_file(out).trials


def append_result(out: Path, result: TrialResult) -> None:
    """Append one trial as one line, flushed and fsynced; a torn last line (a sweep killed mid-write) is
    terminated first so the new line stays whole. A failed write raises; the lines before it stay intact."""
    path = out / RESULTS
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    data = (b"\n" if torn else b"") + json.dumps(result.to_dict(), default=str).encode("utf-8") + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


REPORT = "report.json"


def write_report(out: Path, sweep_result: SweepResult) -> Path:
    """report.json, replaced whole (written beside and renamed), so a reader never sees half of one."""
    tmp = out / (REPORT + ".tmp")
    text = json.dumps(sweep_result.to_dict(), indent=1, default=str)
    try:
        tmp.write_text(text, encoding="utf-8")  # json.dumps escapes every non-ASCII character
        tmp.replace(out / REPORT)
    except OSError:  # a full disk leaves the previous report.json, not a half-written .tmp
        tmp.unlink(missing_ok=True)
        raise
    return out / REPORT
