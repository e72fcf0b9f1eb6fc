"""Precision: stored vs loaded dtype per tensor (safetensors headers against the model), the CPU half-precision
matmul check, and the findings drawn from them (each fires on its evidence, stays quiet otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadprof.analysis import precision_rules as rules
from loadprof.probes import precision
from loadprof.results.model import TrialResult
from loadprof.core.units import bytes_h, pct, seconds
from tests.helpers import phases_payload, strategy_of

MiB = 2**20


def _trial(metrics=None, env=None, load=None, probes=None):
    return TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok",
                       strategy=strategy_of({"load": load} if load else None), metrics=metrics or {},
                       probes=probes or {}, env=env or {})


def _pair(stored, loaded, stored_bytes, loaded_bytes, numel=None, groups=None, group_bytes=None, tensors=4):
    return {"stored": stored, "loaded": loaded, "tensors": tensors, "stored_numel": numel or stored_bytes // 2,
            "stored_bytes": stored_bytes, "loaded_bytes": loaded_bytes, "groups": groups or {"mlp": tensors},
            "group_loaded_bytes": group_bytes or {"mlp": loaded_bytes}, "examples": ["a.mlp.up_proj.weight"]}


# ----------------------------------------------------------------------------------------------- the probe side

def test_header_reading_and_no_safetensors(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"a.weight": torch.zeros(2, 3, dtype=torch.bfloat16), "b": torch.zeros(4),
               "q": torch.zeros(5, dtype=torch.int8)}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert precision.read_header(tmp_path / "model.safetensors") == {
        "a.weight": ("bfloat16", 6), "b": ("float32", 4), "q": ("int8", 5)}
    stored, reason = precision.stored_tensors(str(tmp_path))
    assert reason is None and set(stored) == {"a.weight", "b", "q"}

    other = tmp_path / "bin"
    other.mkdir()
    (other / "pytorch_model.bin").write_bytes(b"x")
    stored, reason = precision.stored_tensors(str(other))
    assert stored == {} and "pytorch_model.bin" in reason
    assert precision.compare_precision(str(other), None)["reason"] == reason


def test_groups_by_name_tokens():
    g = precision.group_of
    assert [g("model.embed_tokens.weight"), g("lm_head.weight"), g("model.layers.0.post_attention_layernorm.weight"),
            g("model.layers.0.self_attn.q_proj.weight"), g("model.layers.0.mlp.down_proj.weight"),
            g("transformer.h.0.ln_1.weight"), g("transformer.h.0.attn.c_proj.weight"), g("score.weight")] == [
        "embeddings", "lm_head", "norms", "attention", "mlp", "norms", "attention", "other"]


def test_matching_by_suffix_needs_equal_numel_except_for_quantized():
    stored = {"model.layers.0.mlp.up_proj.weight": ("bfloat16", 32), "model.layers.0.mlp.down_proj.weight":
              ("bfloat16", 32), "lm_head.weight": ("bfloat16", 40), "other.proj.weight": ("bfloat16", 16)}
    loaded = {"layers.0.mlp.up_proj.weight": ("float32", 32, 128),  # prefix differs
              "layers.0.mlp.down_proj.weight": ("uint8", 16, 16),   # bnb 4-bit: packed, numel halved
              "lm_head.weight": ("float32", 40, 160),               # exact
              "x.proj.weight": ("float32", 15, 60)}                 # suffix matches, numel does not
    assert precision.match_names(stored, loaded) == {
        "layers.0.mlp.up_proj.weight": "model.layers.0.mlp.up_proj.weight",
        "layers.0.mlp.down_proj.weight": "model.layers.0.mlp.down_proj.weight", "lm_head.weight": "lm_head.weight"}
    assert precision.match_names({"a.weight": ("float32", 4)}, {"b.weight": ("float32", 4, 16)}) == {}  # never "weight"


def _tiny_module(torch):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = torch.nn.Module()
            self.self_attn.q_proj = torch.nn.Linear(8, 8, bias=False)
            self.mlp = torch.nn.Module()
            self.mlp.up_proj = torch.nn.Linear(8, 16, bias=False)
            self.input_layernorm = torch.nn.LayerNorm(8)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.embed_tokens = torch.nn.Embedding(10, 8)
            self.model.layers = torch.nn.ModuleList([Block(), Block()])
            self.lm_head = torch.nn.Linear(8, 10, bias=False)
            self.lm_head.weight = self.model.embed_tokens.weight  # tied: one storage

    return Tiny()


def test_upcast_pairs_and_bytes_with_a_prefix_difference(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    model = _tiny_module(torch)
    # the checkpoint names its tensors without the "model." prefix, in bfloat16; the tied lm_head is not stored
    state = {k.removeprefix("model."): v.detach().to(torch.bfloat16).contiguous()
             for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    out = precision.compare_precision(str(tmp_path), model)
    numel = sum(v.numel() for v in state.values())
    assert out["matched"] == len(state) and out["unmatched_loaded"] == 0 and out["unmatched_stored"] == 0
    (pair,) = out["pairs"]
    assert (pair["stored"], pair["loaded"], pair["tensors"]) == ("bfloat16", "float32", len(state))
    assert pair["stored_bytes"] == 2 * numel and pair["loaded_bytes"] == 4 * numel and pair["stored_numel"] == numel
    assert pair["groups"] == {"embeddings": 1, "attention": 2, "mlp": 2, "norms": 4}
    assert pair["group_loaded_bytes"]["mlp"] == 2 * 16 * 8 * 4 and len(pair["examples"]) == 3
    assert out["checkpoint_bytes_by_dtype"] == {"bfloat16": 2 * numel}


def test_best_copy_ns_stops_at_its_budget():
    from loadprof.probes.bandwidth import best_copy_ns

    clock = [0]
    calls = []

    def op():
        calls.append(1)
        clock[0] += 100

    assert best_copy_ns(op, lambda: None, lambda: clock[0], 10, budget_ns=250) == 100
    assert len(calls) == 1 + 3  # the untimed call, then timed ones until 300 >= 250 ns
    calls.clear()
    best_copy_ns(op, lambda: None, lambda: clock[0], 2)
    assert len(calls) == 3


def test_matmul_is_measured_only_for_a_half_precision_model_on_cpu(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    from contextlib import nullcontext

    from loadprof.core.clock import DEFAULT_CLOCK
    from loadprof.probes import bandwidth
    from loadprof.probes._hooks import HookSet
    from loadprof.probes.base import ProbeContext

    out = bandwidth.measure_matmul("bfloat16", DEFAULT_CLOCK.now_ns, n=32, repeats=2)
    assert set(out["matmul_gflops"]) == {"float32", "bfloat16"} and all(v > 0 for v in out["matmul_gflops"].values())
    assert "torch.mm 32x32" in out["matmul_method"]

    monkeypatch.setattr(bandwidth, "measure_copy_bandwidth", lambda dev, now: {
        "membw_gb_s": 1.0, "membw_bytes": 8, "membw_repeats": 1, "membw_device": "cpu", "membw_method": "m"})
    monkeypatch.setattr(bandwidth, "measure_h2d_bandwidth", lambda dev, now: {})
    monkeypatch.setattr(bandwidth, "measure_matmul", lambda dtype, now: {"matmul_gflops": {dtype: 1.0}})
    ctx = ProbeContext(clock=DEFAULT_CLOCK, hooks=HookSet(), phase=lambda n: nullcontext(n), trial_dir=tmp_path,
                       strategy=None, t0_ns=0, pid=1)
    probe = bandwidth.BandwidthProbe()
    half = torch.nn.Linear(4, 4).to(torch.bfloat16)
    assert bandwidth.floating_dtype(half) == "bfloat16" and bandwidth.floating_dtype(object()) is None
    assert probe.after_workload(half, ctx).matmul_gflops == {"bfloat16": 1.0}
    assert probe.after_workload(torch.nn.Linear(4, 4), ctx).matmul_gflops is None  # float32: nothing to compare


# ----------------------------------------------------------------------------------------------------- the rules

def _kinds(t):
    return [f.kind for rule in rules.RULES for f in rule(t)]


def test_upcast_finding_names_pair_groups_bytes_and_scaled_convert_seconds():
    up = _pair("bfloat16", "float32", 100 * MiB, 200 * MiB, numel=50 * MiB, groups={"mlp": 4, "attention": 8})
    same = _pair("float32", "float32", 60 * MiB, 60 * MiB, numel=15 * MiB)
    t = _trial({"precision": {"pairs": [up, same]}, "weights_bytes": 260 * MiB, "load_convert_thread_s": 2.0,
                "bytes_by_device": {"cpu": 260 * MiB}})
    (f,) = [f for rule in rules.RULES for f in rule(t)]
    assert f.kind == "upcast" and f.mistake and f.severity == "high"
    assert f.evidence["bytes_added"] == 100 * MiB == f.stake_bytes
    assert f"+{bytes_h(f.evidence['bytes_added'])}" in f.title and "bfloat16" in f.title and "float32" in f.title
    assert f.evidence["groups"] == {"mlp": 4, "attention": 8} and "attention (8), mlp (4)" in f.detail
    assert f.stake_s == 2.0 and f.evidence["convert_s"] == 2.0  # the only cast tensors: all of the convert time
    assert "share of all elements cast" in f.stake_basis and 'dtype="auto"' in f.fix

    # on a GPU every tensor passes through .to(device): the upcast's share of all elements scales the time
    gpu = _trial({**t.metrics, "bytes_by_device": {"cuda:0": 260 * MiB}})
    (g,) = rules.upcast(gpu)
    assert g.stake_s == pytest.approx(2.0 * 50 / 65) and "moved or cast" in g.stake_basis
    # a small upcast is medium, and without a convert measurement there are no seconds
    small = _trial({"precision": {"pairs": [up]}, "weights_bytes": 1000 * MiB})
    (s,) = rules.upcast(small)
    assert s.severity == "medium" and s.stake_s is None and "not measured" in s.stake_basis


def test_downcast_is_a_low_note_with_bytes_saved_and_the_risk():
    t = _trial({"precision": {"pairs": [_pair("float32", "float16", 400 * MiB, 200 * MiB)]}})
    (f,) = [f for rule in rules.RULES for f in rule(t)]
    assert f.kind == "downcast" and f.severity == "low" and not f.mistake
    assert f.evidence["bytes_saved"] == 200 * MiB and bytes_h(f.evidence["bytes_saved"]) in f.title
    assert "65504" in f.detail
    bf = _trial({"precision": {"pairs": [_pair("float32", "bfloat16", 400 * MiB, 200 * MiB)]}})
    assert "mantissa" in next(iter(rules.downcast(bf))).detail


def test_half_matmul_finding_only_from_a_measurement_below_float32():
    m = {"matmul_gflops": {"float32": 40.0, "bfloat16": 10.0}, "new_tokens": 32, "decode_tok_s": 16.0,
         "matmul_method": "torch.mm 384x384"}
    (f,) = [f for rule in rules.RULES for f in rule(_trial(m))]
    assert f.kind == "half_matmul_slow_on_cpu" and f.mistake and f.severity == "medium"
    assert f.evidence["ratio"] == 0.25 and f"runs at {pct(f.evidence['ratio'])} of float32" in f.title
    assert f.title.startswith("bfloat16 matmul")
    # no parameter count: only the upper bound, all of decode at the half rate
    assert f.stake_s == pytest.approx(2.0 * 0.75) and "new_tokens / decode_tok_s" in f.stake_basis
    assert f.evidence["stake_least_s"] is None and f"at most {seconds(1.5)}" in f.detail
    assert "float32" in f.fix and "AVX512-BF16" in f.fix
    assert _kinds(_trial({**m, "matmul_gflops": {"float32": 40.0, "bfloat16": 80.0}})) == []  # fast kernels
    assert _kinds(_trial({"new_tokens": 32, "decode_tok_s": 16.0})) == []  # no measurement, no finding


def test_half_matmul_stake_is_the_matmul_flops_at_most_the_decode_outside_user_code():
    m = {"matmul_gflops": {"float32": 40.0, "bfloat16": 10.0}, "new_tokens": 32, "decode_tok_s": 16.0}
    # a tiny model is dispatch-bound: its 2 x 100k x 32 FLOPs cost 0.5 ms more at a quarter of the rate
    (tiny,) = rules.half_matmul_on_cpu(_trial({**m, "param_count": 100_000}))
    assert tiny.stake_s == pytest.approx(6.4e6 / 10e9 - 6.4e6 / 40e9)
    assert tiny.evidence["stake_most_s"] == pytest.approx(1.5) and "at least" in tiny.detail
    # a large one is capped by the decode itself, less the share the user's own code held
    user = {"name": "Sink.put", "file": "app.py", "line": 3, "phase": "generate", "samples": 10, "seconds": 0.8,
            "own_s": 0.0, "running_s": 0.8, "decode_s": 0.8, "share_of_decode": 0.4}
    big = _trial({**m, "param_count": 10**10}, probes={"sampling": {"ok": True, "user_functions": [user]}})
    (f,) = rules.half_matmul_on_cpu(big)
    assert f.stake_s == f.evidence["stake_most_s"] == pytest.approx(2.0 * 0.6 * 0.75)


def test_float32_on_tensor_cores_needs_a_capable_gpu_and_float32_weights():
    m = {"bytes_by_dtype": {"float32": 1000 * MiB}, "weights_bytes": 1000 * MiB,
         "bytes_by_device": {"cuda:0": 1000 * MiB}}
    (f,) = [f for rule in rules.RULES for f in rule(_trial(m, {"cuda_capability": "9.0"}))]
    assert f.kind == "float32_on_tensor_cores" and f.mistake and f.severity == "medium"
    assert f.stake_bytes == 500 * MiB and f.evidence["float32_bytes"] == 1000 * MiB
    assert bytes_h(f.evidence["float32_bytes"]) in f.title and "bfloat16" in f.fix
    (old,) = rules.float32_on_tensor_cores(_trial(m, {"cuda_capability": "7.5"}))
    assert "float16" in old.fix and old.evidence["target_dtype"] == "float16"
    assert _kinds(_trial(m, {"cuda_capability": "6.1"})) == []  # no tensor cores
    assert _kinds(_trial(m)) == []  # no capability measured
    cpu = {**m, "bytes_by_device": {"cpu": 1000 * MiB}}
    assert _kinds(_trial(cpu, {"cuda_capability": "9.0"})) == []
    # float32 that an upcast produced is the upcast's finding, not this one
    upcast = {**m, "precision": {"pairs": [_pair("bfloat16", "float32", 500 * MiB, 1000 * MiB)]}}
    assert _kinds(_trial(upcast, {"cuda_capability": "9.0"})) == ["upcast"]


def test_quantization_that_left_most_bytes_float_names_share_and_groups():
    pairs = [_pair("bfloat16", "uint8", 200 * MiB, 50 * MiB, group_bytes={"mlp": 50 * MiB}),
             _pair("bfloat16", "bfloat16", 300 * MiB, 300 * MiB,
                   group_bytes={"embeddings": 250 * MiB, "norms": 1 * MiB, "lm_head": 49 * MiB})]
    m = {"precision": {"pairs": pairs}, "weights_bytes": 350 * MiB, "quant_state_bytes": 10 * MiB}
    t = _trial(m, load={"device_map": "cuda", "quantization": "bnb-4bit-nf4"})
    (f,) = [f for rule in rules.RULES for f in rule(t)]
    assert f.kind == "quantization_left_float" and not f.mistake and f.stake_bytes is None
    assert f.evidence["quantized_bytes"] == 60 * MiB and f.evidence["weights_bytes"] == 360 * MiB
    assert f.evidence["unquantized_share"] == pytest.approx(300 / 360)
    assert f"left {pct(f.evidence['unquantized_share'])} of the weight bytes" in f.title
    assert list(f.evidence["largest_float_groups"]) == ["embeddings", "lm_head", "norms"]
    assert "bnb-4bit-nf4" in f.title and "embeddings 250.0 MiB" in f.detail
    # attention / MLP layers left in float: the config skipped them, a mistake with those bytes at stake
    skipped = [pairs[0], _pair("bfloat16", "bfloat16", 300 * MiB, 300 * MiB,
                               group_bytes={"attention": 200 * MiB, "embeddings": 100 * MiB})]
    (g,) = rules.quantization_left_float(_trial({**m, "precision": {"pairs": skipped}},
                                                load={"device_map": "cuda", "quantization": "bnb-8bit"}))
    assert g.mistake and g.stake_bytes == 200 * MiB
    # quiet when most bytes are quantized, and when nothing asked for quantization
    mostly = {"precision": {"pairs": [_pair("bfloat16", "int8", 800 * MiB, 400 * MiB),
                                      _pair("bfloat16", "bfloat16", 100 * MiB, 100 * MiB)]}, "weights_bytes": 500 * MiB}
    assert _kinds(_trial(mostly, load={"device_map": "cuda", "quantization": "bnb-8bit"})) == []
    assert _kinds(_trial(m)) == []


def test_quantization_config_in_a_user_loader_call_counts_and_bytes_by_dtype_is_the_fallback():
    probes = {"phases": phases_payload([{"class": "X", "kwargs": {"quantization_config": "BitsAndBytesConfig(...)"}}])}
    m = {"bytes_by_dtype": {"int8": 10 * MiB, "float16": 90 * MiB}, "weights_bytes": 100 * MiB}
    (f,) = rules.quantization_left_float(_trial(m, probes=probes))
    assert f.evidence["quantization"] == "quantization_config" and f.evidence["unquantized_share"] == 0.9
    assert "no checkpoint headers" in f.stake_basis and f.evidence["largest_float_groups"] == {}


def test_no_precision_metric_no_findings():
    assert _kinds(_trial({"weights_bytes": 100})) == []
    assert _kinds(_trial({"precision": {"pairs": [], "reason": "no *.safetensors files"}})) == []


# ---------------------------------------------------------------------------------------------- a real load

def test_bf16_checkpoint_loaded_as_float32_end_to_end(tiny_model: Path, tmp_path: Path):
    """The worker's own steps on the tiny bf16 checkpoint with load.dtype float32: the precision metric shows
    the upcast, and the finding's bytes added equal the checkpoint's size (every tensor doubled). In-process, on
    the session's tiny checkpoint: about a second, so in the default set, not e2e."""
    pytest.importorskip("transformers")
    from loadprof.worker import trial as worker
    from loadprof.core.clock import DEFAULT_CLOCK
    from loadprof.core.phases import PhaseRecorder
    from loadprof.strategies.synthetic import checkpoint_bytes

    strategy = strategy_of({"model": {"synthetic": {"shape": "tiny", "dtype": "bfloat16", "max_shard_size": "200KB"}},
                            "load": {"dtype": "float32"}})
    metrics: dict = {}
    notes: list[str] = []
    rec = PhaseRecorder(DEFAULT_CLOCK, lambda ev: None, DEFAULT_CLOCK.now_ns())
    worker.run_steps(strategy, str(tiny_model), tmp_path, rec, metrics.__setitem__, notes.append)
    assert not [n for n in notes if "precision" in n]
    p = metrics["precision"]
    assert p["unmatched_stored"] == 0 and p["unmatched_loaded"] == 0
    (pair,) = p["pairs"]
    stored = checkpoint_bytes(strategy.model.synthetic)
    assert (pair["stored"], pair["loaded"]) == ("bfloat16", "float32")
    assert pair["stored_bytes"] == stored == p["checkpoint_bytes_by_dtype"]["bfloat16"]
    assert pair["loaded_bytes"] == 2 * stored
    t = _trial({k: metrics[k] for k in ("precision", "weights_bytes", "bytes_by_device")}, load={"dtype": "float32"})
    (f,) = rules.upcast(t)
    assert f.evidence["bytes_added"] == stored and f.severity == "high"
