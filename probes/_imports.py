"""Watching imports as they happen: one meta-path finder, installed only while someone needs it.

Two users. ``HookSet`` defers a hook whose module is not imported yet (``when_imported``): a probe must not
import ``transformers.modeling_utils`` ahead of the load just to wrap it, since the user's first
``from_pretrained`` pays that import. ``ImportTimer`` times, on one thread and only while it is active, each
*outermost* import (one that no other import of that thread encloses) as a phase of its own; the imports
it pulls in nest inside it and are never counted twice.

How: ``find_spec`` asks the finders after it for the real spec and, for a module it cares about, puts a
proxy in front of the spec's loader. The proxy delegates everything, opens the timed phase at
``create_module`` (an extension module's work happens there) and closes it at the end of ``exec_module``,
runs the deferred callbacks once the module is complete, and puts the real loader back on the spec and the
module, so nothing outlives the import. An outermost import the timer ``ignores`` (by the module's name, or
by who asked for it: the nearest caller outside the import machinery) is still tracked, so the imports it
pulls in are nested and untimed, but opens no phase. The finder removes itself from ``sys.meta_path`` when no
timer is active and no callback is pending.
"""

from __future__ import annotations

import sys
import threading
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType
from typing import Any, Callable, ContextManager, Sequence

from loadprof.core.payloads.imports import TimedImport
from loadprof.core.phases import LAZY_IMPORT_PHASE

#: at most this many outermost imports are listed per timer (their phases are all kept)
MAX_RECORDS = 100
#: modules whose frames are the import machinery itself, skipped when looking for who asked for an import
_MACHINERY = frozenset({"importlib", "importlib._bootstrap", "importlib._bootstrap_external", __name__})


def importer(frame: FrameType | None) -> str:
    """The module of the nearest frame outside the import machinery: who asked for this import."""
    while frame is not None and frame.f_globals.get("__name__") in _MACHINERY:
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "")) if frame is not None else ""


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)



class ImportTimer:
    """Times the outermost imports of one thread as phases named ``phase_name`` (while ``active``), except those
    of modules under ``ignore_modules`` or asked for by code under ``ignore_callers`` (module-name prefixes).

    ``active_when``, where given, replaces ``active`` and the thread: a program's loads run in whatever thread it
    chooses, so there the phases say when and where an import is the workload's (one thread at a time)."""

    def __init__(self, open_phase: Callable[[str], ContextManager[str]], now_ns: Callable[[], int],
                 phase_name: str = LAZY_IMPORT_PHASE, thread_id: int | None = None, ignore_modules: Sequence[str] = (),
                 ignore_callers: Sequence[str] = (), active_when: Callable[[], bool] | None = None) -> None:
        self._open = open_phase
        self._active_when = active_when
        self._now = now_ns
        self.phase_name = phase_name
        self.ignore_modules, self.ignore_callers = tuple(ignore_modules), tuple(ignore_callers)
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.active = False
        self.depth = 0
        self.records: list[TimedImport] = []
        self.count = 0
        self.total_ns = 0
        self._open_cm: ContextManager[str] | None = None
        self._path = ""
        self._t0 = 0

    def wants(self) -> bool:
        """Would an import starting now on this thread be timed (active, this thread, not inside another)?"""
        if self._active_when is not None:
            return self.depth == 0 and self._active_when()
        return self.active and self.depth == 0 and threading.get_ident() == self.thread_id

    def ignores(self, module: str, caller: str) -> bool:
        """Is this outermost import not the workload's (loadprof's own module, or asked for by loadprof's code)?"""
        return _under(module, self.ignore_modules) or _under(caller, self.ignore_callers)

    def begin(self, module: str, timed: bool = True) -> bool:
        """An import of ``module`` starts; True when it is an outermost one (untimed unless ``timed``)."""
        if not self.wants():
            return False
        self.depth = 1  # before the phase opens: what the phase's listeners import is nested, not timed
        if timed:
            cm = self._open(self.phase_name)
            self._path = cm.__enter__() or ""
            self._open_cm, self._t0 = cm, self._now()
        return True

    def end(self, module: str) -> None:
        """The outermost import of ``module`` ended (done or failed): close its phase, if any, and record it."""
        t1 = self._now()
        cm, self._open_cm = self._open_cm, None
        try:
            if cm is not None:
                cm.__exit__(None, None, None)
        finally:
            self.depth = 0
            if cm is not None:
                self.count += 1
                self.total_ns += t1 - self._t0
                if len(self.records) < MAX_RECORDS:
                    self.records.append(TimedImport(module, self._path, (t1 - self._t0) / 1e9))


class _LoaderProxy:
    """Stands in for a spec's loader for one import: times it, runs the callbacks, restores the real loader."""

    def __init__(self, inner: Any, spec: ModuleSpec, watcher: "_Watcher", timed: bool) -> None:
        self._inner, self._spec, self._watcher = inner, spec, watcher
        self._wants_time = timed  # decided where the import was asked for (find_spec sees the caller)
        self._timed = False

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, get_resource_reader, ...
        return getattr(self._inner, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        timer = self._watcher.timer
        self._timed = timer is not None and timer.begin(spec.name, self._wants_time)
        try:
            return self._inner.create_module(spec)
        except BaseException:
            self._finish(None, ok=False)
            raise

    def exec_module(self, module: ModuleType) -> None:
        ok = False
        try:
            self._inner.exec_module(module)
            ok = True
        finally:
            self._finish(module, ok)

    def _finish(self, module: ModuleType | None, ok: bool) -> None:
        name = self._spec.name
        self._spec.loader = self._inner
        for m in (module, sys.modules.get(name)):
            if m is not None and getattr(m, "__loader__", None) is self:
                m.__loader__ = self._inner
        try:
            if self._timed:
                self._timed = False
                timer = self._watcher.timer
                if timer is not None:
                    timer.end(name)
        finally:
            if ok:
                self._watcher.imported(name, sys.modules.get(name, module))


class _Watcher:
    """The meta-path finder; one per process, in ``sys.meta_path`` only while it has work."""

    def __init__(self) -> None:
        self.timer: ImportTimer | None = None
        self.pending: dict[str, list[Callable[[ModuleType], None]]] = {}
        self._lock = threading.RLock()
        self._local = threading.local()

    # finder protocol
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        timer = self.timer
        if not (name in self.pending or (timer is not None and timer.wants())):
            return None
        if getattr(self._local, "finding", False):
            return None
        self._local.finding = True
        try:
            spec = self._find_elsewhere(name, path, target)
        finally:
            self._local.finding = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            timed = timer is not None and timer.wants() and not timer.ignores(name, importer(sys._getframe(1)))
            spec.loader = _LoaderProxy(spec.loader, spec, self, timed)
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached here (importlib.invalidate_caches calls every finder's)."""

    def _find_elsewhere(self, name: str, path: Sequence[str] | None, target: ModuleType | None) -> ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                return spec
        return None

    # users
    def imported(self, name: str, module: ModuleType | None) -> None:
        with self._lock:
            callbacks = self.pending.pop(name, [])
            self._refresh()
        for cb in callbacks:
            cb(module)  # type: ignore[arg-type]

    def add_callback(self, module: str, cb: Callable[[ModuleType], None]) -> None:
        with self._lock:
            self.pending.setdefault(module, []).append(cb)
            self._refresh()

    def remove_callback(self, module: str, cb: Callable[[ModuleType], None]) -> None:
        with self._lock:
            cbs = self.pending.get(module, [])
            if cb in cbs:
                cbs.remove(cb)
            if not cbs:
                self.pending.pop(module, None)
            self._refresh()

    def set_timer(self, timer: ImportTimer | None) -> None:
        with self._lock:
            if timer is not None and self.timer is not None and self.timer is not timer:
                raise RuntimeError("an import timer is already installed")
            self.timer = timer
            self._refresh()

    def _refresh(self) -> None:
        needed = bool(self.pending) or self.timer is not None
        present = self in sys.meta_path
        if needed and not present:
            sys.meta_path.insert(0, self)
        elif present and not needed:
            sys.meta_path.remove(self)

    @property
    def installed(self) -> bool:
        return self in sys.meta_path


WATCHER = _Watcher()


def when_imported(module: str, cb: Callable[[ModuleType], None]) -> Callable[[], None]:
    """Call ``cb(module)`` once ``module`` has been imported (now, if it already is); returns a canceller."""
    if module in sys.modules:
        cb(sys.modules[module])
        return lambda: None
    WATCHER.add_callback(module, cb)
    return lambda: WATCHER.remove_callback(module, cb)


def start_timer(timer: ImportTimer) -> Callable[[], None]:
    """Install ``timer`` (one at a time); returns what removes it again."""
    WATCHER.set_timer(timer)

    def stop() -> None:
        timer.active = False
        if WATCHER.timer is timer:
            WATCHER.set_timer(None)

    return stop


def watching() -> bool:
    """Is the finder still in ``sys.meta_path`` (a timer installed or a callback pending)?"""
    return WATCHER.installed
