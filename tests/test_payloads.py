from __future__ import annotations

from loadprof.core.payloads import ProbeViews
from loadprof.results.model import TrialResult
from tests.helpers import strategy_of

PROBES = {
    "memory": {"name": "memory", "metrics": {
        "timeline": {"columns": ["t_s", "rss_anon_bytes", "rss_file_bytes"], "rows": [[0.1, 10, 20], [0.2, 11, 21], [1]],
                     "every_nth_sample": 3},
        "trial_peak_rss_bytes": 900, "samples": 12, "period_ms": 5.0},
        "per_phase": {"load": {"start_rss_bytes": 100, "end_rss_bytes": 300, "peak_rss_bytes": 400,
                               "start_file_bytes": 10, "end_file_bytes": 60, "some_future_key": 1}}},
    "io": {"name": "io", "metrics": {"storage_read_bytes": 4096, "read_chars": 8192, "most_bytes_read_in": "load"},
           "per_phase": {"load": {"storage_read_bytes": 4096, "read_chars": 8000}}},
    "phases": {"name": "phases", "metrics": {"hooks_installed": 3, "ignored_kwargs": {"offload_state_dict": "x.py:1"},
                                             "from_pretrained_calls": [{"class": "GPT2LMHeadModel",
                                                                        "kwargs": {"dtype": "float16"}}]}},
    "sampling": {"name": "sampling", "metrics": {"ok": True, "rate_hz": 100, "user_functions": [
        {"name": "Old.load", "file": "mm.py", "line": 3, "self_user_s": 2.5, "self_user_samples": 250,
         "share_of_load": 0.5},
        {"name": "New.load", "file": "mm.py", "line": 9, "own_s": 1.0, "own_samples": 100, "own_share_of_load": 0.2,
         "self_user_s": 3.0}]}},
}
METRICS = {"ttft_ms": 12.5, "decode_tok_s": 40.0, "new_tokens": 9, "generate_start_alloc_bytes": 2048,
           "generate_start_alloc_sites": [{"site": "cache_utils.py:434 lazy_initialization", "op": "zeros",
                                           "bytes": 2048, "alive_bytes": 2048, "count": 2, "shape": [1, 2],
                                           "stack": ["a", "b"]}]}


def test_views_read_each_probe_by_attribute_and_ignore_unknown_keys():
    v = ProbeViews.of(PROBES, METRICS)
    load = v.memory.per_phase["load"]
    assert (load.peak_rss_bytes, load.file_growth_bytes, load.peak_cuda_allocated_bytes) == (400, 50, None)
    assert v.memory.timeline == ((0.1, 10, 20), (0.2, 11, 21)) and v.memory.every_nth_sample == 3
    assert v.memory.trial_peak_rss_bytes == 900 and v.memory.present
    assert v.io.storage_read_bytes == 4096 and v.io.per_phase["load"].read_chars == 8000
    assert v.load_phases.ignored_kwargs == {"offload_state_dict": "x.py:1"}
    (call,) = v.load_phases.from_pretrained_calls
    assert (call.cls, call.kwargs) == ("GPT2LMHeadModel", {"dtype": "float16"})
    assert (v.generation.ttft_ms, v.generation.decode_tok_s, v.generation.new_tokens) == (12.5, 40.0, 9)
    (site,) = v.allocations.generate_start_alloc_sites
    assert site.alive_bytes == 2048 and site.shape == (1, 2) and site.stack == ("a", "b")
    assert v.allocations.generate_start_alloc_bytes == 2048


def test_older_user_functions_count_all_their_time_as_their_own():
    old, new = ProbeViews.of(PROBES, {}).sampling.user_functions
    assert (old.phase, old.own_s, old.samples, old.own_share_of_phase) == ("load", 2.5, 250, 0.5)
    assert (new.phase, new.own_s, new.seconds, new.own_share_of_phase) == ("load", 1.0, 3.0, 0.2)


def test_a_probe_that_did_not_run_gives_an_empty_view():
    v = ProbeViews.of({}, {})
    assert not v.memory.present and v.memory.per_phase == {} and v.memory.timeline == ()
    assert not v.io.present and v.io.storage_read_bytes == 0
    assert v.load_phases.from_pretrained_calls == () and v.sampling.user_functions == ()
    assert v.generation.ttft_ms is None and v.allocations.generate_start_alloc_sites == ()


def test_trial_views_are_built_once_from_its_payloads():
    t = TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok", strategy=strategy_of(),
                    probes=PROBES, metrics=METRICS)
    assert t.views is t.views
    assert t.views.memory.per_phase["load"].end_rss_bytes == 300
