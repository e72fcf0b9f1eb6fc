"""Phase arithmetic under a fake clock: exact nesting, ordering, 'other', crash recovery."""

from __future__ import annotations

import pytest

from loadprof.core.clock import FakeClock
from loadprof.core.phases import PhaseRecorder, build_tree


def _recorder():
    clock = FakeClock(start_ns=10_000)
    events: list[dict] = []
    rec = PhaseRecorder(clock, events.append, t0_ns=10_000)
    return clock, rec, events


def test_nested_phases_sum_and_other_exactly():
    clock, rec, events = _recorder()
    with rec.phase("import"):
        clock.advance(1.0)
    with rec.phase("load"):
        with rec.phase("config"):
            clock.advance(0.25)
        with rec.phase("weights"):
            clock.advance(0.5)
        clock.advance(0.125)  # time no child covers
    clock.advance(0.0625)  # gap between top-level phases
    with rec.phase("generate"):
        clock.advance(2.0)
    tree = build_tree([e for e in events if e["type"] == "phase"])
    assert [p.name for p in tree] == ["import", "load", "generate"]
    imp, load, gen = tree
    assert (imp.start_s, imp.end_s) == (0.0, 1.0)
    assert load.duration_s == pytest.approx(0.875)
    assert [c.name for c in load.children] == ["config", "weights"]
    assert load.other_s == pytest.approx(0.125)
    assert sum(c.duration_s for c in load.children) + load.other_s == pytest.approx(load.duration_s)
    assert gen.start_s == pytest.approx(1.9375)
    assert imp.other_s == 0.0  # a leaf has nothing to explain


def test_same_name_reentry_is_not_nested_twice():
    clock, rec, events = _recorder()
    with rec.phase("config"):
        with rec.phase("config"):  # AutoConfig.from_pretrained -> PreTrainedConfig.from_pretrained
            clock.advance(0.5)
    tree = build_tree([e for e in events if e["type"] == "phase"])
    assert len(tree) == 1 and tree[0].children == () and tree[0].duration_s == 0.5


def test_explicit_boundaries_place_late_edges_exactly():
    clock, rec, events = _recorder()
    with rec.phase("generate"):
        t_call = clock.now_ns()
        rec.open("prefill", t_call)
        clock.advance(0.1)
        t_first = clock.now_ns()
        rec.close("prefill", t_first)
        rec.open("decode", t_first)
        clock.advance(0.3)
        t_last = clock.now_ns()
        clock.advance(0.05)
        rec.close("decode", t_last)
        rec.open("finish", t_last)
        rec.close("finish")
    (gen,) = build_tree([e for e in events if e["type"] == "phase"])
    names = [(c.name, round(c.duration_s, 9)) for c in gen.children]
    assert names == [("prefill", 0.1), ("decode", 0.3), ("finish", 0.05)]
    assert gen.other_s == pytest.approx(0.0)


def test_close_out_of_order_is_an_error():
    _, rec, _ = _recorder()
    rec.open("a")
    with pytest.raises(RuntimeError):
        rec.close("b")


def test_crash_leaves_open_phases_closed_at_end_and_flagged():
    clock, rec, events = _recorder()
    with rec.phase("import"):
        clock.advance(1)
    rec.open("load")
    rec.open("weights")
    clock.advance(2)  # the worker dies here: no end events
    tree = build_tree([e for e in events if e["type"] == "phase"], end_ns=3_000_000_000)
    imp, load = tree
    assert not imp.incomplete and load.incomplete and load.end_s == 3.0
    assert load.children[0].name == "weights" and load.children[0].incomplete
    assert load.children[0].end_s == 3.0


def test_listeners_see_every_edge_with_absolute_time():
    clock, rec, _ = _recorder()
    seen = []
    rec.add_listener(lambda path, edge, t: seen.append((path, edge, t)))
    with rec.phase("load"):
        clock.advance(1)
        with rec.phase("weights"):
            pass
    assert seen == [("load", "start", 10_000), ("load/weights", "start", 1_000_010_000),
                    ("load/weights", "end", 1_000_010_000), ("load", "end", 1_000_010_000)]


def test_slash_in_name_rejected():
    _, rec, _ = _recorder()
    with pytest.raises(ValueError):
        rec.open("a/b")


def test_edges_wait_for_the_gpu_once_cuda_is_initialised(monkeypatch):
    """A phase edge is stamped after queued GPU work finishes; explicitly placed edges (already synchronised by
    their caller) and CUDA-graph capture are left alone; nothing is imported to find out."""
    import sys
    import types

    calls: list[str] = []
    state = {"init": False, "capturing": False}
    cuda = types.SimpleNamespace(is_initialized=lambda: state["init"],
                                 is_current_stream_capturing=lambda: state["capturing"],
                                 synchronize=lambda: calls.append("sync"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    clock, rec, _ = _recorder()
    with rec.phase("import"):
        pass
    assert calls == []  # CUDA not initialised: no sync
    state["init"] = True
    with rec.phase("load"):
        pass
    assert calls == ["sync", "sync"]
    rec.open("prefill", clock.now_ns())
    rec.close("prefill", clock.now_ns())
    assert calls == ["sync", "sync"]  # explicit timestamps: the caller synchronised
    state["capturing"] = True
    with rec.phase("graph"):
        pass
    assert calls == ["sync", "sync"]
