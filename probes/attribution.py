"""Where the wall time went: the worker's samples attributed to phases, library areas and the user's own code,
running or waiting (and on what).

Samples come from loadprof.probes.stacks: one per thread-state reading, weighted by the time since that
thread's previous reading (so seconds are seconds of wall time, not counts times a nominal interval), with the
kernel's state (running, sleep, lock, gil, disk, socket...) and py-spy's stack at that moment. A sample's phase
is the deepest phase of the trial's phase tree open at its time; without times (hand-built profiles), the
phase of the deepest worker step or loading step on its stack. User code is any frame outside the stdlib,
site-packages and loadprof itself (loadprof's examples count as user code: they stand in for users' loaders).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sysconfig
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from loadprof.core.phases import PhaseTiming
from loadprof.core.probe_registry import WORKER_STEP_PHASES
from loadprof.probes import memjoin
from loadprof.probes.callees import Breakdown, def_line, enclosing as _enclosing
from loadprof.probes.load_phases import LOAD_TARGETS
from loadprof.probes.stacks import Frame, Sample

ROOT = Path(__file__).resolve().parents[1]  # the loadprof checkout / install root
#: loadprof's own code is never user code, but strategies/examples/ is (its loaders stand in for users')
#: (function qualname, phase): the worker's step functions (the table the worker opens its phases by) and the
#: loading steps the phases probe hooks; used only for samples without times
DEFAULT_PHASE_MAP: tuple[tuple[str, str], ...] = WORKER_STEP_PHASES + tuple(
    (target.split(":", 1)[1], phase) for phase, target in LOAD_TARGETS)
DEFAULT_INTERNAL_ROOTS: tuple[str, ...] = tuple(str(ROOT / d) for d in ("profiler", "probes", "reports", "strategies",
                                                                       "analysis"))
DEFAULT_USER_ROOTS: tuple[str, ...] = (str(ROOT / "strategies" / "examples"),)
MATERIALIZE_ANCHORS = ("spawn_materialize.<locals>._job", "_materialize_copy")
MATERIALIZE_SOURCES = (("transformers/core_model_loading.py", "_materialize_copy"), ("probes/load_phases.py", "_timed_copy"))
WORKER_CONTEXT = ("load", "weights", "materialize")
INSTANTIATE = ("PreTrainedModel.from_pretrained", "instantiate")
UNATTRIBUTED = "(unattributed)"
WORKERS = " [worker threads]"
#: library areas by file path (first match wins); the deepest frame of a sample names its area
AREAS: tuple[tuple[str, str], ...] = (
    ("transformers/generation/logits_process", "logits processing"),
    ("transformers/generation/stopping_criteria", "stopping criteria"),
    ("transformers/generation/streamers", "streamer"), ("transformers/generation/", "generation utils"),
    ("transformers/cache_utils", "cache"), ("transformers/integrations/sdpa_attention", "attention"),
    ("transformers/integrations/flash_attention", "attention"), ("transformers/masking_utils", "attention masks"),
    ("tokenization", "tokenizer"), ("tokenizers/", "tokenizer"), ("accelerate/hooks", "accelerate hooks"),
    ("accelerate/", "accelerate"), ("safetensors/", "safetensors"), ("transformers/models/", "model code"),
    ("transformers_modules/", "model code (remote)"), ("transformers/", "transformers"), ("torch/", "torch ops"), ("bitsandbytes/", "bitsandbytes"))
_Key = tuple[str, str]  # (qualname, file)
CPU_WAIT = "cpu"  # runnable, not on a CPU: the part of a reading's gap the run queue held the thread


def _r(x: float) -> float:
    return round(x, 6)


def _share(seconds: float, wall: float | None) -> float | None:
    """Of the phase's wall time. A reading's weight is the gap before it, so near a phase edge up to one reading
    period lands on the far side: a share is capped at 1 and good to about one period over the phase's wall."""
    return _r(min(1.0, seconds / wall)) if wall else None


# ---- phases of a sample ----------------------------------------------------------------------------------------

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
    """{file suffix: {"read": line, "convert": line}}, read as source text (importing core_model_loading would
    import torch; the package's spec locates it without importing anything)."""
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


def _materialize_split(stack: Sequence[Frame], lines: Mapping[str, Mapping[str, int]]) -> str | None:
    anchored = False
    for f in stack:
        anchored = anchored or any(_named(f.function, a) for a in MATERIALIZE_ANCHORS)
        if anchored:
            split = next((k for suf, ln in lines.items() if f.file.endswith(suf) for k, n in ln.items() if n == f.line),
                         None)
            if split:
                return split
    return None


def frame_path(sample: Sample, match: Callable[[str], str | None], lines: Mapping[str, Mapping[str, int]]) -> str:
    """Without times: phases of the mapped frames root->leaf joined by '/'; materialize work is
    ``load/weights/materialize`` (+ ``/read`` or ``/convert`` when the copy's line says)."""
    parts: list[str] = []
    prev = ""
    for f in sample.stack:
        ph = match(f.function)
        if ph is None and prev == INSTANTIATE[0] and f.function.endswith(".__init__"):
            ph = INSTANTIATE[1]
        prev = f.function
        if ph and (not parts or parts[-1] != ph):
            parts.append(ph)
        if any(_named(f.function, a) for a in MATERIALIZE_ANCHORS):
            parts = list(WORKER_CONTEXT) if not parts else parts + ([] if parts[-1] == WORKER_CONTEXT[-1]
                                                                     else [WORKER_CONTEXT[-1]])
            break
    split = _materialize_split(sample.stack, lines) if parts[-1:] == [WORKER_CONTEXT[-1]] else None
    path = "/".join(parts + ([split] if split else [])) or UNATTRIBUTED
    return path if sample.main else path + WORKERS


def time_path(t_s: float, phases: Sequence[PhaseTiming]) -> str | None:
    """The deepest phase open at ``t_s`` ('load/weights/materialize'), None outside every phase."""
    parts: list[str] = []
    level: Sequence[PhaseTiming] = phases
    while True:
        hit = next((p for p in level if p.start_s <= t_s < p.end_s), None)
        if hit is None:
            return "/".join(parts) or None
        parts.append(hit.name)
        level = hit.children


def sample_path(s: Sample, phases: Sequence[PhaseTiming], match: Callable[[str], str | None],
                lines: Mapping[str, Mapping[str, int]]) -> str:
    if s.t_s is None or not phases:
        return frame_path(s, match, lines)
    path = time_path(s.t_s, phases) or UNATTRIBUTED
    if path.endswith("/materialize"):
        split = _materialize_split(s.stack, lines)
        path += f"/{split}" if split else ""
    return path if s.main else path + WORKERS


# ---- code: user functions, library areas -------------------------------------------------------------------------

def is_user_file(file: str, internal_roots: Iterable[str] = DEFAULT_INTERNAL_ROOTS,
                 user_roots: Iterable[str] = DEFAULT_USER_ROOTS) -> bool:
    """User code: not the stdlib, not site-/dist-packages, not loadprof's own packages (examples excepted)."""
    if not file.strip() or file.startswith("<") or "\x00" in file or "/transformers_modules/" in file:
        return False  # transformers_modules: a model's own remote code, reported as model code
    under = lambda roots: any(file == r or file.startswith(r.rstrip("/") + "/") for r in roots)  # noqa: E731
    if under(user_roots):
        return True
    if under(internal_roots) or under((sysconfig.get_paths()["stdlib"],)):
        return False
    return not any(p in ("site-packages", "dist-packages") for p in Path(file).parts)


def _internal(file: str) -> bool:
    """loadprof's own frames (a probe's hook around a library function): never the call a user made."""
    return any(file.startswith(r + "/") for r in DEFAULT_INTERNAL_ROOTS)


def area_of(file: str, user: bool) -> str:
    if user:
        return "your code"
    if not file:
        return "native / not sampled"
    if file.startswith(sysconfig.get_paths()["stdlib"]):
        return "python stdlib"
    if any(p in ("site-packages", "dist-packages") for p in Path(file).parts):
        return next((a for key, a in AREAS if key in file), "other libraries")
    if _internal(file):
        return "loadprof"
    return next((a for key, a in AREAS if key in file), "other libraries")


def short_file(file: str) -> str:
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in file:
            return file.split(marker, 1)[1]
    for prefix in (sysconfig.get_paths()["stdlib"].rstrip("/") + "/", str(ROOT) + "/"):
        if file.startswith(prefix):
            return file[len(prefix):]
    return file


class _Acc:
    """Seconds split by state, plus sample count and the lines seen (for one function or one phase)."""

    __slots__ = ("seconds", "by_state", "samples", "lines", "first_line")

    def __init__(self) -> None:
        self.seconds, self.samples, self.first_line = 0.0, 0, 0
        self.by_state: Counter = Counter()
        self.lines: Counter = Counter()

    def add(self, s: Sample, line: int = 0) -> None:
        self.seconds += s.weight_s
        self.samples += 1
        self.by_state[s.state] += s.weight_s - s.cpu_wait_s
        self.by_state[CPU_WAIT] += s.cpu_wait_s
        if line:
            self.lines[line] += s.weight_s
            self.first_line = min(self.first_line or line, line)

    def states(self) -> dict[str, Any]:
        """Seconds running, waiting (by kind) and waiting for a CPU another process held: the last is neither the
        code's work nor its wait, only the machine's business (0 on a quiet machine)."""
        waits = {k: _r(v) for k, v in self.by_state.most_common() if k not in ("running", "unknown", CPU_WAIT)}
        return {"running_s": _r(self.by_state["running"]), "waiting_s": _r(sum(waits.values())), "waits": waits,
                "unknown_state_s": _r(self.by_state["unknown"]), "cpu_wait_s": _r(self.by_state[CPU_WAIT])}


def _group(path: str) -> tuple[str, str | None]:
    """'generate/decode' -> ('generate', 'decode'): a top-level phase and the generate step it is in, if any."""
    top = path.split("/", 1)[0]
    sub = next((k for k in ("decode", "prefill") if f"/{k}" in path), None)
    return top, sub


def phase_walls(phases: Sequence[PhaseTiming]) -> dict[str, float]:
    """'/'-path -> summed wall seconds of every phase node at that path (a name repeats across calls)."""
    out: dict[str, float] = defaultdict(float)

    def walk(nodes: Sequence[PhaseTiming], prefix: str) -> None:
        for p in nodes:
            path = f"{prefix}{p.name}"
            out[path] += p.duration_s
            walk(p.children, path + "/")
    walk(phases, "")
    return dict(out)


def _deepest(stack: Sequence[Frame], keep: Callable[[Frame], bool]) -> Frame | None:
    return next((f for f in reversed(stack) if keep(f)), None)


def _fn(f: Frame) -> str:
    return f"{f.function} ({short_file(f.file)}:{f.line})"


def _phase_table(main: list[tuple[Sample, str]], walls: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per phase path (main thread): its own seconds split by state, inclusive seconds, share of the phase's wall,
    and the three functions seen most there (what ran, or waited, in time no child phase explains)."""
    own: dict[str, _Acc] = defaultdict(_Acc)
    incl: Counter = Counter()
    tops: dict[str, Counter] = defaultdict(Counter)
    for s, p in main:
        own[p].add(s)
        parts = p.split("/")
        for k in range(1, len(parts) + 1):
            incl["/".join(parts[:k])] += s.weight_s
        leaf = s.stack[-1] if s.stack else None
        tops[p][(_fn(leaf) if leaf else "(no Python stack)", s.state)] += s.weight_s
    out = {}
    for p in sorted(set(own) | set(incl)):
        acc = own.get(p) or _Acc()
        wall = walls.get(p)
        out[p] = {"seconds": _r(acc.seconds), "samples": acc.samples, "inclusive_s": _r(incl[p]), **acc.states(),
                  "wall_s": _r(wall) if wall is not None else None,
                  "share_of_phase": _share(acc.seconds, wall),
                  "top": [{"function": fn, "state": st, "seconds": _r(v)} for (fn, st), v in tops[p].most_common(3)]}
    return out


def _areas(main: list[tuple[Sample, str]], is_user: Callable[[str], bool]) -> dict[str, dict[str, float]]:
    """Per top-level phase (and its prefill / decode): seconds by library area of the deepest frame."""
    out: dict[str, Counter] = defaultdict(Counter)
    for s, p in main:
        leaf = s.stack[-1] if s.stack else None
        area = area_of(leaf.file, is_user(leaf.file)) if leaf else "native / not sampled"
        if s.state not in ("running", "unknown"):
            area = f"waiting: {s.state}"
        top, sub = _group(p)
        for group in (top, f"{top}/{sub}") if sub else (top,):
            out[group][area] += s.weight_s - s.cpu_wait_s
            if s.cpu_wait_s:
                out[group][f"waiting: {CPU_WAIT} (another process)"] += s.cpu_wait_s
    return {g: {a: _r(v) for a, v in c.most_common()} for g, c in out.items()}


def _user_functions(main: list[tuple[Sample, str]], walls: Mapping[str, float], is_user: Callable[[str], bool],
                    n: int, memory: Mapping[str, Sequence[tuple[float, int]]] | None = None,
                    phase_end: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The user's functions per top-level phase, by the samples whose deepest user frame they are: their own
    time plus the library code they called, running or waiting. ``own_s``: the part outside every named
    sub-phase (in the load: outside transformers' loading steps, so a thin wrapper around from_pretrained is
    not blamed for the load itself). ``decode_s``: the part inside generate's decode steps with no transformers
    frame under it (a logits processor's own work, not the model's forward under a wrapped generate).
    ``callees``: the calls outside the user's files that held that time (loadprof.probes.callees), with the
    memory each added where a memory timeline is given (loadprof.probes.memjoin)."""
    acc: dict[tuple[_Key, str], _Acc] = defaultdict(_Acc)
    calls = Breakdown(is_user, _internal)
    timed: list[tuple[float, Any, tuple[str, int]]] = []
    own: Counter = Counter()
    decode: Counter = Counter()
    incl: Counter = Counter()
    for s, p in main:
        top, sub = _group(p)
        f = _deepest(s.stack, lambda fr: is_user(fr.file))
        if f is None:
            continue
        key = ((_enclosing(f.function), f.file), top)
        acc[key].add(s, f.line)
        own[key] += s.weight_s if p == top else 0.0
        at = s.stack.index(f)
        in_decode = sub == "decode" and not any("/transformers/" in fr.file or "transformers_modules" in fr.file
                                                for fr in s.stack[at + 1:])
        if in_decode:
            decode[key] += s.weight_s  # its own work per step, not transformers' forward called under a wrapper
        call = calls.add(key, s, at, p == top, in_decode)
        if s.t_s is not None:
            timed.append((s.t_s, key, call))
        for k in {(_enclosing(fr.function), fr.file) for fr in s.stack if is_user(fr.file)}:
            incl[(k, top)] += s.weight_s
    for kind, rows in (memory or {}).items():
        memjoin.join(calls, timed, rows, phase_end or {}, kind=kind)
    rows = []
    for key, a in acc.items():
        (name, file), top = key
        wall = walls.get(top)
        rows.append({"name": name, "file": file, "line": def_line(file, name, a.first_line), "phase": top,
                     "samples": a.samples, "seconds": _r(a.seconds), **a.states(), "own_s": _r(own[key]),
                     "inclusive_s": _r(incl[key]), "decode_s": _r(decode[key]),
                     "share_of_phase": _share(a.seconds, wall), "own_share_of_phase": _share(own[key], wall),
                     "share_of_decode": _share(decode[key], walls.get(f"{top}/decode")) if decode[key] else None,
                     "hottest_line": a.lines.most_common(1)[0][0] if a.lines else None,
                     "callees": calls.table(key)})
    rows.sort(key=lambda r: (-r["own_s"], -r["seconds"], r["name"]))
    per: Counter = Counter()
    return [r for r in rows if (per.update([r["phase"]]) or per[r["phase"]] <= n)]


def _top(samples: Iterable[Sample], n: int) -> list[dict[str, Any]]:
    acc: dict[_Key, _Acc] = defaultdict(_Acc)
    total = 0.0
    for s in samples:
        total += s.weight_s
        if s.stack:
            f = s.stack[-1]
            acc[(f.function, f.file)].add(s, f.line)
    ranked = sorted(acc.items(), key=lambda kv: (-kv[1].seconds, kv[0]))[:n]
    return [{"function": f"{k[0]} ({short_file(k[1])}:{def_line(k[1], k[0], a.first_line)})", "name": k[0],
             "file": k[1], "line": def_line(k[1], k[0], a.first_line), "seconds": _r(a.seconds),
             "samples": a.samples, **a.states(), "share": _r(a.seconds / total) if total else None}
            for k, a in ranked]


def attribute(samples: Iterable[Sample], phases: Sequence[PhaseTiming] = (), *, rate_hz: float | None = None,
              top_n: int = 20, notes: Iterable[str] = (),
              memory: Mapping[str, Sequence[tuple[float, int]]] | Sequence[tuple[float, int]] = ()) -> dict[str, Any]:
    """Samples -> phases, library areas, top functions and the user's functions (JSON-ready). Every figure is
    seconds of wall time (sample weights), split into running and waiting where thread states were read;
    ``memory``: the trial's (t_s, bytes) readings per kind (``anon`` RSS, ``cuda`` allocator; a bare sequence is
    anon), for the bytes each user call added."""
    memory = memory if isinstance(memory, Mapping) else {"anon": list(memory)}
    samples = list(samples)
    match, lines = matcher(DEFAULT_PHASE_MAP), materialize_lines()
    is_user = lru_cache(maxsize=None)(is_user_file)
    paths = [sample_path(s, phases, match, lines) for s in samples]
    main = [(s, p) for s, p in zip(samples, paths) if s.main]
    walls = phase_walls(phases)
    main_s = sum(s.weight_s for s, _ in main)
    workers: dict[str, dict[str, Any]] = {}
    for s, p in zip(samples, paths):
        if not s.main:
            w = workers.setdefault(p, {"seconds_summed_over_threads": 0.0, "threads": set()})
            w["seconds_summed_over_threads"] += s.weight_s
            w["threads"].add(s.thread)
    by_thread: dict[str, _Acc] = defaultdict(_Acc)
    for s in samples:
        by_thread[s.thread].add(s)
    main_threads = {s.thread for s, _ in main}
    states_known = any(s.state != "unknown" for s in samples)
    out_notes = list(notes) + ([] if states_known else
                               ["thread states were not read: running and waiting are not told apart"])
    if samples and not main:
        out_notes.append("no main thread identified")
    if not lines:
        out_notes.append("_materialize_copy's read/convert lines not found in the installed transformers: "
                         "materialize time is not split")
    return {
        "rate_hz": rate_hz, "samples_total": len(samples), "main_thread_samples": len(main),
        "main_thread_s": _r(main_s), "effective_rate_hz": _r(len(main) / main_s) if main_s else None,
        "states_known": states_known, "phase_source": "phase tree (time)" if phases and any(
            s.t_s is not None for s in samples) else "stack frames",
        "threads": [{"thread": t, "main": t in main_threads, "seconds": _r(a.seconds), "samples": a.samples,
                     **a.states()} for t, a in sorted(by_thread.items(), key=lambda kv: -kv[1].seconds)],
        "materialize_lines": {k: dict(v) for k, v in lines.items()},
        "phases": _phase_table(main, walls),
        "worker_threads": {p: {"seconds_summed_over_threads": _r(w["seconds_summed_over_threads"]),
                               "threads": len(w["threads"])} for p, w in sorted(workers.items())},
        "areas": _areas(main, is_user),
        "top_functions": {"main_thread": _top((s for s, _ in main), top_n), "all_threads": _top(samples, top_n)},
        "user_functions": _user_functions(main, walls, is_user, top_n, memory, {p.name: p.end_s for p in phases}),
        "notes": out_notes + ["worker-thread seconds are summed over threads and overlap the main thread's time"],
    }
