"""py-spy's stacks as data: chrometrace timelines, the join with thread states, change-point samples, speedscope
out and in. Hand-built events and rows: every figure is exact."""

from __future__ import annotations

import json

import pytest

from loadprof.probes.stacks import (Frame, Sample, Timeline, from_timelines, join, load_chrometrace,
                                    parse_chrometrace, parse_speedscope, to_speedscope)
from loadprof.probes.threadstate import StateRow

F = "/home/u/job.py"
TH = "/usr/lib/python3.11/threading.py"
PT_MAIN, PT_WORK, PT_LATE = 140135341394816, 140135328536256, 140135300000000  # pthread ids
PID, WORK, LATE = 100, 101, 102  # native tids

MODULE, NAP, SPIN = Frame("<module>", F, 8), Frame("nap", F, 3), Frame("spin", F, 6)
RUN = Frame("Thread.run", TH, 982)


def ev(ph: str, name: str, ts_us: int, tid: int, file: str = "", line: int = 0) -> dict:
    """One py-spy 0.4.3 chrometrace event."""
    return {"args": {"filename": file, "line": line}, "cat": "py-spy", "name": name, "ph": ph, "pid": PID,
            "tid": tid, "ts": ts_us}


EVENTS = [
    {"ph": "M", "name": "process_name", "pid": PID, "tid": PT_MAIN, "args": {"name": "python"}},  # ignored
    # the worker thread, then the main one, both seen first at 1 ms (several B events share a timestamp)
    ev("B", f"thread ({WORK}): Thread-1 (nap)", 1000, PT_WORK),
    ev("B", "Thread.run", 1000, PT_WORK, TH, 982),
    ev("B", "nap", 1000, PT_WORK, F, 3),
    ev("B", f"thread ({PID}): MainThread", 1000, PT_MAIN),
    ev("B", "<module>", 1000, PT_MAIN, F, 8),
    ev("B", "nap", 1000, PT_MAIN, F, 3),
    # main: nap returns and spin starts at the same instant: one change point, the later stack
    ev("E", "nap", 300000, PT_MAIN, F, 3),
    ev("B", "spin", 300000, PT_MAIN, F, 6),
    {"ph": "X", "name": "complete event", "ts": 350000, "dur": 10, "tid": PT_MAIN, "pid": PID},  # ignored
    # a thread first seen without its name, named later (py-spy's first sample may lack it)
    ev("B", f"thread ({LATE})", 400000, PT_LATE),
    ev("B", "Thread.run", 400000, PT_LATE, TH, 982),
    ev("E", "Thread.run", 450000, PT_LATE, TH, 982),
    ev("E", f"thread ({LATE})", 450000, PT_LATE),
    ev("B", f"thread ({LATE}): late", 450000, PT_LATE),
    # the end: every frame closes at 0.5 s
    ev("E", "spin", 500000, PT_MAIN, F, 6),
    ev("E", "<module>", 500000, PT_MAIN, F, 8),
    ev("E", f"thread ({PID}): MainThread", 500000, PT_MAIN),
    ev("E", "nap", 500000, PT_WORK, F, 3),
    ev("E", "Thread.run", 500000, PT_WORK, TH, 982),
    ev("E", f"thread ({WORK}): Thread-1 (nap)", 500000, PT_WORK),
    ev("E", f"thread ({LATE}): late", 500000, PT_LATE),
]


def test_parse_chrometrace_timelines():
    tls = parse_chrometrace(EVENTS)
    assert set(tls) == {PID, WORK, LATE}  # keyed by native tid (from the thread frame), not by pthread id
    assert tls[PID] == Timeline("MainThread", [0.001, 0.3, 0.5], [(MODULE, NAP), (MODULE, SPIN), ()])
    assert tls[WORK] == Timeline("Thread-1 (nap)", [0.001, 0.5], [(RUN, NAP), ()])
    assert tls[LATE] == Timeline("late", [0.4, 0.45], [(RUN,), ()])
    assert parse_chrometrace([]) == {}
    # frames opened before any thread frame are not a thread's stack
    assert parse_chrometrace([ev("B", "f", 0, 1, F, 1), ev("E", "f", 10, 1, F, 1)]) == {}


def test_load_chrometrace_list_or_object(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(EVENTS))
    (tmp_path / "b.json").write_text(json.dumps({"traceEvents": EVENTS}))
    assert load_chrometrace(tmp_path / "a.json") == load_chrometrace(str(tmp_path / "b.json")) == parse_chrometrace(EVENTS)


def test_timeline_at():
    tl = parse_chrometrace(EVENTS)[PID]
    assert tl.at(0.0) is None and tl.at(0.000999) is None  # before py-spy's first sample of the thread
    assert tl.at(0.001) == (MODULE, NAP) and tl.at(0.299) == (MODULE, NAP)
    assert tl.at(0.3) == (MODULE, SPIN) and tl.at(0.4999) == (MODULE, SPIN)
    assert tl.at(0.5) == () and tl.at(99.0) == ()
    assert Timeline().at(1.0) is None


SPY_T0 = 10_000_000_000  # perf_counter ns at py-spy's start
TRIAL_T0 = 9_000_000_000  # the trial's t0: 1 s earlier


def _at(t_s: float) -> int:
    return SPY_T0 + round(t_s * 1e9)


ROWS = [
    StateRow(_at(0.0005), PID, "running", 0.01),   # before py-spy's first sample: main kept, no stack
    StateRow(_at(0.0005), WORK, "running", 0.01),  # same for a thread py-spy has a timeline for
    StateRow(_at(0.2), PID, "sleep", 0.01),
    StateRow(_at(0.2), WORK, "lock", 0.015),
    StateRow(_at(0.4), PID, "running", 0.02),
    StateRow(_at(0.4), 555, "running", 0.03),       # native threads py-spy never saw with a Python stack
    StateRow(_at(0.4), 556, "gil", 0.04),
]


def test_join_samples_states_and_native_time():
    samples, native_s = join(parse_chrometrace(EVENTS), ROWS, pid=PID, spy_t0_ns=SPY_T0, trial_t0_ns=TRIAL_T0)
    assert native_s == pytest.approx(0.07)
    assert [(s.thread, s.stack, s.weight_s, s.main, s.state) for s in samples] == [
        ("MainThread (100)", (), 0.01, True, "running"),
        ("Thread-1 (nap) (101)", (), 0.01, False, "running"),
        ("MainThread (100)", (MODULE, NAP), 0.01, True, "sleep"),
        ("Thread-1 (nap) (101)", (RUN, NAP), 0.015, False, "lock"),
        ("MainThread (100)", (MODULE, SPIN), 0.02, True, "running"),
    ]
    assert [s.t_s for s in samples] == pytest.approx([1.0005, 1.0005, 1.2, 1.2, 1.4])
    without_t0, _ = join(parse_chrometrace(EVENTS), ROWS, pid=PID, spy_t0_ns=SPY_T0)
    assert {s.t_s for s in without_t0} == {None}


def test_join_keeps_the_main_thread_without_a_timeline():
    rows = [StateRow(_at(0.1), PID, "sleep", 0.01), StateRow(_at(0.1), WORK, "running", 0.01)]
    samples, native_s = join({}, rows, pid=PID, spy_t0_ns=SPY_T0)
    assert samples == [Sample("MainThread (100)", (), 0.01, True, "sleep", None)]
    assert native_s == 0.01
    # an unnamed thread with a timeline: labelled by its tid
    samples, native_s = join({WORK: Timeline(None, [0.0], [(NAP,)])}, rows[1:], pid=PID, spy_t0_ns=SPY_T0)
    assert [(s.thread, s.stack, s.main) for s in samples] == [("thread 101", (NAP,), False)] and native_s == 0.0
    assert join({}, [], pid=PID, spy_t0_ns=0) == ([], 0.0)


def test_from_timelines_weights_by_change_points():
    tls = parse_chrometrace(EVENTS)
    out = from_timelines(tls, pid=PID, end_s=0.6)
    main = [s for s in out if s.main]
    assert [(s.thread, s.stack, s.state, s.t_s) for s in main] == [
        ("MainThread (100)", (MODULE, NAP), "unknown", None), ("MainThread (100)", (MODULE, SPIN), "unknown", None),
        ("MainThread (100)", (), "unknown", None)]
    assert [s.weight_s for s in main] == pytest.approx([0.299, 0.2, 0.1])
    work = [s for s in out if s.thread == "Thread-1 (nap) (101)"]
    assert [s.stack for s in work] == [(RUN, NAP), ()] and [s.weight_s for s in work] == pytest.approx([0.499, 0.1])
    assert not any(s.main for s in work)
    assert [s.weight_s for s in out if s.thread == "late (102)"] == pytest.approx([0.05, 0.15])
    # without an end: each thread's last change point has no duration and is dropped
    bare = from_timelines(tls, pid=PID)
    assert [(s.thread, s.stack) for s in bare if s.main] == [("MainThread (100)", (MODULE, NAP)),
                                                             ("MainThread (100)", (MODULE, SPIN))]
    assert len(bare) == 2 + 1 + 1
    assert sum(s.weight_s for s in bare) == pytest.approx(0.499 + 0.499 + 0.05)


def test_to_speedscope_waiting_leaf_and_weights():
    samples = [
        Sample("MainThread (100)", (MODULE, NAP), 0.25, True, "sleep", 1.0),
        Sample("MainThread (100)", (MODULE, SPIN), 0.5, True, "running", 1.2),
        Sample("Thread-1 (nap) (101)", (RUN, NAP), 0.125, False, "unknown"),
        Sample("Thread-1 (nap) (101)", (RUN,), 0.0625, False, "lock"),
    ]
    doc = to_speedscope(samples, name="w")
    assert doc["name"] == "w" and doc["exporter"] == "loadprof" and "speedscope" in doc["$schema"]
    frames = doc["shared"]["frames"]
    assert frames == [
        {"name": "<module>", "file": F, "line": 8}, {"name": "nap", "file": F, "line": 3},
        {"name": "[waiting: sleep]", "file": "", "line": 0}, {"name": "spin", "file": F, "line": 6},
        {"name": "Thread.run", "file": TH, "line": 982}, {"name": "[waiting: lock]", "file": "", "line": 0}]
    main, work = doc["profiles"]
    assert main == {"type": "sampled", "name": "MainThread (100)", "unit": "seconds", "startValue": 0,
                    "endValue": 0.75, "samples": [[0, 1, 2], [0, 3]], "weights": [0.25, 0.5]}
    assert work["name"] == "Thread-1 (nap) (101)" and work["samples"] == [[4, 1], [4, 5]]  # unknown: no wait leaf
    assert work["weights"] == [0.125, 0.0625] and work["endValue"] == 0.1875
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == 0.9375
    json.dumps(doc)  # JSON-ready
    assert to_speedscope([])["profiles"] == []


def _profile(name: str, stacks: list[list[int]], weights: list[float] | None = None) -> dict:
    p = {"type": "sampled", "name": name, "unit": "seconds", "samples": stacks}
    if weights is not None:
        p["weights"] = weights
    return p


def test_parse_speedscope_main_thread_rules():
    frames = {"frames": [{"name": "f", "file": "/x.py", "line": 1}, {"name": "thread (9): MainThread", "file": ""},
                         {"name": "thread (8): pool", "file": None}, {"name": "g", "file": "/x.py", "line": 2}]}
    # named MainThread (here through py-spy's thread frame) wins over the pid and over order
    doc = {"shared": frames, "profiles": [_profile('Thread 8 ""', [[2, 0]], [0.5]), _profile("Thread 9", [[1, 0, 3]], [0.25])]}
    a = parse_speedscope(doc, pid=8)
    assert [(s.thread, s.main, s.weight_s, s.state) for s in a] == [
        ("pool (8)", False, 0.5, "running"), ("MainThread (9)", True, 0.25, "running")]
    assert a[1].stack == (Frame("f", "/x.py", 1), Frame("g", "/x.py", 2))  # thread frame stripped, root first
    # a name in the profile's name
    named = {"shared": frames, "profiles": [_profile("Thread 3", [[0]], [0.1]),
                                            _profile('Thread 4 "MainThread"', [[0]], [0.1])]}
    assert [(s.thread, s.main) for s in parse_speedscope(named)] == [("thread 3", False), ("MainThread (4)", True)]
    # no names: the pid's thread, else the first profile
    bare = {"shared": frames, "profiles": [_profile("Thread 7", [[0]], [0.01]), _profile("Thread 5", [[0]], [0.01])]}
    assert [(s.thread, s.main) for s in parse_speedscope(bare, pid=5)] == [("thread 7", False), ("MainThread (5)", True)]
    assert [(s.thread, s.main) for s in parse_speedscope(bare)] == [("MainThread (7)", True), ("thread 5", False)]
    assert [s.main for s in parse_speedscope(bare, pid=6)] == [True, False]
    # a profile name with no tid at all; no weights: zero seconds
    anon = {"shared": frames, "profiles": [_profile("loadprof", [[0], [3]])]}
    assert [(s.thread, s.main, s.weight_s) for s in parse_speedscope(anon)] == [
        ("profile 0", True, 0.0), ("profile 0", True, 0.0)]
    assert parse_speedscope({"profiles": [], "shared": {"frames": []}}) == ()
