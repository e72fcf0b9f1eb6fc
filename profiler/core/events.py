"""The versioned JSON-lines protocol between a trial's worker and the runner.

The worker writes one JSON object per line on a dedicated pipe (never stdout:
transformers and user loaders print there). Every event carries ``v`` and
``type``; the runner keeps whatever arrived before a crash.

Types: hello, phase (name=path, edge=start|end, t_ns), metric (key, value),
note (text), probe (name, payload, notes, artifacts: loadprof.probes.base.ProbeResult.event), env (info),
skip (reason), error (kind, message, traceback), done (t_ns).

Version 2: a ``probe`` event carries the probe's payload (``Payload.to_dict()``) instead of version 1's
``result`` envelope. Worker and runner always come from the same loadprof, so only the number changes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

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


def decode_lines(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    """Runner side: parse lines, skipping a torn last line or foreign junk instead of failing the trial."""
    for raw in lines:
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and ev.get("type") in EVENT_TYPES:
            yield ev
