"""Recommendations, max_new_tokens warnings and output-length coverage on hand-built trials (exact figures)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from loadprof.analysis import lengths as lengths_mod
from loadprof.analysis import derive
from loadprof.core import figures
from loadprof.core.errors import LoadprofError, SpecError
from loadprof.analysis.lengths import lengths_coverage, read_lengths
from loadprof.analysis.recommend import recommend, recommendations
from loadprof.cli.recommend import cli_recommend
from loadprof.results.model import Figure, PhaseTiming, SweepResult, TrialResult
from tests.helpers import strategy_of

from .conftest import REPO

GiB = 2**30


def _strategy(quantization="none", dtype="float16", loader=None, offload="none", cache="dynamic", max_new=32,
              file_cache="warm", stop_after=None, generate=True):
    gen = {"prompt_tokens": 16, "max_new_tokens": max_new, "batch_size": 1, "cache_implementation": cache,
           "stop_after": stop_after, "warmup": 1, "repeats": 1, "stop_at_eos": False} if generate else None
    return strategy_of({"model": {"synthetic": {"shape": "tiny"}, "path": None, "hub_id": None},
            "load": {"device_map": "cpu", "dtype": dtype, "quantization": quantization, "offload": offload,
                     "max_memory": None, "file_cache": file_cache, "validation": "none",
                     "loader": {"target": loader, "kwargs": {}} if loader else None},
            "generate": gen, "label": "", "sampling_hz": None})


def _trial(sid, label, rep=0, status="ok", strategy=None, **metrics):
    return TrialResult(trial_id=f"{sid}-r{rep}", strategy_id=sid, label=label, repeat_index=rep, status=status,
                       strategy=strategy or _strategy(), metrics=metrics)


def _repeats(sid, label, strategy=None, **series):
    """One trial per repeat; each keyword is a list of per-repeat values."""
    n = len(next(iter(series.values())))
    return [_trial(sid, label, i, strategy=strategy, **{k: v[i] for k, v in series.items()}) for i in range(n)]


def _one(trials, objective, **kw):
    (r,) = recommend(trials, objective, **kw)
    return r


def test_load_figure_is_the_median_over_repeats_of_load_plus_first_forward_plus_validate():
    a = _repeats("a", "lazy", strategy=_strategy(dtype="float32"), load_s=[0.5, 0.7, 0.6], warmup_s=[2.0, 1.5, 1.8],
                 validate_s=[None, None, None])
    b = _repeats("b", "eager", load_s=[1.0, 1.2, 1.1], warmup_s=[0.1, 0.1, 0.1], validate_s=[0.2, 0.2, 0.2])
    r = _one(a + b, "load")
    expect_b = statistics.median([1.0 + 0.1 + 0.2, 1.2 + 0.1 + 0.2, 1.1 + 0.1 + 0.2])
    expect_a = statistics.median([0.5 + 2.0, 0.7 + 1.5, 0.6 + 1.8])
    assert r.verdict == "pick" and r.label == "eager" and r.trial_ids == ("b-r0", "b-r1", "b-r2")
    assert r.figure == Figure(figures.LOAD_COST_S.key, expect_b, "s")
    assert r.estimate.median == expect_b and r.estimate.n == 3
    assert r.runner_up.label == "lazy" and r.runner_up.figure.value == expect_a
    assert r.margin_pct == 100.0 * (expect_a - expect_b) / expect_a
    assert r.reason is None and r.settings["dtype"] == "float16" and r.settings["loader"] is None
    assert "max_new_tokens" not in r.settings  # a generate knob cannot move the load: never shown as its reason


def test_load_counts_only_the_first_forward_of_the_warmup_phase():
    warm = PhaseTiming("warmup", 1.0, 11.0, (PhaseTiming("forward", 1.0, 2.5), PhaseTiming("decode", 2.5, 11.0)))
    t = TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok", strategy=_strategy(),
                    phases=(warm,), metrics={"load_s": 1.0, "warmup_s": 10.0, "validate_s": 0.25})
    assert derive.first_forward_s(t) == 1.5 and derive.load_cost_s(t) == 1.0 + 1.5 + 0.25
    only = _one([t], "load")
    assert only.figure.value == 2.75 and only.verdict == "only" and only.label == "a"


def test_throughput_higher_is_better_and_failed_trials_are_ignored():
    trials = (_repeats("a", "slow", decode_tok_s=[10.0, 12.0, 11.0])
              + _repeats("b", "fast", strategy=_strategy(dtype="bfloat16"), decode_tok_s=[20.0, 21.0, 19.0])
              + [_trial("c", "broken", strategy=_strategy(dtype="float32"), status="failed", decode_tok_s=99.0)])
    r = _one(trials, "throughput")
    assert r.verdict == "pick" and r.label == "fast" and r.figure.value == 20.0 and r.figure.unit == "tok/s"
    assert r.runner_up.figure.value == 11.0 and r.margin_pct == 100.0 * (20.0 - 11.0) / 11.0
    assert [c.label for c in r.candidates] == ["fast", "slow"]


def test_memory_uses_the_exact_cuda_peak_from_one_repeat_but_not_a_single_rss_reading():
    trials = [_trial("a", "a", peak_rss_bytes=1 * GiB, peak_cuda_allocated_bytes=5 * GiB),
              _trial("b", "b", strategy=_strategy(dtype="bfloat16"), peak_rss_bytes=9 * GiB,
                     peak_cuda_allocated_bytes=3 * GiB)]
    r = _one(trials, "memory")
    assert r.verdict == "pick" and r.label == "b" and r.figure == Figure("peak_cuda_allocated_bytes", 3 * GiB, "bytes")
    same = _one([_trial("a", "a", peak_cuda_allocated_bytes=GiB),
                 _trial("b", "b", strategy=_strategy(dtype="bfloat16"), peak_cuda_allocated_bytes=GiB + 4096)], "memory")
    assert same.verdict == "tie" and same.tied  # 4 KiB of allocator rounding is no difference
    only_rss = _one([_trial("a", "a", peak_rss_bytes=2 * GiB),
                     _trial("b", "b", strategy=_strategy(dtype="bfloat16"), peak_rss_bytes=1 * GiB)], "memory")
    assert only_rss.figure.name == "peak_rss_bytes" and only_rss.verdict == "undecided" and only_rss.label is None
    assert "repeat: 3" in only_rss.rule and [c.label for c in only_rss.candidates] == ["b", "a"]


def _quant_sweep():
    none = _repeats("n", "fp16", strategy=_strategy("none"), peak_rss_bytes=[10 * GiB, 10.1 * GiB, 9.9 * GiB],
                    decode_tok_s=[30.0, 30.5, 29.5], ttft_ms=[50.0, 52.0, 51.0], load_s=[1.0, 1.1, 0.9])
    q4 = _repeats("q", "nf4", strategy=_strategy("bnb-4bit-nf4"), peak_rss_bytes=[4 * GiB, 4.1 * GiB, 3.9 * GiB],
                  decode_tok_s=[20.0, 20.5, 19.5], ttft_ms=[80.0, 81.0, 79.0], load_s=[3.0, 3.1, 2.9])
    return none + q4


def test_budget_excludes_and_4bit_tradeoff_names_the_saving_and_the_quality_risk():
    res = recommendations(_quant_sweep(), memory_budget_bytes=6 * GiB)
    assert res.excluded_over_budget == ("fp16",) and res.memory_budget_bytes == 6 * GiB
    for obj in figures.OBJECTIVE_NAMES:
        assert res.get(obj).label == "nf4" and res.get(obj).verdict == "only", obj
        assert res.get(obj).runner_up is None
    text = res.get("memory").tradeoffs[0]
    assert text.startswith("bnb-4bit-nf4 saves 60% peak memory vs none ('fp16': 10.0 GiB -> 4.0 GiB)")
    assert "quality risk: 4-bit weights change the model's outputs, check accuracy on your data" in text
    assert "decode 33% slower (20.00 tok/s vs 30.00 tok/s)" in text
    free = recommendations(_quant_sweep())
    assert free.excluded_over_budget == () and free.get("throughput").label == "fp16"
    assert free.get("throughput").verdict == "pick"
    assert free.get("memory").margin_pct == 100.0 * (10 - 4) / 10


def test_budget_checks_the_worst_repeat_and_says_why_when_nothing_fits():
    trials = _repeats("a", "spiky", peak_rss_bytes=[1 * GiB, 1 * GiB, 7 * GiB], ttft_ms=[10.0, 10.0, 10.0])
    r = _one(trials, "ttft", memory_budget_bytes=2 * GiB)
    assert r.label is None and r.excluded_over_budget == ("spiky",) and r.verdict == "none"
    assert "exceeds the budget" in r.reason and r.figure.value is None
    no_gen = _one([_trial("a", "a", strategy=_strategy(generate=False), load_s=1.0)], "ttft")
    assert no_gen.label is None and "ttft_ms" in no_gen.reason and "generate: false" in no_gen.reason
    assert _one([], "load").reason == "no ok trial to recommend from"
    with pytest.raises(SpecError, match="allowed: load, memory, ttft, throughput"):
        recommend(trials, "speed")


def _three(sid, label, strategy, **center):
    """Three repeats around each given centre, +-1%: small, real-looking noise."""
    return _repeats(sid, label, strategy=strategy, **{k: [v * 0.99, v, v * 1.01] for k, v in center.items()})


def test_tradeoffs_custom_loader_offload_cold_start_and_other_objectives():
    builtin = _three("b", "builtin", _strategy(), load_s=0.5, warmup_s=0.5, decode_tok_s=20.0, peak_rss_bytes=GiB,
                     ttft_ms=40.0)
    custom = _three("c", "manager", _strategy(loader="mm:ModelManager.load"), load_s=6.0, warmup_s=0.1,
                    decode_tok_s=21.0, peak_rss_bytes=2 * GiB, ttft_ms=40.0)
    cold = _three("k", "builtin cold", _strategy(file_cache="cold"), load_s=3.0, warmup_s=0.5, decode_tok_s=20.0,
                  peak_rss_bytes=GiB, ttft_ms=40.0)
    disk = [_trial("d", "disk", i, strategy=_strategy(offload="disk"), load_s=0.4, warmup_s=0.5, decode_tok_s=5.0,
                   peak_rss_bytes=GiB // 2, ttft_ms=400.0, bytes_by_device={"cpu": 100 * 2**20, "meta": 300 * 2**20})
            for i in range(3)]
    res = recommendations(builtin + custom + cold + disk)
    tp = res.get("throughput")
    assert tp.verdict == "pick" and tp.label == "manager" and tp.settings["loader"] == "mm:ModelManager.load"
    assert ("custom loader mm:ModelManager.load takes 6.1 s to load (first forward included) vs 1 s with the built-in "
            "loader ('builtin'), 6.1x slower") in tp.tradeoffs
    assert any(t.startswith("load+first forward 6.8x longer than the best-load configuration 'disk'") for t in tp.tradeoffs)
    mem = res.get("memory")
    assert mem.label == "disk" and mem.pooled == ("load.file_cache",)
    assert mem.tradeoffs[0] == (
        "offload=disk: offloaded weights are read back at every forward (weights by device: cpu 100.0 MiB, "
        "meta (offloaded) 300.0 MiB); against 'builtin' without offload: peak 512.0 MiB vs 1.0 GiB, "
        "first token 400.0 ms vs 40.0 ms, decode 5.00 tok/s vs 20.00 tok/s")
    load = _one(builtin + cold, "load")
    assert load.label == "builtin" and "a cold start ('builtin cold') took 3.5 s" in load.tradeoffs[0]


def test_single_repeats_are_undecided_and_indistinguishable_repeats_a_stated_tie():
    close = _one([_trial("a", "a", ttft_ms=100.0), _trial("b", "b", strategy=_strategy(dtype="bfloat16"),
                                                              ttft_ms=150.0)], "ttft")
    assert close.verdict == "undecided" and close.label is None and "not distinguishable without repeats" in close.rule
    tied = _one(_repeats("a", "a", ttft_ms=[90.0, 100.0, 110.0], peak_rss_bytes=[2 * GiB] * 3)
                + _repeats("b", "b", strategy=_strategy(dtype="bfloat16"), ttft_ms=[95.0, 105.0, 120.0],
                           peak_rss_bytes=[GiB] * 3), "ttft")
    # a leads on the median, but the repeats cannot separate them: the tie goes to the lower peak memory
    assert tied.verdict == "tie" and tied.label == "b" and tied.tied == ("a",) and "lowest peak memory" in tied.rule


def test_a_knob_that_cannot_affect_the_objective_is_pooled_never_picked():
    """The quickstart's shape: file_cache x validation. Decode cannot depend on either: one configuration."""
    trials = []
    for i, (fc, val) in enumerate([("warm", "none"), ("cold", "none"), ("warm", "full"), ("cold", "full")]):
        s = strategy_of({**_strategy(file_cache=fc).to_dict(), "load": {**_strategy(file_cache=fc).to_dict()["load"],
                                                                        "validation": val}})
        trials += _three(f"s{i}", f"file_cache={fc} validation={val}", s, decode_tok_s=20.0 + 0.05 * i, ttft_ms=50.0,
                         load_s=1.0 + (2.0 if fc == "cold" else 0.0) + (0.5 if val == "full" else 0.0),
                         peak_rss_bytes=GiB)
    res = recommendations(trials)
    tp = res.get("throughput")
    assert tp.verdict == "only" and tp.estimate.n == 12 and set(tp.pooled) == {"load.file_cache", "load.validation"}
    assert "file_cache" not in tp.settings and "validation" not in tp.settings
    assert "(+3: 4 strategies pooled, differing only in file_cache, validation)" in tp.label
    assert "its 4 strategies differ only in knobs that cannot affect it" in tp.rule
    load = res.get("load")
    assert load.verdict == "pick" and load.label == "file_cache=warm validation=none" and not load.pooled
    mem = res.get("memory")
    assert mem.pooled == ("load.file_cache",) and mem.verdict in ("tie", "only", "pick")
    assert "file_cache" not in (mem.settings or {})


def test_models_are_never_compared_with_each_other():
    small = _three("s", "gpt2", _strategy(), decode_tok_s=100.0)
    big = _three("b", "gpt2-medium", strategy_of({**_strategy().to_dict(), "model": {
        "synthetic": {"shape": "gpt2-medium"}, "path": None, "hub_id": None}}), decode_tok_s=40.0)
    res = recommendations(small + big)
    assert len(res.models) == 2
    assert {r.model: r.verdict for r in res.picks if r.objective == "throughput"} == dict.fromkeys(res.models, "only")


def _quickstart(slow_ttft: str | None = None) -> list[TrialResult]:
    """The quickstart's four strategies (file_cache x validation), three repeats each, the same TTFT, except
    ``slow_ttft``'s (5x)."""
    trials = []
    for fc in ("warm", "cold"):
        for val in ("none", "full"):
            base = _strategy(file_cache=fc).to_dict()
            s = strategy_of({**base, "load": {**base["load"], "validation": val}})
            label = f"{fc}/{val}"
            trials += _three(label, label, s, ttft_ms=50.0 * (5.0 if label == slow_ttft else 1.0),
                             decode_tok_s=20.0, load_s=1.0, peak_rss_bytes=GiB)
    return trials


def test_pooled_strategies_that_differ_beyond_noise_are_reported_as_drift_and_kept_apart():
    """The knob table says file_cache and validation cannot affect TTFT; when one strategy's repeats say otherwise
    it is not pooled into the others for TTFT: a configuration of its own, and a drift note names it."""
    r = _one(_quickstart(slow_ttft="cold/full"), "ttft")
    labels = [c.label for c in r.candidates]
    assert len(labels) == 2 and "cold/full" in labels  # alone, as it was measured
    pooled = next(c for c in r.candidates if c.label != "cold/full")
    assert pooled.strategies == 3 and pooled.estimate.n == 9 and "3 strategies pooled" in pooled.label
    assert r.verdict == "pick" and r.label == pooled.label and r.margin_pct == pytest.approx(80.0)
    (drift,) = [n for n in r.notes if n.startswith("drift:")]
    assert "'cold/full' differs beyond the noise on ttft" in drift and "kept apart" in drift
    # decode was alike in all four: one configuration of four strategies, no drift
    tp = _one(_quickstart(slow_ttft="cold/full"), "throughput")
    assert tp.verdict == "only" and tp.candidates[0].strategies == 4 and not any("drift" in n for n in tp.notes)
    # the same four without the slow one: pooled for TTFT too
    same = _one(_quickstart(), "ttft")
    assert same.verdict == "only" and same.candidates[0].strategies == 4


@pytest.mark.parametrize("seed", range(3))
def test_decision_rule_finds_a_known_effect_and_not_a_known_null(seed):
    """Synthetic repeats, 5 per side, 3% noise: a 15% effect is picked, the null is a tie (checked over 200 draws
    each: the method's false positive rate is ~5% at n=5, its power ~95%)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picked_effect = picked_null = 0
    for k in range(200):
        base = rng.normal(1.0, 0.03, 5)
        for effect, count in ((0.15, "effect"), (0.0, "null")):
            other = rng.normal(1.0 + effect, 0.03, 5)
            r = _one(_repeats("a", "a", load_s=list(base)) + _repeats(
                "b", "b", strategy=_strategy(dtype="bfloat16"), load_s=list(other)), "load")
            if r.verdict == "pick":
                if count == "effect":
                    picked_effect += 1
                else:
                    picked_null += 1
    assert picked_effect >= 190 and picked_null <= 20


def test_max_new_tokens_warnings_at_30_percent():
    trials = (_repeats("s", "short", strategy=_strategy(max_new=100, cache="static", stop_after=None),
                       new_tokens=[20, 29])
              + [_trial("e", "edge", strategy=_strategy(max_new=100), new_tokens=30),
                 _trial("f", "full", strategy=_strategy(max_new=100), new_tokens=100)])
    (w,) = recommendations(trials).max_new_tokens_warnings
    assert (w.label, w.trial_ids, w.generated, w.cap, w.share) == ("short", ("s-r0", "s-r1"), 29, 100, 0.29)
    assert "a cap of 64 covers the longest seen" in w.advice and "static cache" in w.advice


KNOWN = [10] * 50 + [100] * 25 + [300] * 15 + [1000] * 9 + [5000]


def test_lengths_coverage_percentiles_and_power_of_two_caps():
    c = lengths_coverage(list(reversed(KNOWN)), prompt_tokens=128)
    assert c.n == 100 and c.percentiles == {"p50": 10, "p75": 100, "p90": 300, "p95": 1000, "p99": 1000,
                                            "max": 5000}
    rows = {r.scenario: r for r in c.rows}
    assert [r.scenario for r in c.rows] == ["conservative", "recommended", "comprehensive"]
    assert (rows["conservative"].cap, rows["conservative"].coverage_pct) == (128, 75.0)
    assert (rows["recommended"].cap, rows["recommended"].coverage_pct) == (512, 90.0)
    assert (rows["comprehensive"].cap, rows["comprehensive"].coverage_pct) == (1024, 99.0)
    assert rows["recommended"].percentile_tokens == 300 and rows["recommended"].percentile_coverage_pct == 90.0
    assert (rows["recommended"].lower_cap, rows["recommended"].lower_cap_coverage_pct) == (256, 75.0)
    assert rows["recommended"].prompt_tokens == 128 and c.recommended_max_new_tokens == 512
    exact = lengths_coverage([64] * 10)
    assert exact.rows[1].cap == 64 and exact.rows[1].lower_cap is None
    with pytest.raises(SpecError):
        lengths_coverage([])


def test_read_lengths_jsonl_csv_json_list_and_plain(tmp_path):
    j = tmp_path / "out.jsonl"
    j.write_text('12\n{"tokens": 7}\n\n{"length": 3}\n{"n_tokens": "4"}\n{"output_tokens": 5}\n{"tokens": [1, 2]}\n')
    assert read_lengths(j) == [12, 7, 3, 4, 5, 2]
    c = tmp_path / "out.csv"
    c.write_text("id,Output_Tokens\na,10\nb,20\n")
    assert read_lengths(c) == [10, 20]
    bare = tmp_path / "bare.csv"
    bare.write_text("10\n20\n30\n")
    assert read_lengths(bare) == [10, 20, 30]
    lst = tmp_path / "l.json"
    lst.write_text('[1, {"length": 2},\n 3]')
    assert read_lengths(lst) == [1, 2, 3]
    plain = tmp_path / "n.txt"
    plain.write_text("5\n 6 \n\n7.0\n")
    assert read_lengths(plain) == [5, 6, 7]


@pytest.mark.parametrize("name,text,where,value", [
    ("bad.jsonl", '1\n2\n{"tokens": "abc"}\n', "line 3", "'abc'"),
    ("neg.txt", "1\n-4\n", "line 2", "'-4'"),
    ("frac.txt", "1\n2.5\n", "line 2", "'2.5'"),
    ("negjson.jsonl", '{"length": -3}\n', "line 1", "-3"),
    ("bad.csv", "tokens\n1\nlots\n", "line 3", "'lots'"),
    ("keys.jsonl", '{"tokens": 1}\n{"answer": 3}\n', "line 2", "['answer']"),
    ("broken.jsonl", '{"tokens": 1}\n{"tokens": \n', "line 2", "not JSON"),
])
def test_read_lengths_errors_name_file_line_and_value(tmp_path, name, text, where, value):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        read_lengths(p)
    assert str(p) in str(e.value) and where in str(e.value) and value in str(e.value)
    assert e.value.exit_code == 2


def test_texts_need_a_tokenizer_and_use_it_lazily(tmp_path, monkeypatch):
    p = tmp_path / "t.jsonl"
    p.write_text('{"tokens": 3}\n{"text": "a b c d"}\n')
    with pytest.raises(SpecError) as e:
        read_lengths(p)
    assert "line 2" in str(e.value) and "--tokenizer" in str(e.value) and e.value.exit_code == 2
    seen = []

    def fake(name, path, where):
        seen.append(name)
        return lambda text, add_special_tokens: {"input_ids": text.split()}

    monkeypatch.setattr(lengths_mod, "_tokenizer", fake)
    assert read_lengths(p, tokenizer="/some/tok") == [3, 4] and seen == ["/some/tok"]
    (tmp_path / "n.txt").write_text("1\n")
    seen.clear()
    assert read_lengths(tmp_path / "n.txt", tokenizer="/some/tok") == [1] and seen == []
    with pytest.raises(SpecError, match="cannot read"):
        read_lengths(tmp_path / "missing.txt")


def _write_report(folder: Path, trials) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    r = SweepResult(run_id="r", name="quant", source="x.yaml", created_at="", trials=tuple(trials))
    (folder / "report.json").write_text(json.dumps(r.to_dict()))
    return folder


def test_cli_recommend_prints_picks_exclusions_warnings_and_coverage(tmp_path):
    out = _write_report(tmp_path / "run", _quant_sweep() + [
        _trial("w", "long cap", strategy=_strategy(max_new=1000), new_tokens=10, peak_rss_bytes=GiB)])
    lengths = tmp_path / "len.txt"
    lengths.write_text("\n".join(map(str, KNOWN)))
    con = Console(record=True, width=250)
    assert cli_recommend(out, None, "6GiB", lengths, None, con) == 0
    text = con.export_text()
    for needle in ("load:", "memory:", "ttft:", "throughput:", "quality risk", "over budget: fp16", "long cap",
                   "recommended max_new_tokens: 512", "comprehensive"):
        assert needle in text, needle
    con = Console(record=True, width=250)
    assert cli_recommend(out, "memory", None, None, None, con) == 0
    assert "memory:" in con.export_text() and "throughput:" not in con.export_text()
    with pytest.raises(LoadprofError) as e:
        cli_recommend(tmp_path / "empty", None, None, None, None, Console(record=True))
    assert e.value.exit_code == 2
    with pytest.raises(SpecError):
        cli_recommend(out, None, "lots", None, None, Console(record=True))


def test_modules_never_import_torch():
    code = ("import sys, loadprof.analysis.recommend, loadprof.analysis.diff; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.strip() == "[]", r.stderr


@pytest.mark.e2e
def test_texts_counted_with_a_real_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    p = tmp_path / "answers.csv"
    p.write_text('id,text\n1,"a b a"\n2,"b zz"\n')
    assert read_lengths(p, tokenizer=str(tmp_path / "tok")) == [3, 2]
    with pytest.raises(SpecError, match="cannot load tokenizer"):
        read_lengths(p, tokenizer=str(tmp_path / "nope"))
