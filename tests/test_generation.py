from __future__ import annotations

import pytest

from loadprof.probes.generation import CallTiming, percentile, summarize


def _call(t0, steps, ret):
    return CallTiming(t_call_ns=t0, t_return_ns=ret, steps_ns=steps, new_tokens=len(steps))


def test_summary_splits_cold_call_and_measures_warm_ones():
    cold = _call(0, [50_000_000, 60_000_000, 70_000_000], 71_000_000)
    warm = _call(100_000_000, [110_000_000, 112_000_000, 114_000_000, 116_000_000], 117_000_000)
    m = summarize([cold, warm], warm_from=1, batch_size=4)
    assert m["cold_ttft_ms"] == 50.0 and m["ttft_ms"] == 10.0
    assert m["decode_tok_s_per_seq"] == pytest.approx(3 / 0.006)
    assert m["decode_tok_s"] == pytest.approx(4 * 3 / 0.006)
    assert m["per_token_ms_p50"] == pytest.approx(2.0) and m["new_tokens"] == 4
    assert m["generate_calls_measured"] == 1 and m["generate_calls_warmup"] == 1


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([], 0.9) is None and percentile([7], 0.99) == 7
