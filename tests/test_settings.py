"""Settings that cost (loadprof.analysis.settings) and how they are recorded (loadprof.probes.generation)."""

from __future__ import annotations

import pytest

from loadprof.analysis.findings import trial_findings
from loadprof.analysis.settings import effective_batch
from loadprof.probes.generation import CallTiming, step_growth, summarize
from loadprof.results.model import PhaseTiming, TrialResult
from tests.helpers import strategy_of

PHASES = (PhaseTiming("load", 0.0, 1.0), PhaseTiming("generate", 1.0, 5.0))


def _trial(metrics, batch=1, env=None):
    return TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok",
                       strategy=strategy_of({"generate": {"batch_size": batch}}), metrics=metrics,
                       env=env or {}, phases=PHASES)


def _found(t):
    return {f.kind: f for f in trial_findings(t)}


def _call(steps_ms, settings=None):
    ns = [0]
    for ms in steps_ms:
        ns.append(ns[-1] + int(ms * 1e6))
    return CallTiming(t_call_ns=0, t_return_ns=ns[-1] + 10**6, steps_ns=[x + 10**7 for x in ns],
                      new_tokens=len(ns), settings=settings or {})


def test_step_growth_reads_steps_that_slow_down_with_position():
    flat = step_growth([_call([10.0] * 32)])
    assert flat == {"decode_step_growth": 1.0, "decode_excess_s": 0.0, "decode_recompute_s": 0.0}
    rising = step_growth([_call([10.0 + i for i in range(32)])])  # step i takes 10 + i ms
    assert rising["decode_step_growth"] == pytest.approx(37.5 / 13.5)
    assert rising["decode_excess_s"] == pytest.approx(sum(max(0, 10 + i - 13.5) for i in range(32)) / 1e3)
    # 1 ms per position: step i recomputes i earlier tokens (no prompt here): 0 + 1 + ... + 31 ms; a cached
    # decode would take the 10 ms of a step with nothing to recompute
    assert rising["decode_recompute_s"] == pytest.approx(sum(range(32)) / 1e3)
    prompted = _call([10.0 + i for i in range(32)])
    prompted.prompt_tokens = 8  # each step also recomputes the 8 prompt tokens
    assert step_growth([prompted])["decode_recompute_s"] == pytest.approx((sum(range(32)) + 32 * 8) / 1e3)
    assert step_growth([_call([10.0] * 8)]) == {}  # too few steps to say
    assert summarize([_call([1.0] * 20, {"num_beams": 4})], 0, 1)["generate_settings"] == {"num_beams": 4}


def test_beam_search_uses_the_effective_batch_and_states_its_stake():
    t = _trial({"generate_settings": {"num_beams": 4, "num_return_sequences": 1}, "new_tokens": 32,
                "decode_tok_s": 16.0}, batch=2)
    assert effective_batch(t) == 8
    f = _found(t)["beam_search"]
    assert "num_beams=4" in f.title and "8 sequences per step" in f.title
    assert f.stake_s == pytest.approx(2.0 * (1 - 1 / 8)) and f.mistake
    assert "beam_search" not in _found(_trial({"generate_settings": {"num_beams": 1}}))


def test_no_kv_cache_is_named_from_the_setting_with_its_measured_cost():
    off = {"use_cache": False}
    f = _found(_trial({"generate_settings": off, "decode_step_growth": 2.5, "decode_excess_s": 1.2}))["no_kv_cache"]
    assert "use_cache=False" in f.title and f.stake_s == 1.2 and f.mistake and "use_cache=True" in f.fix
    # with the recompute the growth gives, that is the stake: what a cache would save
    r = _found(_trial({"generate_settings": off, "decode_step_growth": 2.5, "decode_excess_s": 1.2,
                       "decode_recompute_s": 3.0}))["no_kv_cache"]
    assert r.stake_s == 3.0 and "at least 3.00 s per call" in r.detail and "positions" in r.stake_basis
    # the decode's gap to its bandwidth bound is the most it can be, and this finding explains it: the roofline
    # observation, which assumes a cache, is not made beside it
    b = _found(_trial({"generate_settings": off, "decode_recompute_s": 3.0, "new_tokens": 32, "decode_tok_s": 4.0,
                       "roofline_fraction": 0.1, "weights_bytes": 2**30, "roofline_tok_s": 40.0,
                       "decode_bytes_per_step": 2**30, "membw_gb_s": 40.0}))
    assert b["no_kv_cache"].evidence["stake_most_s"] == pytest.approx(8 * 0.9) and "at most 7.20 s" in b[
        "no_kv_cache"].detail and "decode_below_roofline" not in b
    # the setting is the mistake even where its cost is still small at this length (a fast machine, few tokens)
    flat = _found(_trial({"generate_settings": off, "decode_step_growth": 1.1, "decode_excess_s": 0.01}))
    assert flat["no_kv_cache"].mistake and "still small" in flat["no_kv_cache"].detail
    assert flat["no_kv_cache"].stake_s == 0.01
    bare = _found(_trial({"generate_settings": off}))["no_kv_cache"]
    assert bare.stake_s is None and "nothing at stake" in bare.stake_basis
    # a flat decode with the cache on: nothing to say
    assert "no_kv_cache" not in _found(_trial({"generate_settings": {"use_cache": True}, "decode_step_growth": 1.1}))
    # growth without the setting: an observation, not a mistake
    g = _found(_trial({"generate_settings": {"use_cache": True}, "decode_step_growth": 3.0}))["no_kv_cache"]
    assert not g.mistake and "slow down" in g.title


def test_threads_below_cores_and_dropout_in_training_mode():
    s = {"torch_threads": 2, "usable_cores": 8, "dropout_active": True, "training": True}
    found = _found(_trial({"generate_settings": s}))
    assert "2 of 8" in found["torch_threads"].title and found["training_mode"].mistake
    assert "model.eval()" in found["training_mode"].fix
    assert "torch_threads" not in _found(_trial({"generate_settings": s}, env={"cuda_capability": "9.0"}))
    fine = _found(_trial({"generate_settings": {"torch_threads": 8, "usable_cores": 8, "dropout_active": False}}))
    assert not {"torch_threads", "training_mode"} & set(fine)


def test_roofline_detail_counts_beams_in_the_batch():
    m = {"roofline_fraction": 0.05, "decode_tok_s": 10.0, "roofline_tok_s": 200.0, "weights_bytes": 64 * 2**20,
         "decode_bytes_per_step": 2**20, "membw_gb_s": 10.0, "new_tokens": 32, "generate_settings": {"num_beams": 4}}
    f = _found(_trial(m))["decode_below_roofline"]
    assert "batch 1:" not in f.detail and "4 sequences per step" in f.detail


def test_the_growth_symptom_is_not_read_on_a_busy_machine_but_the_setting_is():
    import dataclasses

    from tests.test_machine import machine

    def busy(metrics):
        t = _trial(metrics)
        return dataclasses.replace(t, probes={**t.probes, "machine": machine(others_cpu_cores=1.5)})

    # a neighbour's burst late in decode reads as growth: no observation from a busy trial ...
    assert "no_kv_cache" not in _found(busy({"generate_settings": {"use_cache": True}, "decode_step_growth": 39.5}))
    # ... while the setting itself is still the mistake
    f = _found(busy({"generate_settings": {"use_cache": False}, "decode_step_growth": 0.3, "decode_excess_s": 2.0,
                     "decode_recompute_s": 0.0}))
    # its cost is not read from a neighbour's timings either (a burst in the first quarter made these 0.3x)
    assert f["no_kv_cache"].mistake and f["no_kv_cache"].stake_s is None and "0.3x" not in f["no_kv_cache"].title
    assert "nothing at stake measured: the machine was busy" in f["no_kv_cache"].stake_basis
    # on a quiet machine, steps that did not slow down yet put nothing at stake at this length
    flat = _found(_trial({"generate_settings": {"use_cache": False}, "decode_step_growth": 1.0,
                          "decode_recompute_s": 0.0}))["no_kv_cache"]
    assert flat.stake_s is None and "nothing at stake measured at this length" in flat.stake_basis


def test_a_memory_and_a_time_finding_of_one_severity_rank_by_their_share():
    from loadprof.analysis.findings import rank
    from loadprof.core.conclusions import Finding

    slow = Finding("dominant_user_function", "medium", "t", "d", "f", {"stake_share": 0.14}, ("a",), "case",
                   True, stake_s=0.31)
    big = Finding("memory_culprit", "medium", "t", "d", "f", {"stake_share": 1.0}, ("a",), "case", True,
                  stake_bytes=2 ** 30)
    assert [f.kind for f in rank([slow, big])] == ["memory_culprit", "dominant_user_function"]


def test_per_step_outputs_returned_by_generate_are_sized_by_the_models_shape():
    from loadprof.analysis.settings import returned_bytes

    shape = {"num_layers": 2, "hidden_size": 8, "num_heads": 2, "vocab_size": 100, "model_dtype": "bfloat16"}
    s = {**shape, "return_dict_in_generate": True, "output_scores": True, "output_attentions": True,
         "output_hidden_states": True}
    # 4 new tokens of 2 sequences after a 3-token prompt: the first step sees the prompt, each later one one token
    sizes = returned_bytes(s, batch=2, prompt=3, new=4)
    assert sizes["scores"] == 4 * 2 * 100 * 4  # float32 over the vocabulary, each step
    assert sizes["hidden states"] == 3 * 2 * (3 + 3) * 8 * 2  # layers + embeddings, prompt then 3 single tokens
    # attention maps: 3x3 at the first step, then 1 x (4, 5, 6) context
    assert sizes["attentions"] == 2 * 2 * 2 * (9 + 4 + 5 + 6) * 2
    t = _trial({"generate_settings": s, "new_tokens": 4}, batch=2)
    f = _found(t)["returned_outputs"]
    assert f.mistake and f.stake_bytes == sum(returned_bytes(s, 2, t.strategy.generate.prompt_tokens, 4).values())
    assert "scores" in f.title and "output_attentions" in f.detail and "compute_transition_scores" in f.fix
    # without return_dict_in_generate nothing is returned per step; without an output, nothing either
    assert "returned_outputs" not in _found(_trial({"generate_settings": {**s, "return_dict_in_generate": False},
                                                    "new_tokens": 4}))
    assert "returned_outputs" not in _found(_trial({"generate_settings": {**shape, "return_dict_in_generate": True},
                                                    "new_tokens": 4}))



@pytest.mark.e2e
def test_the_returned_bytes_formula_is_the_returned_tensors_bytes(tmp_path):
    """generate's own returned scores, hidden states and attentions, summed tensor by tensor, against the formula
    (two sequences, a 12-token prompt, 9 new tokens, eager attention so the maps are returned)."""
    import torch
    from transformers import AutoModelForCausalLM

    from loadprof.analysis.settings import returned_bytes
    from loadprof.probes.generation import effective_settings
    from loadprof.strategies.model import SyntheticSpec
    from loadprof.strategies.synthetic import make_model

    model = AutoModelForCausalLM.from_pretrained(make_model(SyntheticSpec(shape="tiny-gpt2", dtype="float32"),
                                                            root=tmp_path), attn_implementation="eager")
    kwargs = dict(max_new_tokens=9, min_new_tokens=9, do_sample=False, return_dict_in_generate=True,
                  output_scores=True, output_hidden_states=True, output_attentions=True, pad_token_id=0)
    ids = torch.ones(2, 12, dtype=torch.long)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)

    def nbytes(x):
        return x.numel() * x.element_size() if torch.is_tensor(x) else sum(nbytes(y) for y in x)

    measured = {"scores": nbytes(out.scores), "hidden states": nbytes(out.hidden_states),
                "attentions": nbytes(out.attentions)}
    assert returned_bytes(effective_settings(model, kwargs), batch=2, prompt=12, new=9) == measured
