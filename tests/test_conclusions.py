from __future__ import annotations

import json

from loadprof.core.conclusions import (Candidate, CapWarning, Estimate, Figure, Recommendation, Recommendations, RunnerUp, Study,
                                  studies_from_dict, studies_to_dict)


def test_recommendations_serialize_once_and_read_back_equal():
    est = Estimate(21.2, 20.9, 21.5, 3, 20.8, 21.7)
    recs = Recommendations(
        picks=(Recommendation("ttft", Figure("ttft_ms", 21.2, "ms"), label="dyn", trial_ids=("a-r0",),
                              settings={"dtype": "bfloat16"},
                              runner_up=RunnerUp("static", ("b-r0",), Figure("ttft_ms", 22.2, "ms")),
                              margin_pct=4.4, tradeoffs=("x",), model="gpt2", verdict="tie", estimate=est,
                              tied=("static",), rule="lowest peak", pooled=("load.file_cache",),
                              candidates=(Candidate("dyn", ("a-r0",), est, 2), Candidate("static", ("b-r0",), None)),
                              method="bootstrap", notes=("file_cache: why",)),
               Recommendation("load", Figure("load_cost_s", None, "s"), model="gpt2",
                              reason="no ok trial to recommend from")),
        memory_budget_bytes=None, peak_metric="peak_rss_bytes",
        max_new_tokens_warnings=(CapWarning("static", ("b-r0",), 9, 32, 0.28, "answers used 28%"),),
        excluded_over_budget=("big",))
    d = json.loads(json.dumps(recs.to_dict()))
    assert d["picks"][0]["runner_up"]["figure"] == {"name": "ttft_ms", "value": 22.2, "unit": "ms"}
    assert d["picks"][0]["estimate"]["q3"] == 21.5 and d["picks"][0]["candidates"][0]["strategies"] == 2
    assert d["excluded_over_budget"] == ["big"] and d["max_new_tokens_warnings"][0]["trial_ids"] == ["b-r0"]
    assert Recommendations.from_dict(d) == recs
    assert recs.get("ttft").label == "dyn" and recs.get("load", "gpt2").verdict == "none" and recs.models == ["gpt2"]


def test_schema_2_recommendations_read_as_picks():
    old = {"peak_metric": "peak_rss_bytes", "objectives": {"ttft": {
        "objective": "ttft", "figure": {"name": "ttft_ms", "value": 3.0, "unit": "ms"}, "label": "a"}}}
    r = Recommendations.from_dict(old).get("ttft")
    assert r.label == "a" and r.verdict == "pick" and r.model == ""


def test_no_recommendations_serialize_as_nothing():
    assert Recommendations().to_dict() == {} and Recommendations.from_dict(None) == Recommendations()


def test_a_cap_warning_without_advice_gets_one_from_its_figures():
    w = CapWarning.from_dict({"label": "other", "generated": 3, "cap": 64, "share": 0.047})
    assert w.advice == "generated 3 of max_new_tokens=64 (5%)" and w.trial_ids == ()


def test_studies_keep_their_kind_order_and_json_shape():
    s = (Study("batch_size", "generate.batch_size", "tiny", {"load.dtype": "float32"}, ("t1", "t2"),
               {"rows": [{"batch_size": 1}], "baseline_batch_size": 1}),
         Study("max_new_tokens", "generate.max_new_tokens", "tiny", {}, ("t3",), {"points": []}))
    d = studies_to_dict(s)
    assert list(d) == ["max_new_tokens", "batch_size", "quantization"]
    assert d["batch_size"] == [{"vary": "generate.batch_size", "description": "tiny", "fixed": {"load.dtype": "float32"},
                                "trial_ids": ["t1", "t2"], "rows": [{"batch_size": 1}], "baseline_batch_size": 1}]
    assert studies_from_dict(d) == (s[1], s[0])
