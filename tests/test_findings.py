"""Findings rules on hand-built trial results: each fires on its evidence, stays quiet otherwise, ranks."""

from __future__ import annotations

import pytest

from loadprof.analysis.findings import RULES, rank, sweep_findings, trial_findings
from loadprof.results.model import Finding, PhaseTiming, TrialResult
from loadprof.reports import console, html, markdown
from loadprof.results.model import SweepResult
from tests.helpers import memory_payload, phases_payload, sampling_payload, strategy_of, user_function

LOAD = (PhaseTiming("load", 0.0, 5.0, (PhaseTiming("weights", 0.2, 4.9),)),)  # other 0.3 s: covered


def _trial(tid="t-r0", label="x", metrics=None, probes=None, status="ok", env=None, phases=LOAD, strategy=None):
    return TrialResult(trial_id=tid, strategy_id=tid.split("-")[0], label=label, repeat_index=0, status=status,
                       strategy=strategy or strategy_of(), metrics=metrics or {}, probes=probes or {},
                       env=env or {"transformers": "5.23.0"}, phases=phases)


def kinds(t):
    return [f.kind for f in trial_findings(t)]


def test_validation_share_thresholds_and_evidence():
    quiet = _trial(metrics={"load_s": 1.0, "validate_s": 0.05})
    assert kinds(quiet) == []
    loud = _trial(metrics={"load_s": 1.0, "validate_s": 3.0, "validation_mode": "full",
                           "validation_modules_checked": 400, "validation_per_module_median_ms": 7.5})
    (f,) = trial_findings(loud)
    assert f.kind == "validation_share" and f.severity == "high" and f.evidence["share"] == 0.75
    assert "400 modules" in f.detail and "sample:10" in f.fix and f.stake_s == 3.0 and f.stake_basis == "validate_s (measured)"


def test_ignored_kwarg_and_needless_max_memory_from_captured_calls():
    probes = {"phases": phases_payload(
        ignored_kwargs={"low_cpu_mem_usage": "transformers/modeling_utils.py:4171"},
        from_pretrained_calls=[{"class": "Qwen2ForCausalLM",
                                "kwargs": {"device_map": "cuda", "max_memory": {"cpu": "20GiB"},
                                           "low_cpu_mem_usage": True}}])}
    found = {f.kind: f for f in trial_findings(_trial(probes=probes))}
    assert set(found) == {"ignored_kwarg", "needless_max_memory"}
    assert "modeling_utils.py:4171" in found["ignored_kwarg"].detail
    auto = {"phases": phases_payload([{"kwargs": {"device_map": "auto", "max_memory": {}}}])}
    assert kinds(_trial(probes=auto)) == []


def test_repeated_loads_meta_tensors_and_dominant_user_function():
    probes = {"phases": phases_payload([{"kwargs": {}}, {"kwargs": {}}]),
              "sampling": sampling_payload(user_functions=[user_function(
                  name="ModelManager._validate_all_modules", file="mm.py", line=50, own_share_of_phase=0.8,
                  seconds=4.0, own_s=4.0, running_s=4.0, samples=400, hottest_line=53)])}
    t = _trial(metrics={"meta_tensors": 2, "validation_meta_examples": ["lm_head.weight"]}, probes=probes)
    found = {f.kind: f for f in trial_findings(t)}
    assert set(found) == {"repeated_load", "meta_tensors", "dominant_user_function"}
    assert "mm.py:50" in found["dominant_user_function"].detail
    assert found["dominant_user_function"].severity == "high"


def test_cold_read_and_lazy_load():
    t = _trial(metrics={"read_bandwidth_fraction": 0.2, "storage_read_bytes": 2**30, "achieved_read_gb_s": 0.1,
                        "disk_seq_read_gb_s": 0.5, "reading_phases": ["warmup/forward"], "weights_bytes": 1000,
                        "load_s": 0.1, "warmup_s": 2.0},
               probes={"memory": memory_payload({
                   "load": {"start_file_bytes": 0, "end_file_bytes": 10},
                   "warmup/forward": {"start_file_bytes": 10, "end_file_bytes": 990}})})
    assert set(kinds(t)) == {"slow_cold_read", "lazy_load"}
    (lazy,) = [f for f in trial_findings(t) if f.kind == "lazy_load"]
    # what is at stake is the time a look at load alone misses, not memory: mapped pages are page cache
    assert lazy.stake_s == 2.0 and lazy.stake_bytes is None and "page cache" in lazy.stake_basis


def test_failed_trials_give_no_findings_and_rank_merges_repeats():
    assert trial_findings(_trial(status="failed", metrics={"load_s": 1, "validate_s": 9})) == []
    a = _trial("a-r0", "slow", {"load_s": 1.0, "validate_s": 9.0})
    b = _trial("a-r1", "slow", {"load_s": 1.0, "validate_s": 8.0})
    c = _trial("c-r0", "mild", {"load_s": 1.0, "validate_s": 0.2})
    ranked = sweep_findings([c, a, b])
    assert len(ranked) == 1  # one diagnosis, seen in two strategies
    assert ranked[0].label == "mild, slow" and ranked[0].stake_s == 9.0 and ranked[0].severity == "high"
    assert ranked[0].trial_ids == ("c-r0", "a-r0", "a-r1")
    assert rank([]) == []


def test_offload_names_layers_bytes_and_disk_cost():
    t = _trial(metrics={"placement": {"cuda:0": {"bytes": 3 * 2**30, "layers": 20, "entries": 22},
                                      "disk": {"bytes": 2**30, "layers": 8, "entries": 1}}})
    t = TrialResult(**{**t.__dict__, "harness": {"disk_read": {"gb_s": 2.0}}})
    (f,) = trial_findings(t)
    assert f.kind == "offload" and f.severity == "medium"  # 1 of 4 GiB, 0.54 s per forward in a 5 s trial
    assert "8 of 28 layers (1.0 GiB) on disk" in f.title and "main device cuda:0" in f.detail
    assert "0.54 s per forward" in f.detail and f.evidence["layers"] == {"disk": 8}
    assert kinds(_trial(metrics={"placement": {"cpu": {"bytes": 1, "layers": 2, "entries": 1}}})) == []


def test_estimate_discrepancy_reports_ratio_and_cause():
    rows = [{"figure": "weights_bytes", "estimate": 2**30, "measured": 2**31, "ratio": 2.0, "discrepancy": True,
             "likely_cause": "dtype upcast"}, {"figure": "kv_cache_bytes", "discrepancy": False}]
    (f,) = trial_findings(_trial(metrics={"estimate_vs_measured": rows}))
    assert f.kind == "estimate_discrepancy" and "2.00x" in f.title and "dtype upcast" in f.detail


def test_thin_wrapper_around_from_pretrained_is_not_blamed():
    wrapper = user_function(name="load_quick", file="mm.py", line=5, own_share_of_phase=0.0, own_s=0.0, samples=50,
                            share_of_phase=1.0, seconds=0.5, running_s=0.5)
    t = _trial(probes={"sampling": sampling_payload(user_functions=[wrapper])})
    assert kinds(t) == []


def test_user_function_needs_a_meaningful_absolute_cost_too():
    tiny = user_function(name="f", file="m.py", line=1, own_share_of_phase=0.4, own_s=0.04, seconds=0.04, samples=2)
    assert kinds(_trial(probes={"sampling": sampling_payload(user_functions=[tiny])})) == []


def test_cpu_offload_and_disk_offload_stay_two_findings():
    """Seen on an H200: a CPU-offload and a disk-offload strategy were merged into one 'on cpu' finding, which
    hid the 18 layers on disk."""
    cpu = _trial("a-r0", "cpu-offload", {"placement": {"0": {"bytes": 9, "layers": 5, "entries": 7},
                                                       "cpu": {"bytes": 20, "layers": 23, "entries": 25}}})
    disk = _trial("b-r0", "disk-offload", {"placement": {"0": {"bytes": 9, "layers": 5, "entries": 7},
                                                         "cpu": {"bytes": 4, "layers": 5, "entries": 5},
                                                         "disk": {"bytes": 16, "layers": 18, "entries": 20}}})
    again = _trial("a-r1", "cpu-offload", {"placement": {"0": {"bytes": 9, "layers": 5, "entries": 7},
                                                         "cpu": {"bytes": 20, "layers": 23, "entries": 25}}})
    ranked = [f for f in sweep_findings([cpu, disk, again]) if f.kind == "offload"]
    assert len(ranked) == 2
    by_label = {f.label: f for f in ranked}
    assert "18 of 28 layers" in by_label["disk-offload"].title and "on disk" in by_label["disk-offload"].title
    assert by_label["cpu-offload"].trial_ids == ("a-r0", "a-r1")


def _user(**kw):
    base = {"name": "wait_for_lock", "file": "/home/u/mm.py", "line": 5, "phase": "load", "samples": 200,
            "seconds": 4.0, "running_s": 0.0, "waiting_s": 4.0, "waits": {"sleep": 4.0}, "own_s": 4.0}
    return {**base, **kw}


def test_a_waiting_user_function_is_named_with_its_wait_and_share_of_the_load_wall():
    t = _trial(probes={"sampling": sampling_payload(effective_rate_hz=50.0, user_functions=[_user()])})
    (f,) = [f for f in trial_findings(t) if f.kind == "user_wait"]
    assert f.title == "your function wait_for_lock waits 4.00 s (sleep): 80% of the load"
    assert f.mistake and f.stake_s == 4.0 and "200 samples, 50 Hz effective" in f.stake_basis
    assert f.evidence["waiting_s"] == 4.0 and f.evidence["share"] == 0.8 and f.evidence["line"] == 5


def test_a_running_user_function_is_a_dominant_function_with_its_running_and_waiting_split():
    u = _user(name="checksum", running_s=3.0, waiting_s=1.0, waits={"file_read": 1.0})
    (f,) = [f for f in trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[u])}))
            if f.kind == "dominant_user_function"]
    assert f.title == "your function checksum is 80% of the load (4.00 s)"
    assert "3.00 s running, 1.00 s waiting (file_read 1.00 s)" in f.detail


def test_time_another_process_held_the_cpu_is_said_and_left_out_of_the_stake():
    """Beside a busy neighbour a running function sits runnable off the CPU: the run-queue part is named, kept out
    of its running time's verdict (it is not a wait of the user's) and out of the stake."""
    u = _user(name="checksum", running_s=1.0, waiting_s=0.0, waits={}, cpu_wait_s=3.0)  # 4 s: 3 of them queued
    (f,) = [f for f in trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[u])}))
            if f.kind in ("dominant_user_function", "user_wait")]
    assert f.kind == "dominant_user_function" and f.stake_s == pytest.approx(1.0)
    assert "3.00 s waiting for a CPU another process held" in f.detail and "runnable" in f.stake_basis
    gen = _user(name="Proc.__call__", phase="generate", seconds=1.0, running_s=0.5, waiting_s=0.0, waits={},
                own_s=0.0, decode_s=1.0, share_of_decode=0.5, cpu_wait_s=0.5)
    (g,) = [f for f in trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[gen])}))
            if f.kind == "generate_user_code"]
    assert g.stake_s == pytest.approx(0.5) and "0.50 s waiting for a CPU" in g.detail


def test_user_code_in_the_decode_steps_is_named_with_its_share_of_decode():
    u = _user(name="Proc.__call__", phase="generate", seconds=0.5, running_s=0.5, waiting_s=0.0, waits={},
              own_s=0.0, decode_s=0.45, share_of_decode=0.36)
    small = _user(name="tiny", phase="generate", decode_s=0.01, share_of_decode=0.5)
    t = _trial(probes={"sampling": sampling_payload(user_functions=[u, small])})
    (f,) = [f for f in trial_findings(t) if f.kind == "generate_user_code"]
    assert f.title == "your code Proc.__call__ takes 36% of decode (0.45 s)" and f.stake_s == 0.45
    assert "/home/u/mm.py:5" in f.detail and f.mistake


def test_uncovered_time_is_never_silent_and_says_what_was_sampled():
    phases = (PhaseTiming("load", 0.0, 3.0, (PhaseTiming("weights", 0.0, 1.0),)),
              PhaseTiming("trace", 3.0, 4.0, (PhaseTiming("preallocate", 3.0, 3.1),)))  # loadprof's own: skipped
    seen = {"load": {"seconds": 1.9, "running_s": 0.4, "waiting_s": 1.5, "waits": {"socket": 1.5},
                     "top": [{"function": "fetch (/home/u/mm.py:9)", "state": "socket", "seconds": 1.5}]}}
    sampled = _trial(phases=phases, probes={"sampling": sampling_payload(phases=seen)})
    (f,) = [f for f in trial_findings(sampled) if f.kind == "uncovered_time"]
    assert f.title == "2.00 s of load (67%) is in none of its named steps" and f.stake_s == pytest.approx(2.0)
    assert "fetch (/home/u/mm.py:9) socket 1.50 s" in f.detail and not f.mistake
    blind = _trial(phases=phases)
    (g,) = [f for f in trial_findings(blind) if f.kind == "uncovered_time"]
    assert "sampling was off" in g.detail and "sampling_hz" in g.fix
    # the user's own function sampled there is its own finding: its 1.5 s is not also uncovered time
    fetch = _user(name="fetch", own_s=1.5, seconds=1.5, waiting_s=1.5, waits={"socket": 1.5})
    named = _trial(phases=phases, probes={"sampling": sampling_payload(phases=seen, user_functions=[fetch])})
    (h,) = [f for f in trial_findings(named) if f.kind == "uncovered_time"]
    assert h.stake_s == pytest.approx(0.5) and "your code's own 1.50 s more" in h.detail
    assert "user_wait" in kinds(named)


def test_severity_and_order_follow_the_stake_not_the_rule():
    kwarg = _trial(probes={"phases": phases_payload(ignored_kwargs={"offload_state_dict": "m.py:1"})},
                   metrics={"roofline_fraction": 0.05, "decode_tok_s": 10.0, "roofline_tok_s": 200.0,
                            "weights_bytes": 64 * 2**20, "decode_bytes_per_step": 2**20, "membw_gb_s": 10.0, "new_tokens": 32},
                   strategy=strategy_of({"generate": {"batch_size": 1}}))
    ranked = rank(trial_findings(kwarg))
    # the roofline gap puts 3.04 s of a 5 s trial at stake: it leads the ignored kwarg (nothing at stake)
    assert [f.kind for f in ranked] == ["decode_below_roofline", "ignored_kwarg"]
    assert ranked[0].severity == "high" and ranked[0].evidence["stake_share"] == 0.608
    assert ranked[1].severity == "low" and ranked[1].mistake and "stake_share" not in ranked[1].evidence
    assert "batch 1" in ranked[0].detail and "sampling_hz" in ranked[0].fix  # says what limits it, not generic


def test_a_tiny_stake_is_low_whatever_its_share_and_a_large_one_outranks_a_small_one():
    from loadprof.analysis.stake import grade, graded, references

    tiny = Finding("upcast", "high", "t", "d", "f", stake_bytes=270 * 2**10, mistake=True)
    refs = references([_trial(metrics={"weights_bytes": 540 * 2**10})])
    assert graded(tiny, refs).severity == "low" and graded(tiny, refs).evidence["stake_share"] == 0.5
    assert grade(0.8, 41.0, None) == "high" and grade(0.2, 0.35, None) == "medium" and grade(0.05, 9.0, None) == "low"
    big = _trial("b-r0", "big", phases=(PhaseTiming("load", 0.0, 50.0),))
    small = _trial("s-r0", "small", phases=(PhaseTiming("load", 0.0, 1.0),))
    slow = Finding("validation_share", "low", "t", "d", "f", stake_s=41.0, trial_ids=("b-r0",), label="big")
    quick = Finding("repeated_load", "medium", "t", "d", "f", stake_s=0.35, trial_ids=("s-r0",), label="small",
                    mistake=True)
    # each against its own trial: 0.35 s of a 1 s trial is medium, 41 s of 50 s high
    ranked = rank([graded(quick, references([small])), graded(slow, references([big]))])
    assert [f.stake_s for f in ranked] == [41.0, 0.35] and [f.severity for f in ranked] == ["high", "medium"]
    # in one sweep, one denominator (the 50 s trial): the 0.35 s stake is low, never above the 41 s one
    assert graded(quick, references([small, big])).severity == "low"


def test_trials_that_did_not_finish_lead_the_sweep():
    ok = _trial("a-r0", "a", {"load_s": 1.0, "validate_s": 9.0})
    bad = [_trial(f"b-r{i}", "b", status=s) for i, s in enumerate(("failed", "failed", "timeout", "skipped"))]
    ranked = sweep_findings([ok, *bad])
    assert [f.kind for f in ranked] == ["failed_trials", "validation_share"]
    top = ranked[0]
    assert top.title == "3 of 4 trials did not finish (2 failed, 1 timeout)" and top.trial_ids == ("b-r0", "b-r1", "b-r2")
    assert sweep_findings([ok])[0].kind == "validation_share"


def test_every_renderer_opens_with_the_verdict():
    t = _trial(probes={"sampling": sampling_payload(user_functions=[_user()])})
    sweep = SweepResult(run_id="r", name="n", source="s.yaml", created_at="now", trials=(t,),
                        findings=tuple(rank(trial_findings(t))))
    line = "verdict (mistake): your function wait_for_lock waits 4.00 s (sleep): 80% of the load; 4 s at stake"
    assert line in markdown.render(sweep).split("## Summary")[0]
    assert line in html.render(sweep).split('id="summary"')[0]
    assert console.RENDERER.render(sweep).lstrip().startswith(line)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_every_rule_has_a_stake_or_says_why_not(rule):
    """Each rule, fed every hand-built trial of this module, gives findings whose stake is stated or explained."""
    trials = [_trial(probes={"sampling": sampling_payload(user_functions=[_user()])}),
              _trial(metrics={"load_s": 1.0, "validate_s": 0.9}),
              _trial(probes={"phases": phases_payload([{"kwargs": {}}] * 2)},
                     metrics={"load_s": 2.0})]
    for t in trials:
        for f in rule(t):
            assert isinstance(f, Finding) and (f.stake_s is not None or f.stake_bytes is not None or f.stake_basis)


def test_a_phase_whose_only_children_mark_a_moment_has_no_uncovered_time():
    prefill = (PhaseTiming("generate", 0.0, 1.0, (PhaseTiming("prefill", 0.0, 0.9, (PhaseTiming("preallocate", 0.0, 0.01),)),
                                                 PhaseTiming("decode", 0.9, 1.0))),)
    assert "uncovered_time" not in kinds(_trial(phases=prefill))
    # an import the step triggered marks a moment too: materialize with only one has no steps to leave time over
    materialize = (PhaseTiming("load", 0.0, 1.0, (PhaseTiming("weights", 0.0, 1.0, (PhaseTiming(
        "materialize", 0.0, 1.0, (PhaseTiming("lazy_import", 0.1, 0.2),)),)),)),)
    assert "uncovered_time" not in kinds(_trial(phases=materialize))


def test_loadprof_frames_in_an_uncovered_phase_are_tagged_as_its_own():
    from loadprof.analysis.findings import _own

    assert _own("reset_hwm (probes/memory.py:75)") == " [loadprof's probe]"
    assert _own("reset_hwm (site-packages/loadprof/probes/memory.py:75)") == " [loadprof's probe]"
    assert _own("LayerNorm.__init__ (torch/nn/modules/normalization.py:200)") == ""


def test_no_roofline_finding_on_a_busy_trial():
    from tests.test_machine import machine

    m = {"roofline_fraction": 0.05, "decode_tok_s": 10.0, "roofline_tok_s": 200.0, "weights_bytes": 64 * 2**20,
         "decode_bytes_per_step": 2**20, "membw_gb_s": 10.0, "new_tokens": 32}
    assert "decode_below_roofline" in kinds(_trial(metrics=m))
    assert "decode_below_roofline" not in kinds(_trial(metrics=m, probes={"machine": machine(others_cpu_cores=1.5)}))


def test_no_roofline_finding_for_tiny_weights_and_no_zero_percent():
    base = {"decode_tok_s": 10.0, "roofline_tok_s": 2000.0, "decode_bytes_per_step": 2**20, "membw_gb_s": 10.0,
            "new_tokens": 32}
    tiny = _trial(metrics={**base, "roofline_fraction": 0.005, "weights_bytes": 3 * 2**20})
    assert "decode_below_roofline" not in kinds(tiny)
    big = _trial(metrics={**base, "roofline_fraction": 0.004, "weights_bytes": 64 * 2**20})
    (f,) = [f for f in trial_findings(big) if f.kind == "decode_below_roofline"]
    assert f.title == "decode runs at 0.4% of its memory-bandwidth bound"


def _callee(name: str, line: int, seconds: float, **kw):
    return {"name": name, "line": line, "seconds": seconds, "own_s": seconds, **kw}


def test_a_call_that_holds_most_of_the_function_is_named_in_the_title_with_its_line_and_fix():
    calls = [_callee("AutoModel.from_config", 12, 3.0), _callee("(own code)", 14, 0.5, how="line"),
             _callee("sum", 15, 0.5, how="line")]
    u = user_function(name="ModelManager.load", file="/home/u/loader.py", line=10, seconds=4.0, own_s=4.0,
                      running_s=4.0, samples=400, callees=calls)
    (f,) = trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[u])}))
    assert f.title == "`ModelManager.load`: 60% of the load is `AutoModel.from_config` random weight init " \
                      "(loader.py:12, 3.00 s)"
    assert "`sum` (loader.py:15) 0.50 s (12%)" in f.detail and "meta device" in f.fix
    assert (f.evidence["call"], f.evidence["call_line"], f.evidence["call_s"]) == ("AutoModel.from_config", 12, 3.0)
    # no call over half the function's time: the function is the title, the breakdown is in the detail
    even = {**u, "callees": [_callee("a.b", 1, 2.0), _callee("c.d", 2, 2.0)]}
    (g,) = trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[even])}))
    assert g.title.startswith("your function ModelManager.load is") and "`a.b` (loader.py:1) 2.00 s (50%)" in g.detail
    assert "call" not in g.evidence and "remove or sample" in g.fix  # an unknown call: no made-up advice


def test_a_wait_inside_a_known_call_is_named_with_its_fix():
    calls = [_callee("subprocess.run", 20, 3.0, waits={"sleep": 3.0})]
    u = user_function(name="check_env", file="/home/u/loader.py", line=18, seconds=3.0, own_s=3.0, running_s=0.0,
                      waiting_s=3.0, waits={"sleep": 3.0}, samples=300, callees=calls)
    (f,) = trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[u])}))
    assert f.kind == "user_wait" and "`subprocess.run` a subprocess (loader.py:20" in f.title and "waiting (sleep)" in f.title
    assert "once at start-up" in f.fix and "waiting: sleep 3.00 s" in f.detail


def test_decode_user_code_names_the_call_in_its_steps():
    calls = [{"name": "time.sleep", "line": 40, "seconds": 0.9, "decode_s": 0.9, "how": "line"}]
    u = user_function(name="SlowSink.put", file="/home/u/s.py", line=38, phase="generate", seconds=0.9,
                      decode_s=0.9, share_of_decode=0.6, running_s=0.0, waiting_s=0.9, callees=calls)
    (f,) = trial_findings(_trial(probes={"sampling": sampling_payload(user_functions=[u])}))
    assert f.kind == "generate_user_code" and f.title.endswith(": `time.sleep` (s.py:40)")
    assert "per-token path" in f.fix and f.evidence["call"] == "time.sleep"


def test_memory_culprit_names_each_call_with_its_bytes_and_what_is_still_held():
    mib = 2**20
    calls = [_callee("torch.Tensor.clone", 14, 0.1, added_bytes=475 * mib, held_bytes=475 * mib),
             _callee("copy.deepcopy", 20, 0.2, added_bytes=480 * mib, held_bytes=470 * mib),
             _callee("tiny.call", 22, 0.1, added_bytes=mib, held_bytes=mib)]
    u = user_function(name="ModelManager._keep_pristine", file="/home/u/manager.py", line=12, callees=calls)
    t = _trial(metrics={"weights_bytes": 500 * mib},
               probes={"sampling": sampling_payload(user_functions=[u]),
                       "memory": memory_payload({"load": {"peak_rss_bytes": 1500 * mib, "start_anon_bytes": 300 * mib,
                                                          "end_anon_bytes": 1745 * mib}})})
    (f,) = [f for f in trial_findings(t) if f.kind == "memory_culprit"]
    assert f.title == ("load: `torch.Tensor.clone` in `ModelManager._keep_pristine` (manager.py:14) +475.0 MiB still "
                       "held, `copy.deepcopy` in `ModelManager._keep_pristine` (manager.py:20) +480.0 MiB still held; "
                       "peak 1.5 GiB vs 500.0 MiB of weights")
    assert f.stake_bytes == 945 * mib and f.severity == "high" and len(f.evidence["calls"]) == 2  # 1 MiB: not named
    assert "deep copy" in f.detail and "share the model" in f.fix
    # the phase kept only 200 MiB beyond the weights: no more is at stake; the model's own construction never is
    kept = _trial(metrics={"weights_bytes": 500 * mib}, probes={
        "sampling": sampling_payload(user_functions=[{**u, "callees": [*calls, _callee(
            "AutoModel.from_pretrained", 13, 1.0, added_bytes=600 * mib, held_bytes=600 * mib)]}]),
        "memory": memory_payload({"load": {"start_anon_bytes": 0, "end_anon_bytes": 700 * mib}})})
    (k,) = [f for f in trial_findings(kept) if f.kind == "memory_culprit"]
    assert k.stake_bytes == 200 * mib and "from_pretrained" not in k.title
    # under a quarter of the weights: not a finding
    small = _trial(metrics={"weights_bytes": 8000 * mib}, probes={"sampling": sampling_payload(user_functions=[u])})
    assert [f for f in trial_findings(small) if f.kind == "memory_culprit"] == []


def test_a_call_that_grew_the_cuda_allocator_is_a_memory_culprit_against_the_weights_on_the_gpu():
    mib = 2**20
    calls = [_callee("torch.Tensor.clone", 14, 0.1, added_bytes=2 * mib, held_bytes=2 * mib,
                     added_cuda_bytes=400 * mib, held_cuda_bytes=400 * mib)]
    u = user_function(name="ModelManager._keep_pristine", file="/home/u/manager.py", line=12, callees=calls)
    t = _trial(metrics={"weights_bytes": 500 * mib, "bytes_by_device": {"cuda:0": 500 * mib}},
               probes={"sampling": sampling_payload(user_functions=[u]),
                       "memory": memory_payload({"load": {"start_cuda_allocated_bytes": 0,
                                                          "end_cuda_allocated_bytes": 900 * mib,
                                                          "peak_cuda_allocated_bytes": 950 * mib}})})
    (f,) = [f for f in trial_findings(t) if f.kind == "memory_culprit"]  # 2 MiB of RSS: under the floor
    assert f.title == ("load: `torch.Tensor.clone` in `ModelManager._keep_pristine` (manager.py:14) +400.0 MiB on "
                       "CUDA still held; peak 950.0 MiB vs 500.0 MiB of weights")
    assert f.stake_bytes == 400 * mib and f.evidence["memory"] == "cuda" and "CUDA allocator" in f.stake_basis
    assert "still allocated" in f.detail
    # host memory is weighed against the weights left on the host: none here, so a 300 MiB host copy is named too
    host = [_callee("torch.Tensor.cpu", 15, 0.1, added_bytes=300 * mib, held_bytes=300 * mib)]
    t2 = _trial(metrics={"weights_bytes": 500 * mib, "bytes_by_device": {"cuda:0": 500 * mib}},
                probes={"sampling": sampling_payload(user_functions=[{**u, "callees": host}]),
                        "memory": memory_payload({"load": {"start_anon_bytes": 0, "end_anon_bytes": 300 * mib}})})
    (g,) = [f for f in trial_findings(t2) if f.kind == "memory_culprit"]
    assert g.evidence["memory"] == "anon" and g.stake_bytes == 300 * mib


def test_a_bytes_stake_is_also_weighed_against_the_memory_budget():
    from loadprof.analysis.stake import budget_share, graded, references

    gib = 2**30

    def trial(limit, peak):
        return _trial(metrics={"weights_bytes": 14 * gib}, strategy=strategy_of({"memory_limit": limit} if limit else {}),
                      probes={"memory": memory_payload({"load": {"peak_rss_bytes": peak}})})

    copy = Finding("memory_culprit", "medium", "t", "d", "f", stake_bytes=3 * gib, mistake=True)
    # against the weights alone 3 of 14 GiB is medium; over a 16 GiB budget it decides whether the model fits
    assert graded(copy, references([trial(None, 17 * gib)]), trial(None, 17 * gib)).severity == "medium"
    over = trial("16GiB", 17 * gib)
    assert budget_share(3 * gib, over) == 1.0 and graded(copy, references([over]), over).severity == "high"
    # under a roomy budget it takes its share of the headroom above the weights (3 of 18 GiB: the weights' share wins)
    roomy = trial("32GiB", 17 * gib)
    assert budget_share(3 * gib, roomy) == 3 / 18
    assert graded(copy, references([roomy]), roomy).evidence["stake_share"] == round(3 / 14, 4)
    assert budget_share(3 * gib, trial(None, 17 * gib)) is None  # no budget: the weights decide
