"""The versioned JSON-lines protocol between a trial's worker and the runner.

The worker writes one JSON object per line on a dedicated pipe (never stdout:
transformers and user loaders print there). Every event carries ``v`` and
``type``; the runner keeps whatever arrived before a crash.

Types: hello, phase (name=path, edge=start|end, t_ns), metric (key, value),
note (text), probe (name, payload, notes, artifacts: loadprof.probes.base.ProbeResult.event), env (info),
skip (reason), error (kind, message, traceback), done (t_ns).

Version 2: a ``probe`` event carries the probe's payload (``Payload.to_dict()``) instead of version 1's
``result`` envelope. Worker and runner always come from the same loadprof, so only the number changes.

The parent trusts nothing on the pipe (a user's loader can write to it): ``read_stream`` bounds lines and counts
and ``check`` holds every event to ``SCHEMA`` (field types, sizes, depth; strings made safe for any encoding);
what fails is a ``malformed`` record that makes that trial ``failed``, never an exception in the parent.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO, Iterable, Iterator

from loadprof.core import figures
from loadprof.core.errors import safe_text
from loadprof.core.units import NUMBER_SUFFIXES

PROTOCOL_VERSION = 2
EVENT_TYPES = frozenset({"hello", "phase", "metric", "note", "probe", "env", "skip", "error", "done"})


def make(type_: str, **fields: Any) -> dict[str, Any]:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    return {"v": PROTOCOL_VERSION, "type": type_, **fields}


def encode(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":"), default=_default) + "\n").encode()


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


class EventWriter:
    """Worker side: unbuffered line writes on a raw fd, so a crash loses at most the line being written."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def emit(self, event: dict[str, Any]) -> None:
        data = encode(event)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


#: bounds on what one trial may send: legitimate workers stay far below every one of them
MAX_LINE_BYTES = 16 << 20
MAX_STREAM_BYTES = 256 << 20
MAX_EVENTS = 100_000
MAX_NAME_CHARS = 1024  # a phase path, a metric key, a probe name, an error kind
MAX_TEXT_CHARS = 1 << 20  # a note, a message, a traceback, a skip reason
MAX_DEPTH = 64  # nesting of a metric value, a probe payload, the env info
INT64 = 1 << 63
#: the parent's own record of a line it refused (never accepted from a worker: ``check`` knows no such type)
MALFORMED = "malformed"

_NAME, _TEXT, _INT, _JSON, _OBJ, _OBJ_OR_NULL, _EDGE, _TEXTS, _FILES = (
    "name", "text", "int", "json", "obj", "obj|null", "edge", "texts", "files")
#: type -> field -> (kind, required); fields not listed are dropped
SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "hello": {"pid": (_INT, False), "t_ns": (_INT, False), "t0_abs_ns": (_INT, False), "protocol": (_INT, False)},
    "phase": {"name": (_NAME, True), "edge": (_EDGE, True), "t_ns": (_INT, True)},
    "metric": {"key": (_NAME, True), "value": (_JSON, True)},
    "note": {"text": (_TEXT, True)},
    "probe": {"name": (_NAME, True), "payload": (_OBJ_OR_NULL, False), "notes": (_TEXTS, False),
              "artifacts": (_FILES, False)},
    "env": {"info": (_OBJ, True)},
    "skip": {"reason": (_TEXT, True)},
    "error": {"kind": (_NAME, True), "message": (_TEXT, True), "traceback": (_TEXT, False)},
    "done": {"t_ns": (_INT, True)},
}


#: metrics the parent's analysis reads by shape: a forged value of another shape must not reach it. Keys with a
#: unit suffix (``NUMBER_SUFFIXES``) are numbers; these others are listed. None is always allowed (not measured).
#: An object's own unit-suffixed keys (one level down, and in each object of a list of objects) are numbers too.
METRIC_SHAPES: dict[str, str] = {
    **dict.fromkeys(("bytes_by_device", "bytes_by_dtype", "estimate", "placement", "precision",
                     "from_pretrained_kwargs", "storage_read_bytes_by_phase", "load_bytes_by_step"), "object"),
    **dict.fromkeys(("estimate_vs_measured", "program_loads", "generate_start_alloc_sites"), "objects"),
    **dict.fromkeys(("reading_phases", "meta_tensor_examples", "validation_meta_examples"), "texts"),
    **dict.fromkeys(("read_bandwidth_fraction", "roofline_fraction", "new_tokens", "meta_tensors",
                     "validation_meta_tensors", "param_count", "decode_bytes_per_step",
                     figures.DECODE_TOK_S_PER_SEQ.key, "generate_calls_measured", "generate_calls_warmup"), "number"),
    "matmul_gflops": "number|object",
    **dict.fromkeys(("loader", "program_stopped", "program_end", "validation_mode", "load_method", "logits_check"),
                    "text"),
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers_inside(key: str, obj: dict[str, Any]) -> None:
    for k, v in obj.items():
        if k.endswith(NUMBER_SUFFIXES) and v is not None and not _is_number(v):
            raise MalformedEvent(f"metric {key}.{k} must be a number, not {_short(v)}")


def _metric(key: str, value: Any) -> Any:
    """A metric's value, of the shape its key promises."""
    shape = "number" if key.endswith(NUMBER_SUFFIXES) else METRIC_SHAPES.get(key)
    if value is None or shape is None:
        return value
    ok = {"number": _is_number(value), "text": isinstance(value, str), "object": isinstance(value, dict),
          "number|object": _is_number(value) or isinstance(value, dict),
          "objects": isinstance(value, list) and all(isinstance(x, dict) for x in value),
          "texts": isinstance(value, list) and all(isinstance(x, str) for x in value)}[shape]
    if not ok:
        raise MalformedEvent(f"metric {key} must be {shape.replace('|', ' or ')}, not {_short(value)}")
    for obj in value if shape == "objects" else [value] if isinstance(value, dict) else []:
        _numbers_inside(key, obj)
    return value


class MalformedEvent(ValueError):
    """An event that breaks the protocol: ``what`` says how, in words fit for a trial's reason."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = safe_text(what)


def _short(v: Any) -> str:
    text = safe_text(repr(v))
    return text if len(text) <= 60 else text[:57] + "..."


def _json(v: Any, where: str, depth: int = 0) -> Any:
    """A JSON value with its strings made safe and its depth bounded."""
    if depth > MAX_DEPTH:
        raise MalformedEvent(f"{where} nested deeper than {MAX_DEPTH}")
    if isinstance(v, str):
        return safe_text(v)
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, list):
        return [_json(x, where, depth + 1) for x in v]
    if isinstance(v, dict):
        return {safe_text(str(k)): _json(x, where, depth + 1) for k, x in v.items()}
    raise MalformedEvent(f"{where} is not JSON ({type(v).__name__})")


def _field(kind: str, v: Any, where: str) -> Any:
    if kind == _INT:
        if type(v) is not int or not -INT64 <= v < INT64:
            raise MalformedEvent(f"{where} must be a 64-bit integer, not {_short(v)}")
        return v
    if kind in (_NAME, _TEXT):
        limit = MAX_NAME_CHARS if kind == _NAME else MAX_TEXT_CHARS
        if not isinstance(v, str):
            raise MalformedEvent(f"{where} must be a string, not {_short(v)}")
        if len(v) > limit:
            raise MalformedEvent(f"{where} is {len(v)} characters long (at most {limit})")
        return safe_text(v)
    if kind == _EDGE:
        if v not in ("start", "end"):
            raise MalformedEvent(f"{where} must be start or end, not {_short(v)}")
        return v
    if kind in (_OBJ, _OBJ_OR_NULL):
        if not (isinstance(v, dict) or (v is None and kind == _OBJ_OR_NULL)):
            raise MalformedEvent(f"{where} must be an object, not {_short(v)}")
        return _json(v, where)
    if kind == _TEXTS:
        if not isinstance(v, list):
            raise MalformedEvent(f"{where} must be a list of strings, not {_short(v)}")
        return [_field(_TEXT, x, where) for x in v]
    if kind == _FILES:
        if not isinstance(v, dict):
            raise MalformedEvent(f"{where} must be an object of file names, not {_short(v)}")
        return {_field(_NAME, k, where): _field(_NAME, x, where) for k, x in v.items()}
    return _json(v, where)


def check(ev: Any) -> dict[str, Any]:
    """The event as the schema of its type reads it (known fields only, strings made safe), or
    ``MalformedEvent`` saying what is wrong: the parent's one gate for everything a worker sends."""
    if not isinstance(ev, dict):
        raise MalformedEvent(f"an event must be a JSON object, not {_short(ev)}")
    type_ = ev.get("type")
    if type_ not in SCHEMA:
        raise MalformedEvent(f"unknown event type {_short(type_)}")
    if ev.get("v") != PROTOCOL_VERSION:
        raise MalformedEvent(f"{type_} event of protocol version {_short(ev.get('v'))}, not {PROTOCOL_VERSION}")
    out: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type_}
    for name, (kind, required) in SCHEMA[type_].items():
        if name in ev:
            out[name] = _field(kind, ev[name], f"{type_}.{name}")
        elif required:
            raise MalformedEvent(f"{type_} event without {name}")
    if type_ == "metric":
        out["value"] = _metric(out["key"], out["value"])
    return out


def malformed(what: str) -> dict[str, Any]:
    """The parent's record, among the received events, of a line it refused."""
    return {"v": PROTOCOL_VERSION, "type": MALFORMED, "what": safe_text(what)}


def sort_out(received: Iterable[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Received events -> (the valid ones, checked again, and what was wrong with the others, in order)."""
    good: list[dict[str, Any]] = []
    bad: list[str] = []
    for ev in received:
        if isinstance(ev, dict) and ev.get("type") == MALFORMED and isinstance(ev.get("what"), str):
            bad.append(safe_text(ev["what"]))
            continue
        try:
            good.append(check(ev))
        except MalformedEvent as e:
            bad.append(e.what)
    return good, bad


def _bounded_lines(f: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """(line, complete) pairs; ``complete``: it ended in a newline. A line over ``MAX_LINE_BYTES`` is read to its
    end and dropped, given as ``(b"", False)``, so a worker cannot make the parent hold one unbounded line."""
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield b"", False  # too long: the caller says so
            continue
        yield line, line.endswith(b"\n")


def read_stream(f: BinaryIO) -> Iterator[dict[str, Any]]:
    """Runner side: the worker's events, each checked (``check``), or a ``malformed`` record of a line refused.

    A last line without its newline is a worker killed mid-write: skipped, not held against the trial. Past
    ``MAX_EVENTS`` events or ``MAX_STREAM_BYTES`` bytes one ``malformed`` record is given and the rest is read
    and dropped, so the worker never blocks on a full pipe. Never raises for what the worker wrote."""
    count = size = 0
    over = False
    for line, complete in _bounded_lines(f):
        size += len(line)
        if over:
            continue
        if not line and not complete:
            yield malformed(f"an event line longer than {MAX_LINE_BYTES} bytes")
            continue
        if not complete or not line.strip():
            continue
        count += 1
        if count > MAX_EVENTS or size > MAX_STREAM_BYTES:
            over = True
            yield malformed(f"more than {MAX_EVENTS} events or {MAX_STREAM_BYTES >> 20} MiB of them")
            continue
        try:
            ev = json.loads(line.decode("utf-8", errors="replace"))
            yield check(ev)
        except MalformedEvent as e:
            yield malformed(e.what)
        except (ValueError, RecursionError) as e:  # not JSON, or JSON nested past the parser's stack
            yield malformed(f"a line that is not JSON ({type(e).__name__}): {_short(line[:60])}")
