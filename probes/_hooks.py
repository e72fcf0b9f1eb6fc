"""Every monkeypatch a probe installs goes through a HookSet, which undoes them all.

Version-tolerant by design: a target that does not exist in the installed
transformers/accelerate is recorded in ``missing`` (the trial lists it in its
notes) and skipped, never a crash. ``active_hooks()`` lets tests assert that
nothing is left installed.

A target whose module is not imported yet is hooked when the library imports it (``_imports.when_imported``),
never imported here: importing ``transformers.modeling_utils`` to wrap it would do ahead of the load what the
user's first ``from_pretrained`` pays for. A target whose module is never imported is listed in ``missing``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import itertools
import sys
from typing import Any, Callable

from loadprof.probes import _imports

_ACTIVE: set[int] = set()
_INHERITED = object()  # marker: the patched name lived on a base class


def active_hooks() -> int:
    """How many HookSets still hold installed or deferred patches, plus 1 while the import watcher is still in
    ``sys.meta_path`` (0 after every probe stopped)."""
    return len(_ACTIVE) + int(_imports.watching())


def resolve(target: str) -> tuple[Any, str, Any]:
    """'pkg.mod:Class.attr' -> (owner object, attribute name, current value). Raises LookupError."""
    mod_name, _, attr_path = target.partition(":")
    try:
        owner: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise LookupError(f"module {mod_name} not importable: {e}") from e
    parts = attr_path.split(".")
    for p in parts[:-1]:
        if not hasattr(owner, p):
            raise LookupError(f"{mod_name}:{attr_path}: no attribute {p!r}")
        owner = getattr(owner, p)
    try:
        raw = inspect.getattr_static(owner, parts[-1])
    except AttributeError:
        raise LookupError(f"{mod_name}:{attr_path}: no attribute {parts[-1]!r}") from None
    return owner, parts[-1], raw


class HookSet:
    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []
        self._cleanups: list[Callable[[], None]] = []
        self._deferred: dict[int, tuple[str, Callable[[], None]]] = {}  # token -> (target, its canceller)
        self.installed: list[str] = []
        self._missing: list[str] = []
        self._tokens = itertools.count()

    @property
    def missing(self) -> list[str]:
        """Targets not hooked, with why: absent in this version, or their module was never imported."""
        return [*self._missing, *(f"{t} (its module was never imported)" for t, _ in self._deferred.values())]

    def wrap(self, target: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
        """Replace ``target`` by ``make_wrapper(original)``, now or, when its module is not imported yet, as soon
        as the library imports it. Handles functions, classmethods and staticmethods. False: not hookable."""
        module = target.partition(":")[0]
        if module in sys.modules:
            return self._install(target, make_wrapper)
        parent = module.rpartition(".")[0]
        if (not parent or parent in sys.modules) and importlib.util.find_spec(module) is None:  # imports nothing
            self._missing.append(f"{target} (module {module} not found)")
            return False
        token = next(self._tokens)

        def install(_: Any) -> None:  # runs inside the library's import, which must never fail because of it
            if self._deferred.pop(token, None) is not None:
                try:
                    self._install(target, make_wrapper)
                except Exception as e:  # noqa: BLE001 - recorded like any hook that could not be installed
                    self._missing.append(f"{target} (could not be wrapped: {type(e).__name__}: {e})")

        self._deferred[token] = (target, lambda: None)  # when_imported may install at once (imported meanwhile)
        cancel = _imports.when_imported(module, install)
        if token in self._deferred:
            self._deferred[token] = (target, cancel)
        _ACTIVE.add(id(self))
        return True

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on ``undo`` (before the patches are restored): what a probe installed other than a patch."""
        self._cleanups.append(fn)
        _ACTIVE.add(id(self))

    def _install(self, target: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
        try:
            owner, name, raw = resolve(target)
        except LookupError as e:
            self._missing.append(f"{target} ({e})")
            return False
        if isinstance(raw, classmethod):
            fn = raw.__func__
            new: Any = classmethod(functools.wraps(fn)(make_wrapper(fn)))
        elif isinstance(raw, staticmethod):
            fn = raw.__func__
            new = staticmethod(functools.wraps(fn)(make_wrapper(fn)))
        elif callable(raw):
            new = functools.wraps(raw)(make_wrapper(raw))
        else:
            self._missing.append(f"{target} (not callable)")
            return False
        had_own = name in vars(owner) if hasattr(owner, "__dict__") else True
        setattr(owner, name, new)
        self._undo.append((owner, name, raw if had_own else _INHERITED))
        self.installed.append(target)
        _ACTIVE.add(id(self))
        return True

    def undo(self) -> None:
        """Cancel deferred patches, run the cleanups, restore every patch, newest first; safe to call twice and on
        error paths."""
        for _, cancel in list(self._deferred.values()):
            cancel()
        self._deferred.clear()
        while self._cleanups:
            self._cleanups.pop()()
        while self._undo:
            owner, name, raw = self._undo.pop()
            if raw is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        _ACTIVE.discard(id(self))
