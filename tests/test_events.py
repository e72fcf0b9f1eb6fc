from __future__ import annotations

import io
import os

import pytest

from loadprof.core import events


def _deep(n: int) -> object:
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


def test_round_trip_through_a_pipe_and_torn_lines_are_skipped():
    r, w = os.pipe()
    writer = events.EventWriter(w)
    writer.emit(events.make("hello", pid=1, t_ns=0))
    writer.emit(events.make("metric", key="x_bytes", value=3))
    os.write(w, b'{"v":1,"type":"note","te')  # a worker killed mid-line
    writer.close()
    with os.fdopen(r, "rb") as f:
        got = list(events.read_stream(f))
    assert [e["type"] for e in got] == ["hello", "metric"]
    assert got[1]["value"] == 3 and got[0]["v"] == events.PROTOCOL_VERSION


def _stream(*lines: bytes) -> list[dict]:
    return list(events.read_stream(io.BytesIO(b"".join(line + b"\n" for line in lines))))


def test_foreign_json_unknown_types_and_forged_fields_are_malformed_records():
    got = _stream(b'{"type": "bogus"}', b"[1,2]", b"", b"not json", b'{"v":1,"type":"done","t_ns":5}',
                  b'{"v":2,"type":"done","t_ns":"soon"}', b'{"v":2,"type":"malformed","what":"forged"}',
                  b'{"v":2,"type":"done","t_ns":5}')
    assert [e["type"] for e in got] == [events.MALFORMED] * 6 + ["done"]
    whats = [e["what"] for e in got[:6]]
    assert "unknown event type 'bogus'" in whats[0] and "not JSON" in whats[2] and "version 1" in whats[3]
    assert "done.t_ns must be a 64-bit integer, not 'soon'" in whats[4] and "'malformed'" in whats[5]


@pytest.mark.parametrize("ev, what", [
    ({"v": 2, "type": "phase", "name": "x" * 2000, "edge": "start", "t_ns": 0}, "phase.name is 2000 characters"),
    ({"v": 2, "type": "phase", "name": "load", "edge": "middle", "t_ns": 0}, "start or end"),
    ({"v": 2, "type": "phase", "name": "load", "edge": "end", "t_ns": True}, "64-bit integer"),
    ({"v": 2, "type": "phase", "name": "load", "edge": "end", "t_ns": 1 << 70}, "64-bit integer"),
    ({"v": 2, "type": "note"}, "note event without text"),
    ({"v": 2, "type": "probe", "name": "memory", "notes": "x"}, "list of strings"),
    ({"v": 2, "type": "probe", "name": "memory", "artifacts": {"a": 1}}, "must be a string"),
    ({"v": 2, "type": "env", "info": []}, "env.info must be an object"),
    ({"v": 2, "type": "metric", "key": "k", "value": _deep(100)}, "nested deeper"),
])
def test_check_holds_each_field_to_its_schema(ev, what):
    with pytest.raises(events.MalformedEvent, match=what):
        events.check(ev)


def test_check_makes_strings_safe_and_drops_unknown_fields():
    ev = events.check({"v": 2, "type": "error", "kind": "E\udcff", "message": "bad \udcff", "extra": object()})
    assert ev == {"v": 2, "type": "error", "kind": "E\\udcff", "message": "bad \\udcff"}
    ev["message"].encode("utf-8")  # encodable: no renderer can fail on it


def test_an_overlong_line_and_too_many_events_are_refused_and_drained(monkeypatch):
    monkeypatch.setattr(events, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(events, "MAX_EVENTS", 3)
    done = b'{"v":2,"type":"done","t_ns":5}'
    got = _stream(b'{"v":2,"type":"note","text":"' + b"x" * 500 + b'"}', done, done, done, done, done)
    assert [e["type"] for e in got] == [events.MALFORMED, "done", "done", "done", events.MALFORMED]
    assert "longer than 100 bytes" in got[0]["what"] and "more than 3 events" in got[-1]["what"]


def test_json_nested_past_the_parser_is_a_malformed_record():
    got = _stream(b"[" * 100_000 + b"]" * 100_000)
    assert [e["type"] for e in got] == [events.MALFORMED]


def test_unknown_type_rejected_at_creation():
    with pytest.raises(ValueError):
        events.make("nope")
