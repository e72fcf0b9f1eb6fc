from __future__ import annotations

import json

from loadprof.probes._hooks import HookSet, active_hooks


class Base:
    @classmethod
    def make(cls, x):
        return ("made", cls.__name__, x)

    @staticmethod
    def twice(x):
        return 2 * x

    def plain(self, x):
        return x + 1


class Child(Base):
    pass


def _counting(calls):
    def make(fn):
        def wrapped(*a, **k):
            calls.append(fn.__name__)
            return fn(*a, **k)
        return wrapped
    return make


def test_wrap_and_undo_restore_everything():
    calls: list[str] = []
    hooks = HookSet()
    assert hooks.wrap(f"{__name__}:Base.make", _counting(calls))
    assert hooks.wrap(f"{__name__}:Base.twice", _counting(calls))
    assert hooks.wrap(f"{__name__}:Base.plain", _counting(calls))
    assert hooks.wrap("json:dumps", _counting(calls))
    assert Child.make(1) == ("made", "Child", 1)  # classmethod binding survives the wrap
    assert Base.twice(2) == 4 and Base().plain(1) == 2 and json.dumps(1) == "1"
    assert calls == ["make", "twice", "plain", "dumps"]
    assert active_hooks() == 1
    hooks.undo()
    hooks.undo()  # idempotent
    assert active_hooks() == 0
    calls.clear()
    Child.make(1), Base.twice(1), Base().plain(1), json.dumps(1)
    assert calls == []
    assert isinstance(vars(Base)["make"], classmethod) and isinstance(vars(Base)["twice"], staticmethod)


def test_inherited_attribute_patched_on_subclass_is_removed_again():
    hooks = HookSet()
    assert hooks.wrap(f"{__name__}:Child.make", _counting([]))
    assert "make" in vars(Child)
    hooks.undo()
    assert "make" not in vars(Child)


def test_missing_targets_are_recorded_not_raised():
    hooks = HookSet()
    assert not hooks.wrap("no_such_module_xyz:f", lambda f: f)
    assert not hooks.wrap(f"{__name__}:Base.nope", lambda f: f)
    assert not hooks.wrap(f"{__name__}:Nope.make", lambda f: f)
    assert len(hooks.missing) == 3 and hooks.installed == []
    assert active_hooks() == 0
