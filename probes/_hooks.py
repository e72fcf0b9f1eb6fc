"""Every monkeypatch a probe installs goes through a HookSet, which undoes them all.

Version-tolerant by design: a target that does not exist in the installed
transformers/accelerate is recorded in ``missing`` (the trial lists it in its
notes) and skipped, never a crash. ``active_hooks()`` lets tests assert that
nothing is left installed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable

_ACTIVE: set[int] = set()
_INHERITED = object()  # marker: the patched name lived on a base class


def active_hooks() -> int:
    """How many HookSets still hold installed patches (0 after every probe stopped)."""
    return len(_ACTIVE)


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
        self.installed: list[str] = []
        self.missing: list[str] = []

    def wrap(self, target: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
        """Replace ``target`` by ``make_wrapper(original)``. Handles functions, classmethods and staticmethods."""
        try:
            owner, name, raw = resolve(target)
        except LookupError as e:
            self.missing.append(f"{target} ({e})")
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
            self.missing.append(f"{target} (not callable)")
            return False
        had_own = name in vars(owner) if hasattr(owner, "__dict__") else True
        setattr(owner, name, new)
        self._undo.append((owner, name, raw if had_own else _INHERITED))
        self.installed.append(target)
        _ACTIVE.add(id(self))
        return True

    def undo(self) -> None:
        """Restore every patch, newest first; safe to call twice and on error paths."""
        while self._undo:
            owner, name, raw = self._undo.pop()
            if raw is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        _ACTIVE.discard(id(self))
