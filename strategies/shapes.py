"""Model shapes for synthetic checkpoints, copied from real public config.json files.

Each shape is kept in its native architecture's own vocabulary (GPT-2's ``n_embd``,
Llama's ``hidden_size``, ...) so that it can be diffed against the hub file it names.
Only keys that change the weights or the model's behaviour are kept: dropout
settings for fine-tuning heads, ``task_specific_params``, ``transformers_version``
and the dtype are left out (the dtype comes from the spec). ``dims`` gives the
architecture-neutral view used to put a shape on another architecture.
Plain data: no torch, no transformers.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

from loadprof.core.errors import SpecError


class Shape(NamedTuple):
    arch: str  # the architecture the public config belongs to
    source: str  # where the numbers come from
    config: dict[str, Any]


_LLAMA32_ROPE = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}

SHAPES: dict[str, Shape] = {
    # loadprof's own (in the spirit of hf-internal-testing/tiny-random-Qwen2ForCausalLM): a few hundred KB,
    # yet it has what the real ones have: GQA (4 heads, 2 kv heads), q/k/v biases, tied embeddings.
    "tiny": Shape("qwen2", "loadprof (tiny-random style)", {
        "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "initializer_range": 0.02, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 2, "attention_dropout": 0.0, "use_cache": True,
    }),
    # GPT-2 has no grouped-query attention, so `tiny` cannot go on it: this is tiny's GPT-2 twin
    # (in the spirit of hf-internal-testing/tiny-random-gpt2).
    "tiny-gpt2": Shape("gpt2", "loadprof (tiny-random style)", {
        "activation_function": "gelu_new", "n_embd": 64, "n_head": 4, "n_layer": 2, "n_inner": None,
        "n_positions": 1024, "n_ctx": 1024, "vocab_size": 1000, "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    }),
    # openai-community/gpt2 (tie_word_embeddings is GPT2Config's implicit default, written out here)
    "gpt2": Shape("gpt2", "openai-community/gpt2", {
        "activation_function": "gelu_new", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_inner": None,
        "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 50256, "eos_token_id": 50256,
        "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
    }),
    # openai-community/gpt2-medium
    "gpt2-medium": Shape("gpt2", "openai-community/gpt2-medium", {
        "activation_function": "gelu_new", "n_embd": 1024, "n_head": 16, "n_layer": 24, "n_inner": None,
        "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 50256, "eos_token_id": 50256,
        "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
    }),
    # Qwen/Qwen2.5-0.5B
    "qwen2.5-0.5b": Shape("qwen2", "Qwen/Qwen2.5-0.5B", {
        "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151643,
        "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 24,
        "attention_dropout": 0.0, "use_cache": True,
    }),
    # Qwen/Qwen2.5-1.5B
    "qwen2.5-1.5b": Shape("qwen2", "Qwen/Qwen2.5-1.5B", {
        "hidden_act": "silu", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "initializer_range": 0.02, "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151643,
        "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
        "attention_dropout": 0.0, "use_cache": True,
    }),
    # Qwen/Qwen2.5-7B
    "qwen2.5-7b": Shape("qwen2", "Qwen/Qwen2.5-7B", {
        "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "initializer_range": 0.02, "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151643,
        "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
        "attention_dropout": 0.0, "use_cache": True,
    }),
    # meta-llama/Llama-3.2-1B
    "llama-3.2-1b": Shape("llama", "meta-llama/Llama-3.2-1B", {
        "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": _LLAMA32_ROPE, "initializer_range": 0.02, "tie_word_embeddings": True,
        "bos_token_id": 128000, "eos_token_id": 128001, "attention_bias": False, "attention_dropout": 0.0,
        "mlp_bias": False, "pretraining_tp": 1, "use_cache": True,
    }),
    # mistralai/Mistral-7B-v0.1
    "mistral-7b": Shape("mistral", "mistralai/Mistral-7B-v0.1", {
        "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096,
        "initializer_range": 0.02, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "use_cache": True,
    }),
}


def dims(shape: Shape) -> dict[str, Any]:
    """Architecture-neutral numbers of a shape (what carries over when it is put on another arch)."""
    c = shape.config
    if shape.arch == "gpt2":
        hidden, heads = c["n_embd"], c["n_head"]
        return {"hidden": hidden, "layers": c["n_layer"], "heads": heads, "kv_heads": heads,
                "head_dim": hidden // heads, "intermediate": c["n_inner"] or 4 * hidden,
                "vocab": c["vocab_size"], "positions": c["n_positions"], "eps": c["layer_norm_epsilon"],
                "tie": c.get("tie_word_embeddings", True), "init": c["initializer_range"],
                "rope_theta": 10000.0, "rope_scaling": None,
                "bos": c.get("bos_token_id"), "eos": c.get("eos_token_id")}
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    return {"hidden": hidden, "layers": c["num_hidden_layers"], "heads": heads,
            "kv_heads": c.get("num_key_value_heads", heads), "head_dim": c.get("head_dim") or hidden // heads,
            "intermediate": c["intermediate_size"], "vocab": c["vocab_size"],
            "positions": c["max_position_embeddings"], "eps": c["rms_norm_eps"],
            "tie": c.get("tie_word_embeddings", False), "init": c["initializer_range"],
            "rope_theta": c.get("rope_theta", 10000.0), "rope_scaling": c.get("rope_scaling"),
            "bos": c.get("bos_token_id"), "eos": c.get("eos_token_id")}


ARCHS: dict[str, tuple[str, str]] = {  # arch -> (config class, model class) in transformers
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}


def _did_you_mean(value: str, allowed: list[str]) -> str | None:
    close = difflib.get_close_matches(str(value).lower(), allowed, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def shape_of(spec: Any) -> Shape:
    """The Shape a synthetic spec names; SpecError with a did-you-mean otherwise."""
    if spec.shape not in SHAPES:
        raise SpecError(f"unknown shape {spec.shape!r}; allowed: {', '.join(SHAPES)}",
                        path="model.synthetic.shape", hint=_did_you_mean(spec.shape, list(SHAPES)))
    return SHAPES[spec.shape]


def resolve_arch(spec: Any) -> str:
    """The architecture to build (the shape's own when ``spec.arch`` is None); SpecError if incompatible.

    ``spec`` is a ``SyntheticSpec`` (or anything with ``arch``, ``shape`` and ``seed``): kept here, beside the
    shapes, so the spec model can check it without importing the checkpoint builder."""
    shape = shape_of(spec)
    arch = spec.arch or shape.arch
    if arch not in ARCHS:
        raise SpecError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}",
                        path="model.synthetic.arch", hint=_did_you_mean(arch, list(ARCHS)))
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise SpecError(f"must be an integer >= 0, got {spec.seed!r}", path="model.synthetic.seed")
    d = dims(shape)
    if arch == "gpt2" and (d["kv_heads"] != d["heads"] or d["heads"] * d["head_dim"] != d["hidden"]):
        ok = [s for s, sh in SHAPES.items() if _gpt2_compatible(dims(sh))]
        raise SpecError(f"shape {spec.shape!r} has {d['heads']} attention heads but {d['kv_heads']} kv heads "
                        f"(grouped-query attention), which gpt2 does not have",
                        path="model.synthetic.arch",
                        hint=f"shapes that fit gpt2: {', '.join(ok)}; archs that fit {spec.shape}: llama, qwen2, mistral")
    return arch


def _gpt2_compatible(d: dict[str, Any]) -> bool:
    return d["kv_heads"] == d["heads"] and d["heads"] * d["head_dim"] == d["hidden"]
