from __future__ import annotations

import json

from loadprof.conclusions import (CapWarning, Figure, Recommendation, Recommendations, RunnerUp, Study,
                                  studies_from_dict, studies_to_dict)


def test_recommendations_serialize_once_and_read_back_equal():
    recs = Recommendations(
        objectives={"ttft": Recommendation("ttft", Figure("ttft_ms", 21.2, "ms"), label="dyn", trial_ids=("a-r0",),
                                           settings={"dtype": "bfloat16"},
                                           runner_up=RunnerUp("static", ("b-r0",), Figure("ttft_ms", 22.2, "ms")),
                                           margin_pct=4.4, tradeoffs=("x",)),
                    "load": Recommendation("load", Figure("load_first_forward_validate_s", None, "s"),
                                           reason="no ok trial to recommend from")},
        memory_budget_bytes=None, peak_metric="peak_rss_bytes",
        max_new_tokens_warnings=(CapWarning("static", ("b-r0",), 9, 32, 0.28, "answers used 28%"),),
        excluded_over_budget=("big",))
    d = json.loads(json.dumps(recs.to_dict()))
    assert d["objectives"]["ttft"]["runner_up"]["figure"] == {"name": "ttft_ms", "value": 22.2, "unit": "ms"}
    assert d["excluded_over_budget"] == ["big"] and d["max_new_tokens_warnings"][0]["trial_ids"] == ["b-r0"]
    assert Recommendations.from_dict(d) == recs


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
