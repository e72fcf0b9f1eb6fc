from __future__ import annotations

import dataclasses

import pytest

from loadprof.analysis.derive import enrich, io_summary, workload_peaks
from loadprof.results.model import PhaseTiming, TrialResult
from tests.helpers import strategy_of


def _trial(read_by_phase, harness=None, total=None):
    phases = (PhaseTiming("load", 0.0, 1.0, (PhaseTiming("weights", 0.0, 0.5),)), PhaseTiming("warmup", 1.0, 3.0))
    total = total if total is not None else max(read_by_phase.values())
    per = {p: {"storage_read_bytes": b, "read_chars": b} for p, b in read_by_phase.items()}
    io = {"storage_read_bytes": total, "read_chars": total, "per_phase": per}
    return TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                       phases=phases, probes={"io": io}, harness=harness or {})


def test_rate_uses_reading_leaf_phases_and_disk_limit():
    t = _trial({"load": 2**30, "load/weights": 2**30, "warmup": 0}, harness={"disk_read": {"gb_s": 4.0}})
    s = io_summary(t)
    assert s["reading_phases"] == ["load/weights"]
    assert s["achieved_read_gb_s"] == pytest.approx(2**30 / 0.5 / 1e9)
    assert s["read_bandwidth_fraction"] == pytest.approx(s["achieved_read_gb_s"] / 4.0)
    assert s["storage_read_bytes_by_phase"] == {"load": 2**30}
    assert enrich(t).metrics["storage_read_bytes"] == 2**30


def test_small_reads_get_no_rate():
    s = io_summary(_trial({"warmup": 1000}))
    assert "achieved_read_gb_s" not in s and s["storage_read_bytes"] == 1000


def test_roofline_bytes_per_step_and_fraction():
    t = TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok",
                    strategy=strategy_of({"generate": {"batch_size": 2, "prompt_tokens": 10}}),
                    metrics={"membw_gb_s": 10.0, "decode_tok_s": 5.0, "weights_bytes": 10**9, "new_tokens": 20,
                             "estimate": {"kv_bytes_per_token": 1000}})
    from loadprof.analysis.derive import roofline

    r = roofline(t)
    assert r["decode_bytes_per_step"] == 10**9 + 2 * 1000 * 20
    assert r["roofline_tok_s"] == pytest.approx(10e9 / r["decode_bytes_per_step"] * 2)
    assert r["roofline_fraction"] == pytest.approx(5.0 / r["roofline_tok_s"])
    assert roofline(TrialResult(**{**t.__dict__, "metrics": {}})) == {}


def test_cold_call_extra_only_with_a_warmup_and_compile_label_on_cuda_static():
    from loadprof.analysis.derive import cold_call

    base = dict(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok",
                strategy=strategy_of({"generate": {"cache_implementation": "static"}, "load": {"device_map": "cuda"}}),
                metrics={"cold_generate_s": 3.0, "generate_call_s": 1.0, "generate_calls_warmup": 1})
    assert cold_call(TrialResult(**base)) == {"cold_call_extra_s": 2.0}
    gpu = cold_call(TrialResult(**base, env={"cuda_available": True}))
    assert gpu["cold_call_extra_includes"].startswith("torch.compile")
    assert cold_call(TrialResult(**{**base, "metrics": {**base["metrics"], "generate_calls_warmup": 0}})) == {}


def test_transfer_rate_is_gpu_bytes_over_the_placing_phase_against_measured_h2d():
    from loadprof.analysis.derive import transfer

    weights = PhaseTiming("weights", 0.0, 1.5, (PhaseTiming("materialize", 0.5, 1.5),))
    phases = (PhaseTiming("load", 0.0, 2.0, (weights,)),)
    t = TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                    phases=phases, metrics={"bytes_by_device": {"cuda:0": 3 * 10**9, "cpu": 10**9},
                                            "h2d_pageable_gb_s": 6.0})
    r = transfer(t)
    assert r["load_h2d_bytes"] == 3 * 10**9 and r["load_h2d_phase"] == "materialize"
    assert r["load_h2d_gb_s"] == pytest.approx(3.0) and r["load_h2d_fraction"] == pytest.approx(0.5)
    cpu_only = TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                           phases=phases, metrics={"bytes_by_device": {"cpu": 10**9}})
    assert transfer(cpu_only) == {}


def _phase_memory(peak: int, cuda: int | None = None) -> dict:
    base = dict.fromkeys(("start_rss_bytes", "end_rss_bytes", "peak_sampled_rss_bytes", "start_anon_bytes",
                          "end_anon_bytes", "peak_anon_bytes", "start_file_bytes", "end_file_bytes", "minor_faults",
                          "major_faults"), 0)
    return {**base, "peak_rss_bytes": peak, "peak_cuda_allocated_bytes": cuda}


def _memory(per_phase: dict, trial_peak: int = 900) -> dict:
    return {"per_phase": per_phase, "timeline": {"columns": [], "rows": [], "every_nth_sample": 1},
            "trial_peak_rss_bytes": trial_peak, "end_rss_bytes": 0, "end_anon_bytes": 0, "end_file_bytes": 0,
            "samples": 0, "period_ms": 10.0}


def test_workload_peak_excludes_loadprofs_own_phases_and_enrich_adds_phase_totals():
    memory = _memory({"load": _phase_memory(500), "load/weights": _phase_memory(500),
                      "generate": _phase_memory(600, 70), "membw": _phase_memory(900, 99), "trace": _phase_memory(800)})
    t = dataclasses.replace(_trial({"load": 1}), probes={"memory": memory})
    assert workload_peaks(t) == {"peak_rss_bytes": 600, "peak_cuda_allocated_bytes": 70}
    crashed = dataclasses.replace(t, probes={"memory": _memory({}, trial_peak=5)})
    assert workload_peaks(crashed) == {"peak_rss_bytes": 5}  # no phase ended: the whole trial's peak
    assert workload_peaks(dataclasses.replace(t, probes={})) == {}
    m = enrich(t).metrics
    assert (m["load_s"], m["warmup_s"], m["peak_rss_bytes"]) == (1.0, 2.0, 600)
    assert m["load_cost_s"] == 1.0 + 2.0  # derived from the totals enrich added first (no forward: warmup_s)
