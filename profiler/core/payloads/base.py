"""Typed records with one JSON shape: what a probe emits in the worker is what the parent reads, field for field.

A ``Record`` is a frozen dataclass whose field types say what JSON may hold: ``to_dict`` writes every field
(None included: missing data stays visibly missing), ``from_dict`` reads it back strictly: a value of the wrong
type is a ``PayloadError`` naming its path, a missing field without a default is one too, and a key the class
does not declare (a newer loadprof's) is kept in ``extra`` and written back, never dropped. Numbers are never
invented: where a probe may not know a figure the field is ``X | None`` and reads as None.

Types understood: bool, int (not bool), float (an int is accepted and made a float), str, Any, ``X | None``
and other unions (tried in order), ``tuple[X, ...]``, fixed ``tuple[X, Y]``, ``Mapping[str, X]`` and nested
records. A field's JSON key is its name unless its metadata says ``key`` (``class`` is not a field name).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, ClassVar, Literal, Mapping, TypeVar, Union

R = TypeVar("R", bound="Record")


class PayloadError(ValueError):
    """A payload that does not read as its type: ``path`` says where (``io.per_phase.load.read_chars``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True)
class Record:
    """A frozen, typed JSON object (see the module docstring). ``extra``: keys this version does not know."""

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        out = {_key(f): _write(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_dict(cls: type[R], d: Any, path: str = "") -> R:
        if not isinstance(d, AbcMapping):
            raise PayloadError(path, f"expected an object, got {type(d).__name__}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            key = _key(f)
            if key in d:
                values[f.name] = _read(hints[f.name], d[key], f"{path}.{key}" if path else key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PayloadError(path, f"{cls.__name__} lacks {key!r}")
        known = {_key(f) for f in fields(cls)}
        return cls(**values, extra={k: v for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class Payload(Record):
    """What one probe files for a trial. ``PROBE``: the registry name; ``FILED``: under ``TrialResult.probes``
    (the payload object), or, for the after-workload probes, as trial ``metrics`` (its fields are metric keys)."""

    PROBE: ClassVar[str] = ""
    FILED: ClassVar[Literal["probes", "metrics"]] = "probes"

    @classmethod
    def from_metrics(cls: type[R], metrics: Mapping[str, Any]) -> R | None:
        """A metrics-filed payload from the trial's metrics (its own keys only); None when none of them is there."""
        mine = {_key(f): metrics[_key(f)] for f in fields(cls) if f.name != "extra" and _key(f) in metrics}
        return cls.from_dict(mine, cls.PROBE) if mine else None


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def key(name: str) -> Any:
    """Field metadata for a JSON key that cannot be the field's name: ``cls: str = key("class")``."""
    return field(metadata={"key": name})


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _write(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, tuple):
        return [_write(x) for x in v]
    if isinstance(v, AbcMapping):
        return {k: _write(x) for k, x in v.items()}
    return v


def _read(tp: Any, v: Any, path: str) -> Any:
    """``v`` (from JSON) as type ``tp``, or a PayloadError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _read(arm, v, path)
            except PayloadError:
                continue
        raise PayloadError(path, f"{_show(v)} is none of {' | '.join(_name(a) for a in args)}")
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(v, path)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise PayloadError(path, f"expected a list, got {_show(v)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read(args[0], x, f"{path}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise PayloadError(path, f"expected {len(args)} items, got {len(v)}")
        return tuple(_read(a, x, f"{path}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if origin in (AbcMapping, dict):
        if not isinstance(v, AbcMapping):
            raise PayloadError(path, f"expected an object, got {_show(v)}")
        return {k: _read(args[1], x, f"{path}.{k}") for k, x in v.items()}
    return _scalar(tp, v, path)


def _scalar(tp: Any, v: Any, path: str) -> Any:
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if tp is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if tp in (str, bool) and isinstance(v, tp):
        return v
    if tp is type(None) and v is None:
        return None
    raise PayloadError(path, f"expected {_name(tp)}, got {_show(v)}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _show(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
