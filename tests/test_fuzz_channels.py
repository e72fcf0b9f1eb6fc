"""Fuzz the two inputs loadprof reads that someone else wrote: a worker's events (a user's loader can write to the
events pipe) and a report.json (hand-edited, truncated, hostile).

Generated hostile event streams go through the parent's reader (``events.read_stream``) and ``classify``: every
one gives a TrialResult (a malformed event fails that trial), never an exception, and what it gives survives
analysis and the markdown report. Generated tampered report.json files go through ``read_report``: every one is
a sweep or a ``LoadprofError`` with exit 2.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterator

import pytest

from loadprof.analysis.sweep import analyse_sweep
from loadprof.core import events
from loadprof.core.errors import LoadprofError
from loadprof.reports import markdown
from loadprof.results.model import SweepResult, TrialResult
from loadprof.results.jsonl import write_report
from loadprof.results.report_file import read_report
from loadprof.run.runner import TrialPlan, classify
from loadprof.strategies.model import ModelSpec, Strategy, Trial

#: one valid event of each type, the base every mutation starts from
VALID: dict[str, dict[str, Any]] = {
    "hello": {"pid": 1, "t_ns": 0, "t0_abs_ns": 5, "protocol": 2},
    "phase": {"name": "load", "edge": "end", "t_ns": 9},
    "metric": {"key": "load_s", "value": 1.5},
    "note": {"text": "a note"},
    "probe": {"name": "memory", "payload": None, "notes": ["n"], "artifacts": {"a": "a.json"}},
    "env": {"info": {"torch": "2.13"}},
    "skip": {"reason": "no GPU"},
    "error": {"kind": "ValueError", "message": "bad", "traceback": "tb"},
    "done": {"t_ns": 10},
}
HOSTILE: tuple[Any, ...] = ("soon", "", "\udcff", "x" * 5000, -1, 0, 1 << 70, True, None, 1.5, math.nan, math.inf,
                            [], [1, "a"], {}, {"a": {"b": [None]}}, [[[[[[[[[[1]]]]]]]]]])
#: metrics the analysis reads by name, each forged with every hostile value and a hostile object
METRIC_KEYS = (*events.METRIC_SHAPES, "load_s", "peak_rss_bytes", "ttft_ms", "decode_tok_s", "import_s")


def _ev(type_: str, **fields: Any) -> dict[str, Any]:
    return {"v": events.PROTOCOL_VERSION, "type": type_, **fields}


def _frame(mutated: Any) -> list[Any]:
    return [_ev("hello", t_ns=0), _ev("phase", name="load", edge="start", t_ns=1), mutated,
            _ev("phase", name="load", edge="end", t_ns=5), _ev("done", t_ns=6)]


def _event_cases() -> Iterator[tuple[str, list[Any]]]:
    for type_, fields in VALID.items():
        for name in fields:
            for i, v in enumerate(HOSTILE):
                yield f"{type_}.{name}#{i}", _frame(_ev(type_, **{**fields, name: v}))
            yield f"{type_}.{name} missing", _frame(_ev(type_, **{k: x for k, x in fields.items() if k != name}))
        for v in (1, "2", None, 2.0, True):
            yield f"{type_} v={v!r}", _frame({**_ev(type_, **fields), "v": v})
    for key in METRIC_KEYS:
        for i, v in enumerate((*HOSTILE, {k: "x" for k in ("kv_bytes_per_token", "weights_bytes", "total_bytes")})):
            yield f"metric {key}#{i}", _frame(_ev("metric", key=key, value=v))
    for i, junk in enumerate((None, 7, "done", [], ["done"], {"type": "done"}, {"type": "malformed", "what": 3},
                              {"v": 2, "type": "malformed", "what": "forged"}, {"v": 2})):
        yield f"junk#{i}", _frame(junk)
    yield "empty", []
    yield "only done", [_ev("done", t_ns=3)]
    yield "phases unbalanced", [_ev("phase", name="a/b/c", edge="end", t_ns=9), _ev("phase", name="/", edge="start",
                                                                                   t_ns=-5), _ev("done", t_ns=1)]


#: whole streams, as bytes, that attack the reader rather than one event
STREAMS: dict[str, bytes] = {
    "not json": b"hello\n",
    "binary": bytes(range(256)) + b"\n",
    "torn last line": b'{"v":2,"type":"done","t_ns":1}\n{"v":2,"type":"no',
    "deep json": b"[" * 50_000 + b"]" * 50_000 + b"\n",
    "huge int": b'{"v":2,"type":"done","t_ns":' + b"9" * 5000 + b"}\n",
    "nan": b'{"v":2,"type":"done","t_ns":NaN}\n',
    "no newline at all": b'{"v":2,"type":"done","t_ns":1}',
    "blank lines": b"\n\n \n",
    "invalid utf-8 in a string": b'{"v":2,"type":"note","text":"\xff\xfe"}\n',
    "escaped surrogate": b'{"v":2,"type":"error","kind":"E","message":"\\udcff","traceback":""}\n',
    "many events": b'{"v":2,"type":"note","text":"x"}\n' * 3000,
}


def _plan(tmp_path: Path) -> TrialPlan:
    return TrialPlan(Trial(Strategy(model=ModelSpec(path="/nonexistent"))), "/nonexistent", tmp_path)


def _classified(tmp_path: Path, received: list[Any], rc: int = 0) -> TrialResult:
    r = classify(_plan(tmp_path), received, rc, False, "t", parent_wall_ns=10, spawn_ns=0)
    assert isinstance(r, TrialResult)
    json.dumps(r.to_dict(), default=str).encode("utf-8")  # results.jsonl takes it
    return r


def _survives_the_report(trials: list[TrialResult]) -> None:
    sweep = analyse_sweep(SweepResult(run_id="r", name="n", source="s", created_at="c", trials=tuple(trials)))
    markdown.render(sweep).encode("utf-8")


EVENT_CASES = dict(_event_cases())


def test_the_generators_make_enough_cases():
    assert len(EVENT_CASES) >= 500 and len(STREAMS) >= 10


def test_every_hostile_event_stream_gives_a_trial_result(tmp_path):
    results = {name: _classified(tmp_path, evs) for name, evs in EVENT_CASES.items()}
    _survives_the_report(list(results.values()))
    assert results["done.t_ns#0"].status == "failed"
    assert results["done.t_ns#0"].reason == ("malformed event from the worker: done.t_ns must be a 64-bit integer, "
                                             "not 'soon'")
    assert results["note.text#2"].status == "ok"  # a surrogate is escaped, not refused
    failed = [n for n, r in results.items() if r.status == "failed" and r.reason.startswith("malformed event")]
    assert len(failed) > len(results) // 2


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_hostile_byte_stream_reads_and_classifies(tmp_path, name, monkeypatch):
    monkeypatch.setattr(events, "MAX_EVENTS", 1000)
    received = list(events.read_stream(io.BytesIO(STREAMS[name])))
    r = _classified(tmp_path, received, rc=1)
    _survives_the_report([r])
    if name in ("not json", "binary", "deep json", "huge int", "many events"):
        assert r.status == "failed" and r.reason.startswith("malformed event from the worker")


def test_each_generated_event_also_reads_through_the_byte_reader(tmp_path):
    for name, evs in EVENT_CASES.items():
        data = b"".join(json.dumps(ev, default=str).encode("utf-8", "backslashreplace") + b"\n" for ev in evs)
        _classified(tmp_path, list(events.read_stream(io.BytesIO(data))))


# ------------------------------------------------------------------------------------------------- report.json

def _paths(doc: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:2]):
            yield from _paths(v, (*at, i))


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return copy


REPORT_HOSTILE = ("x", -1, 1e308, True, None, [], {}, [[["deep"]]], "\udcff")


def _report_cases(good: dict) -> Iterator[tuple[str, bytes]]:
    raw = json.dumps(good).encode()
    for path in _paths(good):
        for i, v in enumerate(REPORT_HOSTILE):
            yield f"{'/'.join(map(str, path))}#{i}", json.dumps(_set(good, path, v)).encode()
    for cut in range(0, len(raw), max(1, len(raw) // 40)):
        yield f"truncated at {cut}", raw[:cut]
    for at in range(0, len(raw), max(1, len(raw) // 40)):
        yield f"byte {at} flipped", raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]


def _good_report(tmp_path: Path) -> dict:
    """A real report.json: two trials, classified and analysed as a sweep's are."""
    metrics = [_ev("metric", key=k, value=v) for k, v in (("load_s", 1.5), ("peak_rss_bytes", 2**30),
                                                          ("bytes_by_dtype", {"bfloat16": 2**20}))]
    trials = [_classified(tmp_path, [*_frame(_ev("note", text="n")), *metrics]),
              _classified(tmp_path, _frame(_ev("error", kind="ValueError", message="bad", traceback="tb")), rc=1)]
    sweep = analyse_sweep(SweepResult(run_id="r", name="n", source="s", created_at="c", trials=tuple(trials)))
    return json.loads(write_report(tmp_path, sweep).read_text())


def test_every_tampered_report_is_a_sweep_or_exit_2(tmp_path):
    good = _good_report(tmp_path)
    cases = list(_report_cases(good))
    assert len(cases) >= 1000
    read = refused = 0
    path = tmp_path / "report.json"
    for name, data in cases:
        path.write_bytes(data)
        try:
            sweep = read_report(path).sweep
        except LoadprofError as e:
            assert e.exit_code == 2 and "\n" not in e.message, name
            refused += 1
            continue
        assert isinstance(sweep, SweepResult), name
        read += 1
    assert read and refused and read + refused == len(cases)
