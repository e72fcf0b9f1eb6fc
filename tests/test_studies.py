"""Studies on hand-built trial results: grouping, fits, site attribution, batch scaling, quantization, finding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.console import Console

import numpy as np

from loadprof.results.model import TrialResult
from loadprof.analysis.studies import (batch_scaling, covering_cap, max_new_tokens_curve, preallocation_findings,
                                       quantization_comparison, series, studies, study_of)
from loadprof.reports.study_tables import study_tables
from loadprof.reports.study_tables import render_studies
from loadprof.results.model import Study
from loadprof.core.conclusions import studies_from_dict, studies_to_dict
from loadprof.strategies.model import GenerateSpec, LoadSpec, ModelSpec, Strategy
from tests.conftest import REPO

KIB, MIB = 2**10, 2**20


def strat(model="gpt2", dtype="float16", quant="none", cap=32, batch=1, cache="static", prompt=32, label="x",
          repeats=1) -> Strategy:
    return Strategy(model=ModelSpec(hub_id=model), load=LoadSpec(dtype=dtype, quantization=quant),
                    generate=GenerateSpec(prompt_tokens=prompt, max_new_tokens=cap, batch_size=batch,
                                          cache_implementation=cache, repeats=repeats), label=label)


_n = iter(range(10**6))


def trial(strategy: Strategy, metrics: dict, repeat=0, status="ok") -> TrialResult:
    i = next(_n)
    return TrialResult(trial_id=f"t{i}-r{repeat}", strategy_id=f"s{i}", label=strategy.label, repeat_index=repeat,
                       status=status, strategy=strategy, metrics=metrics)


# ------------------------------------------------------------ grouping

def test_series_groups_only_what_differs_in_vary_and_takes_medians():
    ts = [
        trial(strat(cap=16, label="a"), {"ttft_ms": 10.0, "new_tokens": 9}, repeat=0),
        trial(strat(cap=16, label="b", repeats=3), {"ttft_ms": 30.0, "new_tokens": 9}, repeat=1),
        trial(strat(cap=16, label="c"), {"ttft_ms": 20.0, "new_tokens": 8}, repeat=2),
        trial(strat(cap=32, label="d"), {"ttft_ms": 40.0, "new_tokens": 9}),
        trial(strat(cap=64), {"ttft_ms": 99.0}, status="failed"),          # not ok: ignored
        trial(strat(cap=64, batch=2), {"ttft_ms": 50.0}),                   # differs in batch too
        trial(strat(model="other", cap=16), {"ttft_ms": 1.0}),              # other model, one value only
        trial(strat(model="third", cap=16), {"ttft_ms": 1.0}),
        trial(strat(model="third", cap=32), {"ttft_ms": 2.0}),
    ]
    groups = series(ts, "generate.max_new_tokens")
    assert [g["fixed"]["model"] for g in groups] == ["gpt2", "third"]
    g = groups[0]
    assert [p["value"] for p in g["points"]] == [16, 32]
    assert [p["repeats"] for p in g["points"]] == [3, 1]
    assert g["points"][0]["metrics"]["ttft_ms"] == 20.0
    assert g["points"][0]["new_tokens_seen"] == [8, 9]
    assert "generate.max_new_tokens" not in g["fixed"] and g["fixed"]["generate.batch_size"] == 1
    assert len(g["trial_ids"]) == 4
    assert series(ts, "generate.batch_size") == []   # batch 2 has no batch-1 twin (cap 64 differs)


def test_quantization_series_keeps_load_dtype_in_the_key():
    ts = [trial(strat(quant="none", dtype="float16"), {}), trial(strat(quant="bnb-8bit", dtype="float16"), {}),
          trial(strat(quant="bnb-4bit-nf4", dtype="bfloat16"), {})]
    (g,) = series(ts, "load.quantization")
    assert [p["value"] for p in g["points"]] == ["none", "bnb-8bit"]
    assert g["fixed"]["load.dtype"] == "float16"


def test_medians_of_nested_metrics_and_sites():
    ts = [trial(strat(cap=c), {"estimate": {"kv_bytes_per_token": k},
                               "generate_start_alloc_sites": [{"site": "m.py:1 f", "op": "aten.zeros", "bytes": b,
                                                               "alive_bytes": b, "count": 1}]})
          for c, k, b in ((16, 10, 100), (16, 30, 300), (16, 20, 200), (32, 5, 5))]
    m = series(ts, "generate.max_new_tokens")[0]["points"][0]["metrics"]
    assert m["estimate"] == {"kv_bytes_per_token": 20}
    assert m["generate_start_alloc_sites"] == [{"site": "m.py:1 f", "op": "aten.zeros", "bytes": 200,
                                                "alive_bytes": 200, "count": 1}]


# ------------------------------------------------------------ fits

def test_covering_cap():
    assert [covering_cap(o) for o in ([9], [13], [100], [103], [3, 1], [])] == [16, 32, 128, 256, 16, None]


CAPS = (16, 32, 64, 128)


def _curve_trials(alloc, call_s, ttft, sites=None, new_tokens=9, cache="static"):
    out = []
    for c in CAPS:
        m = {"generate_call_s": call_s(c), "ttft_ms": ttft(c), "per_token_ms_p50": 5.0, "new_tokens": new_tokens,
             "generate_start_alloc_bytes": alloc(c)}
        if sites:
            m["generate_start_alloc_sites"] = sites(c)
        out.append(trial(strat(cap=c, cache=cache), m))
    return out


def _sites(c):
    rows = [{"site": "cache_utils.py:80 StaticLayer.lazy_init", "op": "aten.zeros", "bytes": 16 * KIB * c,
             "alive_bytes": 16 * KIB * c, "count": 2, "shape": [1, 2, 32 + c, 64]},
            {"site": "modeling.py:12 make_bias", "op": "aten.ones", "bytes": 8 * KIB * c + 4096,
             "alive_bytes": 8 * KIB * c + 4096, "count": 1},
            {"site": "modeling.py:40 rope", "op": "aten.empty", "bytes": 4096, "alive_bytes": 4096, "count": 1}]
    return rows


def test_linear_preallocation_growth_sites_covering_cap_and_saving():
    ts = _curve_trials(alloc=lambda c: MIB + 24 * KIB * c, call_s=lambda c: 0.1 + 0.002 * c,
                       ttft=lambda c: 20.0 + 0.5 * c, sites=_sites)
    (g,) = series(ts, "generate.max_new_tokens")
    c = max_new_tokens_curve(g)
    assert [p["cap"] for p in c["points"]] == list(CAPS)
    fb = c["fits"]["generate_start_alloc_bytes"]
    assert fb["model"] == "linear" and fb["r2"] == 1.0 and c["growth"] == "linear"
    assert c["alloc_bytes_per_cap_token"] == pytest.approx(24 * KIB, rel=1e-12)
    assert c["generate_call_ms_per_cap_token"] == pytest.approx(2.0, rel=1e-9)
    assert c["ttft_ms_per_cap_token"] == pytest.approx(0.5, rel=1e-9)
    assert c["fits"]["generate_call_s"]["model"] == "linear"
    assert [(s["site"], s["op"]) for s in c["sites"]] == [
        ("cache_utils.py:80 StaticLayer.lazy_init", "aten.zeros"), ("modeling.py:12 make_bias", "aten.ones")]
    assert [s["bytes_per_cap_token"] for s in c["sites"]] == [pytest.approx(16 * KIB), pytest.approx(8 * KIB)]
    assert [s["share"] for s in c["sites"]] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert c["observed_new_tokens"] == [9] and c["covering_cap"] == 16 and c["largest_cap"] == 128
    assert c["saving_bytes"] == pytest.approx(24 * KIB * 112, rel=1e-9)
    assert c["saving_ms"] == pytest.approx(2.0 * 112, rel=1e-9)
    json.dumps(c)

    (f,) = preallocation_findings([Study.from_dict("max_new_tokens", c)])
    assert f.kind == "max_new_tokens_preallocation" and f.severity == "high"   # 224 ms > 10% of 356 ms
    assert "StaticLayer.lazy_init" in f.title and "24.0 KiB per token of max_new_tokens" in f.title
    assert "linear" in f.detail and "R^2 1.000" in f.detail and "2.000 ms per token of cap" in f.detail
    assert "answers were 9 tokens long" in f.detail
    assert f.fix.startswith("set max_new_tokens to 16 (covers the observed lengths)") and "dynamic cache" in f.fix
    assert f.evidence["covering_cap"] == 16 and f.evidence["saving_ms"] == pytest.approx(224.0)
    assert set(f.trial_ids) == {t.trial_id for t in ts}
    assert f.stake_s == pytest.approx(0.224) and f.mistake


def test_small_saving_is_medium_severity():
    ts = _curve_trials(alloc=lambda c: MIB + 24 * KIB * c, call_s=lambda c: 10.0 + 0.0001 * c, ttft=lambda c: 20.0)
    c = max_new_tokens_curve(series(ts, "generate.max_new_tokens")[0])
    assert c["sites"] == []
    (f,) = preallocation_findings([Study.from_dict("max_new_tokens", c)])
    assert f.severity == "medium" and f.title.startswith("memory allocated before the first token grows")


def test_quadratic_time_detected():
    caps = (16, 64, 256, 1024)
    ts = [trial(strat(cap=c), {"generate_call_s": 0.5 + 1e-5 * c * c, "ttft_ms": 10 + 1e-3 * c * c,
                               "generate_start_alloc_bytes": 4 * (32 + c) ** 2, "new_tokens": 9}) for c in caps]
    c = max_new_tokens_curve(series(ts, "generate.max_new_tokens")[0])
    fg = c["fits"]["generate_call_s"]
    assert fg["model"] == "quadratic" and fg["r2"] == 1.0 and fg["r2_by_model"]["linear"] < 0.99
    assert c["fits"]["ttft_ms"]["model"] == "quadratic" and c["growth"] == "quadratic"
    # the chosen (quadratic) model predicts the saving from cap 1024 to 16
    assert c["saving_ms"] == pytest.approx(1e-2 * (1024**2 - 16**2), rel=1e-6)
    assert c["saving_bytes"] == pytest.approx(4 * ((32 + 1024) ** 2 - (32 + 16) ** 2), rel=1e-6)


def test_dynamic_cache_constant_alloc_is_no_growth_and_no_finding():
    ts = _curve_trials(alloc=lambda c: 2 * MIB + (c % 3) * 1000, call_s=lambda c: 0.2, ttft=lambda c: 20.0,
                       cache="dynamic")
    c = max_new_tokens_curve(series(ts, "generate.max_new_tokens")[0])
    assert c["growth"] == "none" and c["sites"] == [] and c["saving_bytes"] is None and c["saving_ms"] is None
    assert c["fits"]["generate_call_s"]["model"] == "constant"
    assert preallocation_findings([Study.from_dict("max_new_tokens", c)]) == []
    exact = max_new_tokens_curve(series(_curve_trials(lambda c: 2 * MIB, lambda c: 0.2, lambda c: 20.0,
                                                      cache="dynamic"), "generate.max_new_tokens")[0])
    assert exact["growth"] == "none" and exact["fits"]["generate_start_alloc_bytes"]["model"] == "constant"


def test_no_alloc_metric_means_unknown_growth_and_no_finding():
    ts = _curve_trials(alloc=lambda c: None, call_s=lambda c: 0.1 + 0.002 * c, ttft=lambda c: 20.0)
    c = max_new_tokens_curve(series(ts, "generate.max_new_tokens")[0])
    assert c["growth"] is None and c["alloc_bytes_per_cap_token"] is None
    assert c["saving_ms"] == pytest.approx(224.0)
    assert preallocation_findings([Study.from_dict("max_new_tokens", c)]) == []


# ------------------------------------------------------------ batch scaling, quantization

def test_batch_scaling_speedup_efficiency_and_kv():
    ts = [trial(strat(batch=b, cache="dynamic"), {"decode_tok_s": tok, "ttft_ms": 10.0 * b, "new_tokens": 32,
                                                  "estimate": {"kv_bytes_per_token": 1024}})
          for b, tok in ((1, 100.0), (2, 160.0), (4, 260.0), (8, 300.0))]
    (g,) = series(ts, "generate.batch_size")
    b = batch_scaling(g)
    rows = b["rows"]
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8]
    assert [r["speedup"] for r in rows] == pytest.approx([1.0, 1.6, 2.6, 3.0])
    assert [r["efficiency_pct"] for r in rows] == pytest.approx([100.0, 80.0, 65.0, 37.5])
    assert [r["kv_bytes_per_seq"] for r in rows] == [64 * 1024] * 4
    assert [r["kv_bytes_total"] for r in rows] == [64 * 1024 * n for n in (1, 2, 4, 8)]
    assert b["best_efficiency_batch_size"] == 2 and b["best_throughput_batch_size"] == 8
    assert [r["best_efficiency"] for r in rows] == [False, True, False, False]
    assert [r["best_throughput"] for r in rows] == [False, False, False, True]


def test_batch_scaling_from_batch_2_and_static_cache_sized_by_cap():
    ts = [trial(strat(batch=b, cap=64, cache="static"), {"decode_tok_s": tok, "new_tokens": 9,
                                                         "estimate": {"kv_bytes_per_token": 100}})
          for b, tok in ((2, 100.0), (4, 150.0))]
    b = batch_scaling(series(ts, "generate.batch_size")[0])
    assert b["baseline_batch_size"] == 2
    assert [r["efficiency_pct"] for r in b["rows"]] == pytest.approx([100.0, 75.0])
    assert [r["kv_bytes_per_seq"] for r in b["rows"]] == [100 * (32 + 64)] * 2


def test_quantization_saved_pct_speedup_ttft_and_load():
    ts = [trial(strat(quant="none"), {"weights_bytes": 1000, "peak_rss_bytes": 4000, "decode_tok_s": 105.3,
                                      "ttft_ms": 8.45, "load_s": 2.0}),
          trial(strat(quant="bnb-8bit"), {"weights_bytes": 480, "quant_state_bytes": 26, "peak_rss_bytes": 3000,
                                          "decode_tok_s": 127.8, "ttft_ms": 10.12, "load_s": 3.0}),
          trial(strat(quant="bnb-4bit-nf4"), {"weights_bytes": 240, "quant_state_bytes": 20,
                                              "peak_rss_bytes": 2000, "decode_tok_s": 155.2, "ttft_ms": 12.34,
                                              "load_s": 4.0})]
    q = quantization_comparison(series(ts, "load.quantization")[0])
    assert q["baseline"] == "none" and q["peak_source"] == "rss"
    none, b8, b4 = q["rows"]
    assert none["memory_saved_pct"] == 0.0 and none["decode_speedup"] == 1.0
    assert b8["weights_bytes"] == 506 and b8["memory_saved_pct"] == pytest.approx(49.4)
    assert b4["memory_saved_pct"] == pytest.approx(74.0)
    assert b8["decode_speedup"] == pytest.approx(127.8 / 105.3) and round(b8["decode_speedup"], 2) == 1.21
    assert b8["ttft_change_pct"] == pytest.approx(100 * (10.12 - 8.45) / 8.45)
    assert b8["peak_bytes"] == 3000 and b8["peak_saved_bytes"] == 1000 and b8["peak_saved_pct"] == pytest.approx(25.0)
    assert b4["load_time_ratio"] == 2.0


def test_quantization_without_baseline_and_cuda_peak():
    ts = [trial(strat(quant=qn), {"weights_bytes": w, "peak_cuda_allocated_bytes": w * 2, "peak_rss_bytes": 1})
          for qn, w in (("bnb-8bit", 500), ("bnb-4bit-nf4", 250))]
    q = quantization_comparison(series(ts, "load.quantization")[0])
    assert q["baseline"] is None and q["peak_source"] == "cuda_allocated"
    assert [r["peak_bytes"] for r in q["rows"]] == [1000, 500]
    assert all(r["memory_saved_pct"] is None and r["decode_speedup"] is None for r in q["rows"])


# ------------------------------------------------------------ all together, rendering

def _all_trials():
    ts = _curve_trials(alloc=lambda c: MIB + 24 * KIB * c, call_s=lambda c: 0.1 + 0.002 * c,
                       ttft=lambda c: 20.0 + 0.5 * c, sites=_sites)
    ts += [trial(strat(batch=b, cap=256, cache="dynamic"),
                 {"decode_tok_s": tok, "ttft_ms": 12.0, "new_tokens": 256, "estimate": {"kv_bytes_per_token": 1024}})
           for b, tok in ((1, 100.0), (2, 160.0), (4, 260.0), (8, 300.0))]
    ts += [trial(strat(quant=qn, prompt=64), {"weights_bytes": w, "peak_rss_bytes": 2 * w, "decode_tok_s": d,
                                            "ttft_ms": 8.0, "load_s": 2.0})
           for qn, w, d in (("none", 1000, 100.0), ("bnb-8bit", 500, 120.0))]
    return ts


def test_studies_is_json_ready_and_finds_each_kind():
    s = studies(_all_trials())
    assert [x.kind for x in s] == ["max_new_tokens", "batch_size", "quantization"]
    as_json = studies_to_dict(s)
    assert [len(v) for v in as_json.values()] == [1, 1, 1]
    assert json.loads(json.dumps(as_json)) == as_json
    assert studies_from_dict(json.loads(json.dumps(as_json))) == s  # serialized once, read back the same
    assert [f.kind for f in preallocation_findings(s)] == ["max_new_tokens_preallocation"]
    assert studies([]) == ()
    assert studies_to_dict(()) == {"max_new_tokens": [], "batch_size": [], "quantization": []}


def test_render_studies_prints_the_tables():
    console = Console(record=True, width=200)
    render_studies(studies(_all_trials()), console)
    text = console.export_text()
    for header in ("max_new_tokens curve", "cap", "generate call s", "TTFT ms", "ms/token p50", "alloc at generate start",
                   "new tokens", "batch scaling", "decode tok/s", "speedup", "efficiency", "KV per seq", "KV total",
                   "quantization", "weights", "saved %", "peak RSS", "TTFT change", "load s"):
        assert header in text, header
    assert "24.0 KiB per token of cap" in text and "covering cap 16" in text
    assert "1.60x" in text and "37.5%" in text and "288.0 KiB" in text   # KV per seq: 1024 x (32+256)
    assert "50.0" in text and "1.20x" in text and "-0.0" not in text


def test_render_studies_prints_nothing_without_series():
    console = Console(record=True, width=200)
    render_studies((), console)
    assert console.export_text() == ""


def test_importing_studies_does_not_import_torch():
    code = ("import sys, loadprof.analysis.studies, loadprof.reports.study_tables; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------ trends over every repeat (issue #12)

QWEN_KV = 2 * 24 * 2 * 64 * 4   # qwen2.5-0.5b fp32: 2 x layers x kv_heads x head_dim x 4 B = 24 KiB
QWEN_EST = {"kv_bytes_per_token": QWEN_KV, "num_attention_heads": 14,
            "formulas": {"kv_bytes_per_token": f"2 x layers x kv_heads x head_dim x dtype B = 2 x 24 x 2 x 64 x 4 "
                                               f"= {QWEN_KV}"}}


def _repeated(caps, repeats, metrics, cache="static", seed=0):
    """``repeats`` trials per cap; ``metrics(cap, rng)`` gives each trial's own (noisy) metrics."""
    rng = np.random.default_rng(seed)
    return [trial(strat(cap=c, cache=cache, repeats=repeats), {"new_tokens": 9, **metrics(c, rng)}, repeat=r)
            for c in caps for r in range(repeats)]


def _curve(ts):
    (g,) = series(ts, "generate.max_new_tokens")
    return max_new_tokens_curve(g)


CAPS5 = (32, 64, 128, 256, 512)


def test_a_linear_time_effect_in_noise_is_claimed_with_its_interval():
    # seed 2: a draw whose 95% interval covers the truth (as 95% of draws do; seed 0's does not)
    c = _curve(_repeated(CAPS5, 3, lambda cap, rng: {"generate_call_s": 0.1 + 0.002 * cap + rng.normal(0, 0.005)},
                         seed=2))
    fg = c["fits"]["generate_call_s"]
    assert fg["n_obs"] == 15 and fg["n_x"] == 5     # every repeat, not the 5 medians
    assert c["generate_call_effect"] is True and c["generate_call_trend"] != "none"
    lo, hi = c["generate_call_ms_per_cap_token_lo"], c["generate_call_ms_per_cap_token_hi"]
    assert 0 < lo < 2.0 < hi
    assert c["generate_call_ms_per_cap_token"] == pytest.approx(2.0, abs=0.1)
    assert c["saving_ms"] is not None                # a claimed time trend predicts a saving
    notes = " | ".join(study_tables([study_of("max_new_tokens", c)])["max_new_tokens"][0].notes)
    assert f"generate call: grows {c['generate_call_ms_per_cap_token']:.3f} ms per token of cap (95% CI" in notes
    assert [r["estimates"]["generate_call_s"]["n"] for r in c["points"]] == [3] * 5


def test_a_null_time_effect_in_noise_is_not_claimed():
    # seed 1: one of the 95% of draws whose interval contains 0 (seed 0's is a false positive)
    c = _curve(_repeated(CAPS5, 3, lambda cap, rng: {"generate_call_s": 0.5 + rng.normal(0, 0.02),
                                                     "generate_start_alloc_bytes": MIB + QWEN_KV * cap,
                                                     "estimate": QWEN_EST}, seed=1))
    fg = c["fits"]["generate_call_s"]
    assert c["generate_call_effect"] is False and c["generate_call_trend"] == "none" and c["saving_ms"] is None
    assert fg["slope_lo"] < 0 < fg["slope_hi"]
    half = (fg["slope_hi"] - fg["slope_lo"]) / 2 * 1e3
    (f,) = preallocation_findings([Study.from_dict("max_new_tokens", c)])
    assert f"generate call: no effect measurable at this noise (\u00b1{half:.3f} ms per token of cap)" in f.detail
    assert "grows -" not in f.detail and f.stake_s is None


def test_too_few_points_to_claim_a_trend():
    c = _curve(_repeated((32, 64, 128), 1, lambda cap, rng: {"generate_call_s": 0.1 + 0.001 * cap + rng.normal(0, 1e-3)}))
    assert c["generate_call_effect"] is None and c["generate_call_trend"] == "none"
    notes = study_tables([study_of("max_new_tokens", c)])["max_new_tokens"][0].notes
    assert "generate call: too few points to claim a trend: 3 observations for 2 parameters" in notes


def test_exact_linear_bytes_are_claimed_exactly_and_explained_by_the_kv_formula():
    c = _curve(_repeated(CAPS5, 2, lambda cap, rng: {"generate_start_alloc_bytes": MIB + QWEN_KV * cap,
                                                     "generate_call_s": 0.3 + rng.normal(0, 0.01),
                                                     "estimate": QWEN_EST}))
    fb = c["fits"]["generate_start_alloc_bytes"]
    assert fb["model"] == "linear" and fb["exact"] and c["alloc_effect"] is True and c["growth"] == "linear"
    assert c["alloc_bytes_per_cap_token"] == pytest.approx(24 * KIB, rel=1e-9)
    assert c["alloc_bytes_per_cap_token_lo"] == c["alloc_bytes_per_cap_token_hi"] == c["alloc_bytes_per_cap_token"]
    form = c["alloc_formula"]
    assert form["explained"] and form["formula_bytes_per_cap_token"] == QWEN_KV
    assert "24.0 KiB per token of cap is exactly the static KV cache" in form["text"]
    (f,) = preallocation_findings([Study.from_dict("max_new_tokens", c)])
    assert "24.0 KiB per token of max_new_tokens" in f.title and "static KV cache" in f.detail


def test_exact_quadratic_bytes_with_a_spare_point_are_a_per_head_fp32_bias():
    from tests.test_headlines import unexplained

    caps = (16, 64, 256, 1024)   # 4 distinct caps: one to spare for the 3-parameter quadratic
    c = _curve(_repeated(caps, 1, lambda cap, rng: {
        "generate_start_alloc_bytes": 14 * 4 * (64 + cap) ** 2 + QWEN_KV * cap + MIB, "estimate": QWEN_EST}))
    fb = c["fits"]["generate_start_alloc_bytes"]
    assert fb["model"] == "quadratic" and fb["exact"] and c["growth"] == "quadratic"
    form = c["alloc_formula"]
    assert form["bytes_per_cap2"] == pytest.approx(56.0, rel=1e-6)
    assert form["explained"] and form["per_head"] and form["element_bytes"] == 4 and form["num_attention_heads"] == 14
    assert "= 14 heads x 4 B: an fp32 (prompt + cap)\u00b2 bias per head" in form["text"]
    (f,) = preallocation_findings([Study.from_dict("max_new_tokens", c)])
    assert "56 B per cap\u00b2" in f.title and unexplained(f) == []


def test_a_shared_bool_mask_is_batch_x_1_byte():
    c = _curve(_repeated((16, 64, 256, 1024), 1, lambda cap, rng: {
        "generate_start_alloc_bytes": (64 + cap) ** 2 + MIB, "estimate": QWEN_EST}))
    form = c["alloc_formula"]
    assert form["explained"] and not form["per_head"] and form["element_bytes"] == 1
    assert "shared by the heads" in form["text"]


def _knee_ms(cap):
    return 5.0 + 0.001 * cap if cap <= 256 else 5.0 + 0.001 * 256 + 0.02 * (cap - 256)


CAPS6 = (32, 64, 128, 256, 512, 1024)


def test_a_knee_in_time_per_token_is_found_at_its_cap():
    c = _curve(_repeated(CAPS6, 2, lambda cap, rng: {"per_token_ms_p50": _knee_ms(cap) + rng.normal(0, 0.01)}))
    k = c["per_token_knee"]
    assert k["at_cap"] == 256
    assert k["ms_per_cap_token_before"] == pytest.approx(0.001, abs=0.001)
    assert k["ms_per_cap_token_after"] == pytest.approx(0.02, rel=0.05)
    notes = study_tables([study_of("max_new_tokens", c)])["max_new_tokens"][0].notes
    assert any(n.startswith("time per token starts rising faster at cap 256 (") for n in notes)


def test_a_straight_line_has_no_knee():
    c = _curve(_repeated(CAPS6, 2, lambda cap, rng: {"per_token_ms_p50": 5.0 + 0.004 * cap + rng.normal(0, 0.01)}))
    assert c["per_token_knee"] is None
    assert c["fits"]["per_token_ms_p50"]["effect"] is True


EFFECT = {
    "generate call": (lambda cap, rng: {"generate_call_s": 0.2 + 0.001 * cap + rng.normal(0, 0.004)},
                      lambda cap, rng: {"generate_call_s": 0.2 + rng.normal(0, 0.004)},
                      lambda c: c["generate_call_effect"] is True and c["saving_ms"] is not None,
                      lambda c: c["generate_call_effect"] is False and c["saving_ms"] is None),
    "ttft": (lambda cap, rng: {"ttft_ms": 20 + 0.05 * cap + rng.normal(0, 0.5)},
             lambda cap, rng: {"ttft_ms": 20 + rng.normal(0, 0.5)},
             lambda c: c["ttft_effect"] is True, lambda c: c["ttft_effect"] is False),
    "allocation": (lambda cap, rng: {"generate_start_alloc_bytes": MIB + QWEN_KV * cap + int(rng.integers(0, 4096))},
                   lambda cap, rng: {"generate_start_alloc_bytes": MIB + int(rng.integers(0, 4096))},
                   lambda c: c["growth"] == "linear" and c["alloc_effect"] is True,
                   lambda c: c["growth"] == "none"),
    "knee": (lambda cap, rng: {"per_token_ms_p50": _knee_ms(cap) + rng.normal(0, 0.01)},
             lambda cap, rng: {"per_token_ms_p50": 5.0 + 0.001 * cap + rng.normal(0, 0.01)},
             lambda c: c["per_token_knee"] is not None, lambda c: c["per_token_knee"] is None),
}


@pytest.mark.parametrize("rule", list(EFFECT))
def test_each_rule_on_repeats_with_and_without_the_effect(rule):
    with_effect, without, claimed, not_claimed = EFFECT[rule]
    assert claimed(_curve(_repeated(CAPS6, 3, with_effect, seed=1)))
    assert not_claimed(_curve(_repeated(CAPS6, 3, without, seed=1)))
    findings = [preallocation_findings([Study.from_dict("max_new_tokens", _curve(_repeated(CAPS6, 3, m, seed=1)))])
                for m in (with_effect, without)]
    assert [len(f) for f in findings] == ([1, 0] if rule == "allocation" else [0, 0])


def _batch(with_knee: bool, repeats=3, seed=2):
    rng = np.random.default_rng(seed)
    ts = []
    for b in (1, 2, 4, 8, 16):
        step_ms = 50.0 + (0.5 * b if b <= 4 else 2.0 + 20.0 * (b - 4)) if with_knee else 50.0 + 3.0 * b
        for r in range(repeats):
            ms = step_ms + rng.normal(0, 0.3)
            ts.append(trial(strat(batch=b, cache="dynamic", repeats=repeats),
                            {"decode_tok_s": 1e3 * b / ms, "prefill_tok_s": 500.0 * b + rng.normal(0, 5),
                             "ttft_ms": 10.0 * b, "new_tokens": 32}, repeat=r))
    return batch_scaling(series(ts, "generate.batch_size")[0])


def test_batch_scaling_decode_step_knee_and_pp_tg_with_spread():
    b = _batch(True)
    assert b["decode_step_knee"]["at_batch_size"] == 4
    assert _batch(False)["decode_step_knee"] is None
    row = b["rows"][0]
    assert row["repeats"] == 3 and row["estimates"]["decode_tok_s"]["n"] == 3
    assert row["estimates"]["prefill_tok_s"]["median"] == pytest.approx(row["prefill_tok_s"])
    t = study_tables([study_of("batch_size", b)])["batch_size"][0]
    assert t.columns[:4] == ("batch", "n", "pp tok/s", "tg (decode) tok/s")
    assert "\u00b1" in t.rows[0][2] and "\u00b1" in t.rows[0][3] and t.rows[0][1] == "3"
    assert any("decode step time starts rising faster at batch size 4" in n for n in t.notes)


def test_prefill_rate_is_derived_for_older_reports():
    from loadprof.results.model import PhaseTiming

    gen = PhaseTiming("generate", 0.0, 1.0, (PhaseTiming("prefill", 0.0, 0.5),))
    ts = [TrialResult(trial_id=f"o{b}", strategy_id=f"o{b}", label="x", repeat_index=0, status="ok",
                      strategy=strat(batch=b, cache="dynamic"), metrics={"decode_tok_s": 10.0 * b}, phases=(gen,))
          for b in (1, 2)]
    b = batch_scaling(series(ts, "generate.batch_size")[0])
    assert [r["prefill_tok_s"] for r in b["rows"]] == [64.0, 128.0]   # batch x 32 prompt tokens / 0.5 s


def test_quantization_rows_carry_their_spread():
    ts = [trial(strat(quant=qn, repeats=3), {"weights_bytes": w, "peak_rss_bytes": 2 * w + r * 100,
                                             "decode_tok_s": d + r, "ttft_ms": 8.0, "load_s": 2.0 + r / 10},
                repeat=r) for qn, w, d in (("none", 1000, 100.0), ("bnb-8bit", 500, 120.0)) for r in range(3)]
    q = quantization_comparison(series(ts, "load.quantization")[0])
    none = q["rows"][0]
    assert none["repeats"] == 3 and none["estimates"]["decode_tok_s"] == {
        "median": 101.0, "q1": 100.5, "q3": 101.5, "n": 3, "lo": pytest.approx(100.0), "hi": pytest.approx(102.0)}
    t = study_tables([study_of("quantization", q)])["quantization"][0]
    assert t.rows[0][5] == "101.0 \u00b1 0.5" and t.rows[0][1] == "3"


def test_study_plots_draw_iqr_error_bars_and_say_so():
    pytest.importorskip("matplotlib")
    from loadprof.reports import plots

    c = _curve(_repeated(CAPS5, 3, lambda cap, rng: {"generate_call_s": 0.1 + 0.002 * cap + rng.normal(0, 0.005),
                                                     "generate_start_alloc_bytes": MIB + QWEN_KV * cap}))
    figs = plots.study_plots([Study.from_dict("max_new_tokens", c), Study.from_dict("batch_size", _batch(True))])
    assert set(figs) == {"max_new_tokens", "batch_size"}
    for svg in figs.values():
        assert "error bars: IQR (q1..q3) of the repeats" in svg


def test_no_time_trend_is_claimed_from_trials_on_a_busy_machine():
    """A neighbour's load drifts with the run order, which the caps follow: the same clear effect is withheld."""
    import dataclasses

    ts = _repeated(CAPS5, 3, lambda cap, rng: {"generate_call_s": 0.1 + 0.002 * cap + rng.normal(0, 0.005),
                                               "generate_start_alloc_bytes": 24576 * cap}, seed=2)
    assert _curve(ts)["generate_call_effect"] is True
    busy = {"machine": {"others_cpu_cores": 1.2, "steal_share": 0.0, "cpu_count": 2, "wall_s": 1.0,
                        "worker_cpu_s": 0.5, "harness_cpu_s": 0.1}}
    ts[4] = dataclasses.replace(ts[4], probes=busy)
    c = _curve(ts)
    assert c["busy_trials"] == 1 and c["generate_call_trend"] == "none" and c["saving_ms"] is None
    assert c["growth"] == "linear"  # byte counts do not drift: the allocation trend stands
    notes = " | ".join(study_tables([study_of("max_new_tokens", c)])["max_new_tokens"][0].notes)
    assert "not claimed: 1 of 15 trials ran on a busy machine" in notes
