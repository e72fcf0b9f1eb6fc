from __future__ import annotations

import os

import pytest

from loadprof.core import events


def test_round_trip_through_a_pipe_and_torn_lines_are_skipped():
    r, w = os.pipe()
    writer = events.EventWriter(w)
    writer.emit(events.make("hello", pid=1, t_ns=0))
    writer.emit(events.make("metric", key="x_bytes", value=3))
    os.write(w, b'{"v":1,"type":"note","te')  # a worker killed mid-line
    writer.close()
    with os.fdopen(r, "rb") as f:
        got = list(events.decode_lines(f))
    assert [e["type"] for e in got] == ["hello", "metric"]
    assert got[1]["value"] == 3 and got[0]["v"] == events.PROTOCOL_VERSION


def test_foreign_json_and_unknown_types_ignored():
    lines = [b'{"type": "bogus"}', b"[1,2]", b"", b'{"v":1,"type":"done","t_ns":5}']
    assert [e["type"] for e in events.decode_lines(lines)] == ["done"]


def test_unknown_type_rejected_at_creation():
    with pytest.raises(ValueError):
        events.make("nope")
