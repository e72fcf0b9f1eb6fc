"""loadprof.analysis.estimate: exact formulas, and estimates held against real loads, caches and bnb quantization."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import json

import pytest

from loadprof.core.errors import SpecError

from loadprof.analysis.estimate import (SizeEstimate, estimate_command, estimate_from_config, estimate_strategy,
                                        ESTIMATE_COLUMNS, estimate_rows, estimate_vs_measured)
from loadprof.worker.trial import model_facts, quant_state_bytes
from loadprof.strategies.model import GenerateSpec, LoadSpec, ModelSpec, Strategy, SyntheticSpec
from loadprof.strategies.synthetic import config_dict, make_model, param_count

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_growth(fn: Any) -> tuple[Any, float, int]:
    """Run fn; return (result, seconds, peak RSS growth in bytes) sampled every 5 ms."""
    proc, base, peak, done = psutil.Process(), psutil.Process().memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss - base)
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        th.join()
    return out, seconds, max(peak[0], proc.memory_info().rss - base)


# ---- exact formulas --------------------------------------------------------------------------------

def test_qwen7b_exact_formulas_without_materializing_weights() -> None:
    estimate_command("tiny", dtype="bfloat16")  # import torch/transformers/qwen2 first: not the estimate's cost
    [e], seconds, grown = _peak_rss_growth(lambda: estimate_command(
        "qwen2.5-7b", dtype="bfloat16", batch_size=1, prompt_tokens=128, max_new_tokens=2048))
    assert seconds < 10 and grown < 500e6, (seconds, grown)
    params = param_count(SyntheticSpec(shape="qwen2.5-7b"))
    assert e.param_count == params == 7_615_616_512
    assert e.weight_bytes == params * 2 and e.weight_bytes_by_dtype == {"bfloat16": params * 2}
    assert e.quant_state_bytes == 0 and e.buffers_bytes == 2 * 64 * 4  # rotary inv_freq + original_inv_freq, fp32
    assert e.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2 == 57344
    # generate() sizes a static cache max_length - 1 = prompt + max_new_tokens - 1 (measured below)
    assert e.kv_cache_static_bytes == 57344 * (128 + 2048 - 1)
    assert e.kv_cache_dynamic_bytes == 57344 * (128 + 2048 - 1)
    h, i, v, q, kv = 3584, 18944, 152064, 3584, 512
    assert e.largest_layer == ("model.embed_tokens", v * h * 2)
    assert e.per_layer_bytes == (h * q + 2 * h * kv + q * h + q + 2 * kv + 3 * h * i + 2 * h) * 2
    assert not e.tied_embeddings and e.dtype == e.kv_dtype == "bfloat16"
    assert "2 x 28 x 4 x 128 x 2 = 57344" in e.formulas["kv_bytes_per_token"]
    assert set(e.formulas) >= {"weight_bytes", "kv_cache_dynamic_bytes", "kv_cache_static_bytes", "largest_layer"}


def test_stop_after_dtype_auto_and_gpt2_kv_layout() -> None:
    cfg_spec = SyntheticSpec(shape="gpt2", dtype="float16")
    s = Strategy(model=ModelSpec(synthetic=cfg_spec), load=LoadSpec(dtype="auto"),
                 generate=GenerateSpec(prompt_tokens=10, max_new_tokens=100, batch_size=3, stop_after=5))
    e = estimate_strategy(s)
    assert e.dtype == "float16"  # auto = the config's own dtype
    assert e.kv_bytes_per_token == 2 * 12 * 12 * 64 * 2  # gpt2: n_layer, n_head, n_embd / n_head
    assert e.generated_tokens == 5
    assert e.kv_cache_dynamic_bytes == e.kv_bytes_per_token * 3 * (10 + 5 - 1)
    assert e.kv_cache_static_bytes == e.kv_bytes_per_token * 3 * (10 + 100 - 1)  # sized for the cap regardless
    assert e.tied_embeddings and e.param_count == param_count(cfg_spec)
    assert e.largest_layer == ("transformer.wte", 50257 * 768 * 2)  # the tied lm_head shares it: counted once
    assert e.weight_bytes == param_count(cfg_spec) * 2


def test_auto_without_config_dtype_falls_back_to_float32() -> None:
    from loadprof.analysis.estimate import config_from_dict

    d = config_dict(SyntheticSpec(shape="tiny"))
    d.pop("dtype"), d.pop("torch_dtype")
    e = estimate_from_config(config_from_dict(d), dtype="auto")
    assert e.dtype == "float32" and e.weight_bytes == e.param_count * 4


def test_module_import_does_not_import_torch() -> None:
    code = "import sys, loadprof.analysis.estimate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---- estimates vs measurements ---------------------------------------------------------------------

def _load(path: Path, dtype: str, **kw: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kw)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("estimate-models")
    return {shape: make_model(SyntheticSpec(shape=shape, dtype="bfloat16"), root=root)
            for shape in ("tiny", "tiny-gpt2")}


MEASURED: list[str] = []  # printed with pytest -s


@pytest.mark.e2e
@pytest.mark.parametrize("shape", ["gpt2", "qwen2.5-0.5b"])
def test_weight_bytes_match_a_real_load(shape: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The acceptance check: model_facts() of a real from_pretrained load vs the config-only estimate."""
    import gc

    path = make_model(SyntheticSpec(shape=shape, dtype="bfloat16"), root=tmp_path_factory.mktemp(shape))
    for dtype in ("float32", "bfloat16"):
        [e] = estimate_command(str(path), dtype=dtype)
        model = _load(path, dtype)
        facts = model_facts(model)
        del model
        gc.collect()
        MEASURED.append(f"{shape} {dtype}: measured {facts['weights_bytes']} estimated {e.tensor_bytes}")
        print(MEASURED[-1])
        assert abs(facts["weights_bytes"] / e.tensor_bytes - 1) < 0.05
        assert facts["weights_bytes"] == e.tensor_bytes  # in fact exact
        assert facts["param_count"] == e.param_count
        expected = dict(e.weight_bytes_by_dtype)
        if e.buffers_bytes:  # rotary inv_freq buffers stay fp32
            expected["float32"] = expected.get("float32", 0) + e.buffers_bytes
        assert facts["bytes_by_dtype"] == expected
        assert not any(r["discrepancy"] for r in estimate_vs_measured(e, {"weights_bytes": facts["weights_bytes"]}))


@pytest.mark.parametrize("impl", ["dynamic", "static"])
@pytest.mark.parametrize("shape", ["tiny", "tiny-gpt2"])
def test_kv_cache_bytes_match_generate(shape: str, impl: str, checkpoints: dict[str, Path]) -> None:
    import torch

    model = _load(checkpoints[shape], "bfloat16")
    x = torch.randint(3, 100, (2, 7))
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=9, min_new_tokens=9, do_sample=False,
                         return_dict_in_generate=True, cache_implementation=impl, pad_token_id=0)
    measured = sum(t.numel() * t.element_size() for layer in out.past_key_values.layers
                   for t in (layer.keys, layer.values))
    [e] = estimate_command(shape, dtype="bfloat16", batch_size=2, prompt_tokens=7, max_new_tokens=9)
    e = dataclasses.replace(e, cache_implementation=impl)
    assert measured == e.kv_cache_bytes
    assert not any(r["discrepancy"] for r in estimate_vs_measured(e, {"kv_cache_bytes": measured}))


@pytest.mark.parametrize("impl", ["dynamic", "static"])
def test_sliding_window_kv_cache_matches_generate(impl: str) -> None:
    """A tiny Mistral with window 5: dynamic layers keep window - 1 tokens, static ones are sized min(window, cap)."""
    import torch
    from transformers import AutoModelForCausalLM

    from loadprof.analysis.estimate import config_from_dict

    config = config_from_dict(config_dict(SyntheticSpec(arch="mistral", shape="tiny")))
    config.sliding_window = 5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    x = torch.randint(3, 100, (1, 7))
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                         return_dict_in_generate=True, cache_implementation=impl, pad_token_id=0)
    measured = sum(t.numel() * t.element_size() for layer in out.past_key_values.layers
                   for t in (layer.keys, layer.values))
    e = estimate_from_config(config, dtype="float32", prompt_tokens=7, max_new_tokens=6, cache_implementation=impl)
    assert measured == e.kv_cache_bytes == e.kv_bytes_per_token * (4 if impl == "dynamic" else 5)
    assert "sliding" in e.formulas[f"kv_cache_{impl}_bytes"]


def test_keep_in_fp32_modules_are_counted_in_fp32(checkpoints: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Qwen2ForCausalLM

    monkeypatch.setattr(Qwen2ForCausalLM, "_keep_in_fp32_modules", ["norm"])
    [e] = estimate_command(str(checkpoints["tiny"]), dtype="float16")
    facts = model_facts(_load(checkpoints["tiny"], "float16"))
    assert facts["weights_bytes"] == e.tensor_bytes
    assert e.weight_bytes_by_dtype["float32"] == (2 * 2 + 1) * 64 * 4  # 2 norms x 2 layers + final norm, hidden 64


def _bnb_unavailable() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
        from transformers.integrations import validate_bnb_backend_availability
    except ImportError as e:
        return f"bitsandbytes not importable: {e}"
    if not validate_bnb_backend_availability(raise_exception=False):
        return "bitsandbytes has no backend for the devices here"
    return None


@pytest.mark.skipif(_bnb_unavailable() is not None, reason=str(_bnb_unavailable()))
@pytest.mark.parametrize("quant,double,skip", [("bnb-8bit", False, None), ("bnb-4bit-nf4", False, None),
                                               ("bnb-4bit-fp4", False, None), ("bnb-4bit-nf4", True, None),
                                               ("bnb-8bit", False, ["gate_proj", "c_fc"])])
@pytest.mark.parametrize("shape", ["tiny", "tiny-gpt2"])
def test_bnb_weight_bytes_match_a_quantized_load(shape: str, quant: str, double: bool, skip: list[str] | None,
                                                 checkpoints: dict[str, Path]) -> None:
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "bnb-8bit":
        qc = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.rsplit("-", 1)[-1],
                                bnb_4bit_use_double_quant=double, bnb_4bit_compute_dtype=torch.bfloat16)
    model = _load(checkpoints[shape], "bfloat16", quantization_config=qc, device_map="cpu")
    facts, qstate = model_facts(model), quant_state_bytes(model)
    e = estimate_from_config(model.config, dtype="bfloat16", quantization=quant, double_quant=double,
                             skip_modules=skip)
    MEASURED.append(f"{shape} {quant}{'+dq' if double else ''}{f' skip={skip}' if skip else ''}: measured tensors "
                    f"{facts['weights_bytes']} + "
                    f"stats {qstate}, estimated {e.tensor_bytes} + {e.quant_state_bytes}")
    print(MEASURED[-1])
    assert facts["weights_bytes"] == e.tensor_bytes
    assert qstate == e.quant_state_bytes
    assert e.weight_bytes < estimate_from_config(model.config, dtype="bfloat16").weight_bytes
    assert not any(r["discrepancy"] for r in estimate_vs_measured(e, {"weights_bytes": facts["weights_bytes"],
                                                         "quant_state_bytes": qstate}))


# ---- compare ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bf16() -> SizeEstimate:
    return estimate_command("tiny", dtype="bfloat16", prompt_tokens=16, max_new_tokens=8)[0]


def test_compare_flags_a_2x_upcast_and_passes_3_percent(tiny_bf16: SizeEstimate) -> None:
    [row] = estimate_vs_measured(tiny_bf16, {"weights_bytes": tiny_bf16.tensor_bytes * 2})
    assert row["discrepancy"] and row["ratio"] == 2.0 and row["likely_cause"].startswith("dtype upcast")
    [row] = estimate_vs_measured(tiny_bf16, {"weights_bytes": int(tiny_bf16.tensor_bytes * 1.03)})
    assert not row["discrepancy"] and row["likely_cause"] is None and row["estimate"] == tiny_bf16.tensor_bytes


def test_compare_names_untied_embeddings_extra_copies_and_kv(tiny_bf16: SizeEstimate) -> None:
    assert tiny_bf16.tied_embeddings
    [row] = estimate_vs_measured(tiny_bf16, {"weights_bytes": tiny_bf16.tensor_bytes + tiny_bf16.embedding_bytes})
    assert row["likely_cause"] == "untied or duplicated embedding weights"
    [row] = estimate_vs_measured(tiny_bf16, {"weights_bytes": int(tiny_bf16.tensor_bytes * 1.25)})
    assert row["likely_cause"] == "an extra copy during load or buffers not in the estimate"
    w, kv = estimate_vs_measured(tiny_bf16, {"weights_bytes": tiny_bf16.tensor_bytes, "kv_cache_bytes": 10**9})
    assert not w["discrepancy"] and kv["figure"] == "kv_cache_bytes" and kv["discrepancy"]


# ---- the CLI entry points --------------------------------------------------------------------------

def test_estimate_command_targets_and_table(tiny_model: Path, tmp_path: Path) -> None:
    from rich.console import Console

    [by_shape] = estimate_command("qwen2:tiny", dtype="bfloat16")
    [by_path] = estimate_command(str(tiny_model), dtype="bfloat16")
    assert by_shape.param_count == by_path.param_count == param_count(SyntheticSpec(shape="tiny"))
    assert by_shape.weight_bytes == by_path.weight_bytes
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("model: {synthetic: {shape: tiny}}\n"
                     "matrix:\n  load: {dtype: [float32, bfloat16]}\n  generate: {max_new_tokens: [8, 16]}\n"
                     "  probes: [[phases], [memory]]\n")  # probes do not change the estimate: deduplicated
    es = estimate_command(str(sweep))
    assert len(es) == 4 and {(e.dtype, e.max_new_tokens) for e in es} == {
        (d, n) for d in ("float32", "bfloat16") for n in (8, 16)}
    from loadprof.reports.formats import rich_table

    table = rich_table("t", ESTIMATE_COLUMNS, estimate_rows(es))
    assert table.row_count == 4
    with Console(width=200, record=True) as c:
        c.print(table)
    assert "bfloat16" in c.export_text()
    with pytest.raises(Exception, match="no config"):
        estimate_command("no-such-org/no-such-model")



def test_estimate_cli_table_across_dtypes_and_formats():
    from click.testing import CliRunner

    from loadprof.cli.main import main

    r = CliRunner().invoke(main, ["estimate", "gpt2", "--dtype", "fp32", "--dtype", "bf16", "--dtype", "int8",
                                  "--dtype", "int4", "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.output.splitlines()]
    assert [(x["dtype"], x["quantization"]) for x in rows] == [
        ("float32", "none"), ("bfloat16", "none"), ("float16", "bnb-8bit"), ("float16", "bnb-4bit-nf4")]
    assert rows[0]["weight_bytes"] == 2 * rows[1]["weight_bytes"] > rows[2]["weight_bytes"] > rows[3]["weight_bytes"]
    assert all(x["total_bytes"] >= x["weight_bytes"] + x["kv_cache_dynamic_bytes"] for x in rows)
    md = CliRunner().invoke(main, ["estimate", "gpt2", "--dtype", "fp16", "--quantization", "none",
                                   "--quantization", "int8", "--format", "md"])
    assert md.exit_code == 0 and md.output.startswith("| model | dtype | quant |") and md.output.count("\n") == 4
    csv_out = CliRunner().invoke(main, ["estimate", "gpt2", "--format", "csv"]).output.splitlines()
    assert csv_out[0].startswith("model,dtype,quantization,param_count,weight_bytes") and len(csv_out) == 2
    bad = CliRunner().invoke(main, ["estimate", "gpt2", "--dtype", "fp17"])
    assert bad.exit_code == 2 and "--dtype: invalid dtype 'fp17'" in bad.output


def test_estimate_of_a_yaml_honours_every_option_given(tmp_path):
    """Options given on the command line replace every strategy's own; those not given keep the YAML's."""
    from loadprof.analysis.estimate import estimate_command

    y = tmp_path / "s.yaml"
    y.write_text("model: {synthetic: {shape: tiny}}\nbase: {generate: {prompt_tokens: 16, max_new_tokens: 8}}\n")
    (own,) = estimate_command(str(y))
    assert (own.batch_size, own.prompt_tokens, own.max_new_tokens) == (1, 16, 8)
    given = frozenset({"dtypes", "batch_size", "max_new_tokens"})
    (e,) = estimate_command(str(y), dtype="float16", batch_size=8, max_new_tokens=2048, overrides=given)
    assert (e.dtype, e.batch_size, e.prompt_tokens, e.max_new_tokens) == ("float16", 8, 16, 2048)
    (q,) = estimate_command(str(y), dtype="float16", quantization="bnb-8bit", overrides=frozenset({"dtypes"}))
    assert q.quantization == "bnb-8bit"
    with pytest.raises(SpecError):  # one it cannot apply: exit 2
        estimate_command(str(y), batch_size=0, overrides=frozenset({"batch_size"}))


# ---------------------------------------------------------------- tampered configs (issue 23: hostile input)

_GOOD = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 256}
#: (key, value as written in config.json, how the refusal shows it, why)
TAMPERED = [("num_hidden_layers", "-3", "-3", "is not a positive integer"),
            ("num_hidden_layers", "0", "0", "is not a positive integer"),
            ("vocab_size", "1e30", "1e+30", "is a float; expected a positive integer"),
            ("hidden_size", '"64"', "'64'", "is not a positive integer"),
            ("num_attention_heads", "4.0", "4.0", "is a float; expected a positive integer"),
            ("num_attention_heads", "NaN", "NaN", "is not a positive integer"),
            ("intermediate_size", "Infinity", "Infinity", "is not a positive integer"),
            ("num_key_value_heads", "[2]", "[2]", "is not a positive integer"),
            ("num_hidden_layers", "1025", "1025", "exceeds the cap of 1,024"),
            ("vocab_size", "4194305", "4194305", "exceeds the cap of 4,194,304"),
            ("hidden_size", "131073", "131073", "exceeds the cap of 131,072"),
            ("num_attention_heads", "true", "True", "is not a positive integer")]


def _tampered_folder(folder: Path, key: str, raw: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**_GOOD, key: "@@"}).replace('"@@"', raw)
    (folder / "config.json").write_text(text)
    return folder


@pytest.mark.parametrize("key,raw,shown,why", TAMPERED)
def test_a_tampered_config_is_refused_naming_key_value_and_file(tmp_path, key, raw, shown, why):
    from loadprof.strategies.preflight import preflight

    folder = _tampered_folder(tmp_path / "m", key, raw)
    for call in (lambda: estimate_command(str(folder)),
                 lambda: preflight([Strategy(model=ModelSpec(path=str(folder)))])):
        with pytest.raises(SpecError) as e:
            call()
        assert e.value.exit_code == 2
        assert e.value.message == f"{folder / 'config.json'}: {key} = {shown} {why}"


def test_heads_must_divide_and_missing_keys_take_transformers_defaults(tmp_path):
    from loadprof.strategies.config_bounds import check_config

    with pytest.raises(SpecError, match="hidden_size = 64 is not divisible by num_attention_heads = 5"):
        check_config({**_GOOD, "num_attention_heads": 5, "num_key_value_heads": 5}, "c.json")
    check_config({**_GOOD, "num_attention_heads": 5, "num_key_value_heads": 5, "head_dim": 16}, "c.json")  # explicit
    with pytest.raises(SpecError, match="num_attention_heads = 4 is not a multiple of num_key_value_heads = 3"):
        check_config({**_GOOD, "num_key_value_heads": 3}, "c.json")
    with pytest.raises(SpecError, match=r"c.json \(text_config\): vocab_size = -1"):
        check_config({"model_type": "x", "text_config": {"vocab_size": -1}}, "c.json")
    check_config({"model_type": "gpt2", "n_inner": None, "n_embd": 64, "n_head": 4}, "c.json")  # null: derived
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1,
                                                    "hidden_size": 64, "num_attention_heads": 4,
                                                    "intermediate_size": 128, "vocab_size": 100}))
    e = estimate_command(str(folder), prompt_tokens=4, max_new_tokens=4)[0]  # the rest: LlamaConfig's defaults
    assert e.param_count > 0 and e.kv_bytes_per_token == 2 * 1 * 4 * 16 * 4  # float32 default, kv = heads


def test_estimate_and_compare_refuse_a_tampered_model_folder_cleanly(tmp_path):
    folder = _tampered_folder(tmp_path / "m", "num_hidden_layers", "NaN")
    y = tmp_path / "s.yaml"
    y.write_text(f"name: x\nmodel: {{path: {folder}}}\n")
    for args in (["estimate", str(folder)], ["compare", str(y), "--out", str(tmp_path / "out"), "--no-progress"]):
        r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", *args], capture_output=True, text=True,
                           timeout=120)
        text = r.stdout + r.stderr
        assert r.returncode == 2 and "Traceback" not in text, text
        assert f"error: {folder / 'config.json'}: num_hidden_layers = NaN is not a positive integer" in text
    assert not (tmp_path / "out").exists()
