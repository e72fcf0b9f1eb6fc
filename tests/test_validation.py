from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from loadprof.core.clock import FakeClock  # noqa: E402
from loadprof.strategies.validation import select_modules, validate  # noqa: E402


def _model():
    return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(30)])


def test_sample_picks_first_and_last_k():
    named = [(str(i), None) for i in range(30)]
    assert [n for n, _ in select_modules(named, "sample", 3)] == ["0", "1", "2", "27", "28", "29"]
    assert len(select_modules(named, "sample", 20)) == 30 and len(select_modules(named, "full", 0)) == 30


def test_full_counts_every_tensor_and_finds_meta():
    m = _model()
    with torch.device("meta"):
        m[5] = torch.nn.Linear(4, 4)
    clock = FakeClock()
    r = validate(m, "full", 0, clock.now_ns)
    assert r.modules_checked == 31 and r.tensors_checked == 60
    assert r.meta_tensors == ("5.bias", "5.weight") and r.bytes_touched == 0


def test_deep_touches_all_bytes_and_sample_recurses():
    m = _model()
    r = validate(m, "deep", 0, FakeClock().now_ns)
    assert r.bytes_touched == 30 * (16 + 4) * 4
    s = validate(m, "sample", 2, FakeClock().now_ns)
    assert s.mode == "sample:2" and s.modules_checked == 4 and s.tensors_checked == 60 + 3 * 2  # root subtree + layers 0, 28, 29
