"""Out-of-process statistical sampling of a trial's worker with py-spy, and attribution of the samples.

Phase timing (probes/phases.py) says *how long* each step took; sampling says *where inside it* the time
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

from probes.phases import LOAD_TARGETS

PROFILE_NAME = "profile.speedscope.json"
LOG_NAME = "py-spy.log"
ROOT = Path(__file__).resolve().parents[1]  # the loadprof checkout / install root

#: (function qualname, phase). A frame matches when its qualname equals the key or ends with "." + key.
DEFAULT_PHASE_MAP: tuple[tuple[str, str], ...] = (
    ("import_stack", "import"), ("step_load", "load"), ("step_validate", "validate"),
    ("step_warmup", "warmup"), ("step_generate", "generate"),
) + tuple((target.split(":", 1)[1], phase) for phase, target in LOAD_TARGETS)
#: loadprof's own code is never user code, but strategies/examples/ is (its loaders stand in for users')
DEFAULT_INTERNAL_ROOTS: tuple[str, ...] = tuple(str(ROOT / d) for d in ("profiler", "probes", "reports", "strategies"))
DEFAULT_USER_ROOTS: tuple[str, ...] = (str(ROOT / "strategies" / "examples"),)
#: a frame of these marks materialize work (on transformers' ThreadPoolExecutor threads, or deferred on the
#: main thread); the line of a MATERIALIZE_SOURCES function under it tells reading (tensor[...]) from casting
#: (.to()). probes/phases.py swaps _materialize_copy for its own timed copy of the same two statements.
MATERIALIZE_ANCHORS = ("spawn_materialize.<locals>._job", "_materialize_copy")
MATERIALIZE_SOURCES = (("transformers/core_model_loading.py", "_materialize_copy"), ("probes/phases.py", "_timed_copy"))
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


def phase_path(sample: Sample, match: Callable[[str], str | None], lines: Mapping[str, Mapping[str, int]]) -> str:
    """Phases of the mapped frames root->leaf joined by '/' (a phase repeated by nested calls counts once);
    materialize work is ``load/weights/materialize`` (+ ``/read`` or ``/convert`` when the copy's line says)."""
    parts: list[str] = []
    anchored, prev = False, ""
    for f in sample.stack:
        if anchored:
            split = next((k for suf, ln in lines.items() if f.file.endswith(suf) for k, n in ln.items()
                          if n == f.line), None)
            if split:
                parts.append(split)
                break
            continue
        ph = match(f.function) or (INSTANTIATE[1] if prev == INSTANTIATE[0] and f.function.endswith(".__init__")
                                   else None)
        prev = f.function
        if ph and (not parts or parts[-1] != ph):
            parts.append(ph)
        if match(f.function, MATERIALIZE_ANCHORS):
            anchored = True
            if not parts:  # a pool thread: its own stack says nothing of the phase it serves
                parts = list(WORKER_CONTEXT)
            elif parts[-1] != WORKER_CONTEXT[-1]:
                parts.append(WORKER_CONTEXT[-1])
            if f.function.endswith(MATERIALIZE_ANCHORS[1]):  # its own line may say read/convert
                split = next((k for suf, ln in lines.items() if f.file.endswith(suf) for k, n in ln.items()
                              if n == f.line), None)
                if split:
                    parts.append(split)
                    break
    path = "/".join(parts) or UNATTRIBUTED
    return path if sample.main else path + WORKERS
