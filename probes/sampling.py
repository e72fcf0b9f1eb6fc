"""Out-of-process statistical sampling of a trial's worker with py-spy, and attribution of the samples.

Phase timing (probes/load_phases.py) says *how long* each step took; sampling says *where inside it* the time
went, down to the user's own loader code, with no hook in the worker: py-spy reads the worker's memory from
outside. The runner calls ``Sampler(pid, trial_dir).start()`` right after spawning the worker and
``finish()`` once it is reaped (py-spy exits with its target). Never imports torch: this runs in the parent.

py-spy 0.4.3's speedscope file: one ``sampled`` profile per OS thread, named 'Thread <tid> "<name>"' (the
name may be empty); with ``--threads`` every stack starts with a synthetic frame 'thread (<tid>): <name>'
(file '', line 0; the name is missing in samples taken before py-spy learned it). Stacks are root-first
indices into ``shared.frames`` = {name: co_qualname, e.g. "PreTrainedModel._load_pretrained_model", file,
line}; ``weights`` are seconds, 1/rate per sample; idle stacks are simply absent.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from loadprof.probe_registry import WORKER_STEP_PHASES
from loadprof.probes.base import ProbeResult
from loadprof.probes.load_phases import LOAD_TARGETS

PROFILE_NAME = "profile.speedscope.json"
LOG_NAME = "py-spy.log"
ROOT = Path(__file__).resolve().parents[1]  # the loadprof checkout / install root

#: (function qualname, phase). A frame matches when its qualname equals the key or ends with "." + key. The
#: worker's step functions come from the table the worker itself opens its phases by (loadprof.probe_registry).
DEFAULT_PHASE_MAP: tuple[tuple[str, str], ...] = WORKER_STEP_PHASES + tuple(
    (target.split(":", 1)[1], phase) for phase, target in LOAD_TARGETS)
#: loadprof's own code is never user code, but strategies/examples/ is (its loaders stand in for users')
DEFAULT_INTERNAL_ROOTS: tuple[str, ...] = tuple(str(ROOT / d) for d in ("profiler", "probes", "reports", "strategies",
                                                                       "analysis"))
DEFAULT_USER_ROOTS: tuple[str, ...] = (str(ROOT / "strategies" / "examples"),)
#: a frame of these marks materialize work (on transformers' ThreadPoolExecutor threads, or deferred on the
#: main thread); the line of a MATERIALIZE_SOURCES function under it tells reading (tensor[...]) from casting
#: (.to()). probes/load_phases.py swaps _materialize_copy for its own timed copy of the same two statements.
MATERIALIZE_ANCHORS = ("spawn_materialize.<locals>._job", "_materialize_copy")
MATERIALIZE_SOURCES = (("transformers/core_model_loading.py", "_materialize_copy"), ("probes/load_phases.py", "_timed_copy"))
WORKER_CONTEXT = ("load", "weights", "materialize")
#: the model class built by from_pretrained (phases.py times it through get_init_context, which has no frame)
INSTANTIATE = ("PreTrainedModel.from_pretrained", "instantiate")
UNATTRIBUTED = "(unattributed)"
WORKERS = " [worker threads]"
_Key = tuple[str, str]  # (qualname, file)


@dataclass(frozen=True)
class Frame:
    function: str  # qualname as py-spy reports it
    file: str
    line: int


@dataclass(frozen=True)
class Sample:
    thread: str  # "MainThread (1234)", "ThreadPoolExecutor-0_1 (1240)", "thread 1241"
    stack: tuple[Frame, ...]  # root first, without py-spy's synthetic thread frame
    weight_s: float
    main: bool = False


@dataclass(frozen=True)
class SamplingResult:
    ok: bool
    reason: str | None = None
    profile_path: str | None = None
    log_path: str | None = None
    wall_s: float | None = None
    attribution: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "profile_path": self.profile_path, "log_path": self.log_path,
                "wall_s": self.wall_s, "attribution": dict(self.attribution), "notes": list(self.notes)}

    def to_probe_result(self) -> ProbeResult:
        """The shape the runner files under ``probes`` (artifacts relative to the trial folder)."""
        arts = {"py_spy_log": LOG_NAME, **({"speedscope": PROFILE_NAME} if self.profile_path else {})}
        notes = self.notes if self.ok else (f"sampling not run: {self.reason}",) + self.notes
        return ProbeResult("sampling", metrics={"ok": self.ok, "wall_s": self.wall_s, **self.attribution},
                           notes=tuple(notes), artifacts=arts if self.log_path else {})


def find_py_spy() -> str | None:
    """py-spy on PATH, else the one installed next to this interpreter (a venv that is not activated)."""
    cand = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(cand) if cand.is_file() and os.access(cand, os.X_OK) else None)


def _ptrace_problem(pid: int, py_spy: str) -> str | None:
    """Reasons py-spy will surely fail, found at once instead of after its ~0.4 s of attach retries."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"no process with pid {pid}"
    except PermissionError:
        return f"pid {pid} belongs to another user: py-spy needs root or CAP_SYS_PTRACE"
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return "ptrace is disabled on this machine (kernel.yama.ptrace_scope=3)"
    try:
        has_cap = bool(os.getxattr(py_spy, "security.capability"))
    except OSError:
        has_cap = False
    if scope in (1, 2) and os.geteuid() != 0 and not has_cap:
        return (f"kernel.yama.ptrace_scope={scope}: py-spy is not the worker's ancestor, so it needs root or "
                "CAP_SYS_PTRACE (`setcap cap_sys_ptrace+ep $(which py-spy)`, or ptrace_scope=0)")
    return None


def _log_error(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errs = [ln for ln in lines if ln.lower().startswith(("error", "permission denied"))]
    return (errs or lines or ["no output"])[0][:300]


class Sampler:
    """``py-spy record`` on one worker, from the parent.

    100 Hz and ``--nonblocking`` by default: on 2 cores, blocking sampling (py-spy stops the process for every
    stack read) at 200 Hz slowed a load by 35%; nonblocking reads never stop the worker, at the price of an
    occasional torn stack (py-spy counts those as errors; see the notes). Line numbers are kept (no
    ``--function``), every thread is recorded (``--threads``), idle stacks are not (``--idle`` off), and
    filenames are absolute (``--full-filenames``) so user code can be told from libraries.
    """

    def __init__(self, pid: int, out_dir: Path, rate_hz: int = 100, nonblocking: bool = True) -> None:
        self.pid, self.out_dir, self.rate_hz, self.nonblocking = pid, Path(out_dir), rate_hz, nonblocking
        self.profile_path = self.out_dir / PROFILE_NAME
        self.log_path = self.out_dir / LOG_NAME
        self._proc: subprocess.Popen | None = None
        self._reason: str | None = "Sampler.start() was not called"
        self._t0 = 0.0

    def command(self, py_spy: str) -> list[str]:
        cmd = [py_spy, "record", "--pid", str(self.pid), "--rate", str(self.rate_hz), "--format", "speedscope",
               "--output", str(self.profile_path), "--threads", "--full-filenames"]
        return cmd + (["--nonblocking"] if self.nonblocking else [])

    def start(self, wait_s: float = 0.0) -> str | None:
        """Spawn py-spy: None when it runs, else why it cannot. Does not wait (the worker is starting) unless
        ``wait_s`` > 0; failures py-spy finds only after retrying (permission denied) surface in ``finish``."""
        py_spy = find_py_spy()
        self._reason = ("py-spy not found on PATH or next to the interpreter (pip install py-spy)" if py_spy is None
                        else _ptrace_problem(self.pid, py_spy))
        if self._reason or py_spy is None:
            return self._reason
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "wb") as log:
                self._t0 = time.monotonic()
                self._proc = subprocess.Popen(self.command(py_spy), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
        except OSError as e:
            self._reason = f"could not run py-spy: {type(e).__name__}: {e}"
            return self._reason
        try:
            code = self._proc.wait(timeout=wait_s) if wait_s > 0 else self._proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code:
            self._reason, self._proc = f"py-spy exited at once with code {code}: {_log_error(self.log_path)}", None
        return self._reason

    def finish(self, timeout_s: float = 30) -> SamplingResult:
        """After the worker exited: wait for py-spy's file (SIGINT, then kill, on timeout), parse, attribute."""
        try:
            return self._finish(timeout_s)
        except Exception as e:  # noqa: BLE001 - a probe never decides the trial's fate
            return SamplingResult(ok=False, reason=f"sampling failed: {type(e).__name__}: {e}",
                                  log_path=str(self.log_path))

    def _finish(self, timeout_s: float) -> SamplingResult:
        proc, notes = self._proc, []
        if proc is None:
            return SamplingResult(ok=False, reason=self._reason, log_path=str(self.log_path))
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # py-spy writes its file on Ctrl-C
            notes.append(f"py-spy still running {timeout_s:g} s after the worker exited: stopped with SIGINT")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wall_s = time.monotonic() - self._t0
        if not self.profile_path.is_file() or self.profile_path.stat().st_size == 0:
            return SamplingResult(ok=False, log_path=str(self.log_path), wall_s=wall_s, notes=tuple(notes),
                                  reason=f"py-spy wrote no profile (exit {proc.returncode}): {_log_error(self.log_path)}")
        m = re.search(r"Samples: (\d+) Errors: (\d+)", self.log_path.read_text(errors="replace"))
        if m and int(m.group(2)):
            notes.append(f"py-spy could not read {m.group(2)} of {m.group(1)} stacks (torn nonblocking reads, "
                         "attach retries while the worker started): dropped")
        samples = load_speedscope(self.profile_path, pid=self.pid)
        attribution = attribute(samples, rate_hz=self.rate_hz, duration_s=wall_s)
        attribution["notes"] = notes + attribution["notes"]
        return SamplingResult(ok=True, profile_path=str(self.profile_path), log_path=str(self.log_path), wall_s=wall_s,
                              attribution=attribution, notes=tuple(attribution["notes"]), samples=samples)


# ---- parsing -------------------------------------------------------------------------------------------------

_THREAD_FRAME = re.compile(r"^thread \((\d+)\)(?::\s*(.*))?$")
_PROFILE_NAME = re.compile(r'^Thread (\d+)(?: "(.*)")?')


def load_speedscope(path: Path | str, pid: int | None = None) -> tuple[Sample, ...]:
    return parse_speedscope(json.loads(Path(path).read_text()), pid=pid)


def parse_speedscope(doc: Mapping[str, Any], pid: int | None = None) -> tuple[Sample, ...]:
    """py-spy's speedscope JSON -> samples. The main thread is the one named MainThread, else the one whose tid
    is ``pid`` (on Linux the main thread's tid is the pid), else the first profile."""
    frames = [Frame(str(f.get("name", "?")), str(f.get("file") or ""), int(f.get("line") or 0))
              for f in doc["shared"]["frames"]]
    threads: list[tuple[str | None, str | None, list[tuple[tuple[Frame, ...], float]]]] = []
    for prof in doc.get("profiles", []):
        m = _PROFILE_NAME.match(str(prof.get("name", "")))
        tid, name = (m.group(1), m.group(2) or None) if m else (None, None)
        rows = []
        for idx, w in zip(prof.get("samples", []), prof.get("weights") or [0.0] * len(prof.get("samples", []))):
            stack = tuple(frames[i] for i in idx)
            while stack and not stack[0].file and (tm := _THREAD_FRAME.match(stack[0].function)):
                tid, name, stack = tid or tm.group(1), name or tm.group(2), stack[1:]
            rows.append((stack, float(w)))
        threads.append((tid, name, rows))
    main_idx = next((i for i, t in enumerate(threads) if t[1] == "MainThread"), None)
    if main_idx is None:
        main_idx = next((i for i, t in enumerate(threads) if pid is not None and t[0] == str(pid)), 0)
    out: list[Sample] = []
    for i, (tid, name, rows) in enumerate(threads):
        name = name or ("MainThread" if i == main_idx and tid else None)  # no `threading` import, no names
        label = f"{name} ({tid})" if name and tid else (f"thread {tid}" if tid else f"profile {i}")
        out += [Sample(label, stack, w, i == main_idx) for stack, w in rows]
    return tuple(out)


# ---- attribution ---------------------------------------------------------------------------------------------

def _split_lines(src: str, fn_name: str) -> dict[str, int]:
    try:
        fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == fn_name)
    except (StopIteration, SyntaxError, ValueError):
        return {}
    body = list(enumerate(src.splitlines()[fn.lineno - 1:fn.end_lineno], start=fn.lineno))
    read = next((n for n, t in body if re.search(r"\[\s*\.\.\.\s*\]", t)), None)
    conv = next((n for n, t in body if ".to(" in t), None)
    return {"read": read, "convert": conv} if read and conv else {}


@lru_cache(maxsize=1)
def materialize_lines() -> dict[str, dict[str, int]]:
    """{file suffix: {"read": line, "convert": line}}, read as source text: importing core_model_loading would
    import torch; the top-level package's spec locates it without importing anything."""
    out: dict[str, dict[str, int]] = {}
    for suffix, fn_name in MATERIALIZE_SOURCES:
        pkg, rel = suffix.split("/", 1)
        try:
            spec = None if pkg == "probes" else importlib.util.find_spec(pkg)
            base = ROOT / pkg if pkg == "probes" else Path(list(spec.submodule_search_locations or [])[0])
            lines = _split_lines((base / rel).read_text(), fn_name)
        except (OSError, ImportError, ValueError, IndexError, AttributeError):
            continue
        if lines:
            out[suffix] = lines
    return out


def _named(qualname: str, key: str) -> bool:
    return qualname == key or qualname.endswith("." + key)


def matcher(phase_map: Iterable[tuple[str, str]]) -> Callable[[str], str | None]:
    """qualname -> phase or None (memoized: a profile repeats a few thousand distinct names many times)."""
    table = tuple(phase_map)
    return lru_cache(maxsize=None)(lambda q: next((ph for key, ph in table if _named(q, key)), None))


def phase_path(sample: Sample, match: Callable[[str], str | None], lines: Mapping[str, Mapping[str, int]]) -> str:
    """Phases of the mapped frames root->leaf joined by '/' (a phase repeated by nested calls counts once);
    materialize work is ``load/weights/materialize`` (+ ``/read`` or ``/convert`` when the copy's line says)."""
    parts: list[str] = []
    anchored, prev = False, ""
    for f in sample.stack:
        if not anchored:
            ph = match(f.function)
            if ph is None and prev == INSTANTIATE[0] and f.function.endswith(".__init__"):
                ph = INSTANTIATE[1]
            prev = f.function
            if ph and (not parts or parts[-1] != ph):
                parts.append(ph)
            if any(_named(f.function, a) for a in MATERIALIZE_ANCHORS):
                anchored = True
                if not parts:  # a pool thread: its own stack says nothing of the phase it serves
                    parts = list(WORKER_CONTEXT)
                elif parts[-1] != WORKER_CONTEXT[-1]:
                    parts.append(WORKER_CONTEXT[-1])
        if anchored:
            split = next((k for suf, ln in lines.items() if f.file.endswith(suf)
                          for k, n in ln.items() if n == f.line), None)
            if split:
                parts.append(split)
                break
    path = "/".join(parts) or UNATTRIBUTED
    return path if sample.main else path + WORKERS


def is_user_file(file: str, internal_roots: Iterable[str] = DEFAULT_INTERNAL_ROOTS,
                 user_roots: Iterable[str] = DEFAULT_USER_ROOTS) -> bool:
    """User code: not the stdlib, not site-/dist-packages, not loadprof's own packages (examples excepted)."""
    if not file or file.startswith("<"):
        return False
    under = lambda roots: any(file == r or file.startswith(r.rstrip("/") + "/") for r in roots)  # noqa: E731
    if under(user_roots):
        return True
    if under(internal_roots) or under((sysconfig.get_paths()["stdlib"],)):
        return False
    return not any(p in ("site-packages", "dist-packages") for p in Path(file).parts)


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in file:
            return file.split(marker, 1)[1]
    for prefix in (sysconfig.get_paths()["stdlib"].rstrip("/") + "/", str(ROOT) + "/"):
        if file.startswith(prefix):
            return file[len(prefix):]
    return file


def def_line(file: str, qualname: str, seen_line: int) -> int:
    """The ``def`` line of the function (searched upward from a line seen inside it), else the line seen."""
    name = qualname.rsplit(".", 1)[-1]
    if name.startswith("<"):
        return seen_line
    pat = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*[(\[]")
    lines = linecache.getlines(file)
    return next((n for n in range(min(seen_line, len(lines)), 0, -1) if pat.match(lines[n - 1])), seen_line)


def _r(x: float) -> float:
    return round(x, 6)


def _tally(samples: list[Sample], keep: Callable[[Frame], bool]) -> tuple[list[_Key], Counter, Counter, dict, dict]:
    """Per function (qualname, file) among the kept frames: inclusive (anywhere on the stack, once per sample)
    and self (the deepest kept frame) counts, smallest line seen, lines of its self samples. Ranked by self."""
    incl: Counter = Counter()
    self_c: Counter = Counter()
    first: dict[_Key, int] = {}
    hot: dict[_Key, Counter] = defaultdict(Counter)
    for s in samples:
        kept = [f for f in s.stack if keep(f)]
        for f in kept:
            first[(f.function, f.file)] = min(first.get((f.function, f.file), f.line), f.line)
        incl.update({(f.function, f.file) for f in kept})
        if kept:
            self_c[(kept[-1].function, kept[-1].file)] += 1
            hot[(kept[-1].function, kept[-1].file)][kept[-1].line] += 1
    return sorted(incl, key=lambda k: (-self_c[k], -incl[k], k)), incl, self_c, first, hot


def _top(samples: list[Sample], n: int) -> list[dict[str, Any]]:
    ranked, incl, self_c, first, _ = _tally(samples, lambda f: True)
    total, out = len(samples) or 1, []
    for k in ranked[:n]:
        line = def_line(k[1], k[0], first[k])
        out.append({"function": f"{k[0]} ({_short(k[1])}:{line})", "name": k[0], "file": k[1], "line": line,
                    "self_samples": self_c[k], "inclusive_samples": incl[k],
                    "self_share": _r(self_c[k] / total), "inclusive_share": _r(incl[k] / total)})
    return out


def _user_functions(load: list[Sample], own: list[bool], is_user: Callable[[str], bool], interval: float,
                    n: int) -> list[dict]:
    """self_user: the function is the deepest user frame (its own time, or library code it called directly).

    own: of those, the samples outside every named library loading phase (the sample's phase is plain ``load``):
    a thin wrapper around from_pretrained has a large self_user but almost no own time, since transformers'
    pipeline underneath it is attributed to its phases. Ranked by own, then self_user.
    """
    keep = lambda f: is_user(f.file)  # noqa: E731
    ranked, incl, self_u, first, hot = _tally(load, keep)
    _, _, own_u, _, own_hot = _tally([s for s, o in zip(load, own) if o], keep)
    ranked = sorted(ranked, key=lambda k: (-own_u[k], -self_u[k], -incl[k], k))
    total = len(load) or 1
    return [{"name": k[0], "file": k[1], "line": def_line(k[1], k[0], first[k]),
             "own_samples": own_u[k], "own_s": _r(own_u[k] * interval), "own_share_of_load": _r(own_u[k] / total),
             "self_user_samples": self_u[k], "inclusive_samples": incl[k],
             "self_user_s": _r(self_u[k] * interval), "inclusive_s": _r(incl[k] * interval),
             "share_of_load": _r(self_u[k] / total), "inclusive_share_of_load": _r(incl[k] / total),
             "hottest_line": (own_hot[k] or hot[k]).most_common(1)[0][0] if hot[k] else None}
            for k in ranked[:n]]


def attribute(samples: Iterable[Sample], phase_map: Iterable[tuple[str, str]] = DEFAULT_PHASE_MAP,
              internal_roots: Iterable[str] = DEFAULT_INTERNAL_ROOTS, *,
              user_roots: Iterable[str] = DEFAULT_USER_ROOTS, rate_hz: float | None = None,
              duration_s: float | None = None, top_n: int = 20) -> dict[str, Any]:
    """Samples -> phases, top functions, user functions (JSON-ready). Seconds are samples x interval (1/rate,
    else the smallest weight); shares are of the main thread's *busy* samples: idle stacks are not recorded."""
    samples = list(samples)
    interval = 1.0 / rate_hz if rate_hz else min((s.weight_s for s in samples if s.weight_s > 0), default=0.0)
    internal, users = tuple(internal_roots), tuple(user_roots)
    is_user = lru_cache(maxsize=None)(lambda f: is_user_file(f, internal, users))
    match, lines = matcher(phase_map), materialize_lines()
    paths = [phase_path(s, match, lines) for s in samples]
    main = [s for s in samples if s.main]
    n_main = len(main) or 1

    phases: dict[str, dict[str, Any]] = {}
    for p, c in sorted(Counter(p for s, p in zip(samples, paths) if s.main).items()):
        parts = p.split("/")
        for k in range(1, len(parts) + 1):  # every prefix gets the inclusive count
            node = phases.setdefault("/".join(parts[:k]), {"samples": 0, "inclusive_samples": 0})
            node["inclusive_samples"] += c
        phases[p]["samples"] = c
    for node in phases.values():
        node.update(seconds=_r(node["samples"] * interval), share_of_main=_r(node["samples"] / n_main),
                    inclusive_s=_r(node["inclusive_samples"] * interval),
                    inclusive_share_of_main=_r(node["inclusive_samples"] / n_main))
    by_path: dict[str, list[str]] = defaultdict(list)  # worker-thread path -> thread of each sample
    for s, p in zip(samples, paths):
        if not s.main:
            by_path[p].append(s.thread)
    workers = {p: {"samples": len(t), "busy_s_summed_over_threads": _r(len(t) * interval), "threads": len(set(t))}
               for p, t in sorted(by_path.items())}

    load_pairs = [(s, p) for s, p in zip(samples, paths) if s.main and (p == "load" or p.startswith("load/"))]
    load = [s for s, _ in load_pairs]
    # own work: outside transformers' named loading steps, and not inside from_pretrained's own body either
    own = [p == "load" and not any(f.function.endswith("from_pretrained") for f in smp.stack)
           for smp, p in load_pairs]
    notes = ["idle stacks (sleeping, blocked in I/O, waiting for the GIL) are not recorded: shares are of the "
             "main thread's busy samples, not of wall time",
             "worker-thread seconds are summed over threads and overlap the main thread's time"]
    if not lines:
        notes.append("_materialize_copy's read/convert lines not found in the installed transformers: "
                     "materialize time is not split")
    if samples and not main:
        notes.append("no main thread identified")
    main_threads = {s.thread for s in main}
    return {
        "rate_hz": rate_hz, "interval_s": _r(interval), "duration_s": None if duration_s is None else _r(duration_s),
        "samples_total": len(samples), "main_thread_samples": len(main), "load_samples": len(load),
        "threads": [{"thread": t, "main": t in main_threads, "samples": c, "sampled_s": _r(c * interval)}
                    for t, c in Counter(s.thread for s in samples).most_common()],
        "materialize_lines": {k: dict(v) for k, v in lines.items()},
        "phases": phases, "worker_threads": workers,
        "top_functions": {"main_thread": _top(main, top_n), "all_threads": _top(samples, top_n)},
        "user_functions": _user_functions(load, own, is_user, interval, top_n),
        "notes": notes,
    }
