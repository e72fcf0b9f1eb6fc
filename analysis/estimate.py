"""What a model *should* need, from its config alone: weights, largest layer, KV cache.

Why: a measurement is only a diagnosis once there is an expectation to hold it against. Every
figure here is a formula (written next to the code and carried in ``SizeEstimate.formulas``) over a
model built on the meta device, so even a 7B costs no weight memory and about a second. The
bitsandbytes skip rules are transformers' own (``get_keys_to_not_convert``/``should_convert_module``)
so the estimate follows the installed version. torch is imported inside functions only: the CLI
parent imports this module without torch.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadprof.core.errors import LoadprofError
from loadprof.strategies.config_bounds import check_config

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}
HALF = ("float16", "bfloat16")
BNB4_BLOCK = 64  # bitsandbytes 4-bit: one absmax per 64 weights
BNB4_NESTED_BLOCK = 256  # nested (double) quant: absmax itself int8-quantized in blocks of 256
TOLERANCE = 0.10  # estimate_vs_measured(): off by more than this is a discrepancy


@dataclass(frozen=True)
class SizeEstimate:
    """Expected bytes for one model x load dtype/quantization x generate settings (sizes in bytes)."""

    model: str
    dtype: str  # resolved load dtype ("auto" already replaced)
    quantization: str
    batch_size: int
    prompt_tokens: int
    max_new_tokens: int
    generated_tokens: int  # min(max_new_tokens, stop_after or max_new_tokens)
    param_count: int
    weight_bytes: int  # parameters as stored + bnb quant stats (scales/absmax); buffers not included
    weight_bytes_by_dtype: dict[str, int]
    quant_state_bytes: int  # bnb scales/absmax: attributes of the weights, not parameters or buffers
    buffers_bytes: int
    largest_layer: tuple[str, int]
    per_layer_bytes: int
    embedding_bytes: int
    tied_embeddings: bool
    kv_dtype: str
    kv_bytes_per_token: int
    kv_cache_dynamic_bytes: int
    kv_cache_static_bytes: int
    cache_implementation: str
    formulas: dict[str, str]
    num_attention_heads: int = 0  # query heads: the size of a per-head (prompt + cap)^2 attention mask/bias
    num_layers: int = 0  # decoder layers (what a device map places one by one)
    tensor_count: int = 0  # unique parameter tensors (tied once): what a checkpoint stores and a load visits

    @property
    def tensor_bytes(self) -> int:
        """Parameter + buffer tensors: what ``loadprof.worker.trial.model_facts`` reports as ``weights_bytes``."""
        return self.weight_bytes - self.quant_state_bytes + self.buffers_bytes

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache_static_bytes if self.cache_implementation == "static" else self.kv_cache_dynamic_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["largest_layer"] = {"name": self.largest_layer[0], "bytes": self.largest_layer[1]}
        d["tensor_bytes"] = self.tensor_bytes
        return d


def resolve_dtype(config: Any, dtype: str) -> str:
    """``auto`` -> the config's own dtype (``dtype``/``torch_dtype``), else float32, as from_pretrained does."""
    if dtype != "auto":
        if dtype not in HALF + ("float32",):
            raise LoadprofError(f"unknown dtype {dtype!r}", hint="one of auto, float32, float16, bfloat16")
        return dtype
    v = getattr(config, "dtype", None)
    if v is None and not hasattr(config, "dtype"):  # transformers 4.x configs only know torch_dtype
        v = getattr(config, "torch_dtype", None)
    name = str(v).removeprefix("torch.") if v is not None else ""
    return name if name in HALF + ("float32",) else "float32"


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if callable(get) else config


def _kv_layout(config: Any) -> tuple[int, int, int, list[int | None]]:
    """(layers, kv_heads, head_dim, per-layer sliding window or None), as the transformers caches see it."""
    c = _text_config(config)
    layers, heads = c.num_hidden_layers, c.num_attention_heads  # gpt2: n_layer/n_head via attribute_map
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        types, kwargs = get_layer_types_and_kwargs(c)
        windows = [kw.get("sliding_window") if "sliding" in t or t == "chunked_attention" else None
                   for t, kw in zip(types, kwargs)]
    except (ImportError, AttributeError, TypeError):
        windows = [None] * layers
    return layers, kv_heads, head_dim, (windows + [None] * layers)[:layers]


def _matches(name: str, patterns: list[str]) -> bool:
    """keep_in_fp32 patterns as transformers' dtype_plan applies them (regex search, ``*`` = ``.*``)."""
    return any(re.search(p.replace("*", ".*"), name) for p in patterns)


def _quantized_modules(model: Any, skip_modules: list[str] | None) -> set[str]:
    """Names of the Linear/Conv1D modules bnb replaces: all but transformers' default skips
    (``get_keys_to_not_convert``: tied keys, the last parameter's module, the output embedding, i.e.
    lm_head) or, when given, ``llm_int8_skip_modules`` instead; ``_keep_in_fp32_modules`` always skipped."""
    import torch.nn as nn

    try:
        from transformers.pytorch_utils import Conv1D
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module
    except ImportError:  # other transformers layout: lm_head only, suffix/prefix match
        Conv1D = nn.Linear  # noqa: N806
        get_keys_to_not_convert = lambda m: ["lm_head"]  # noqa: E731

        def should_convert_module(name: str, pats: list[str]) -> bool:
            return not any(name == p or name.endswith("." + p) or name.startswith(p + ".") for p in pats)

    skip = list(get_keys_to_not_convert(model)) if skip_modules is None else list(skip_modules)
    skip += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    return {name for name, m in model.named_modules()
            if (type(m) is nn.Linear or isinstance(m, Conv1D)) and should_convert_module(name, skip)}


def _quant_weight(quantization: str, numel: int, rows: int, double_quant: bool) -> dict[str, tuple[int, bool]]:
    """dtype -> (bytes, is_quant_state) of one quantized weight (as bitsandbytes 0.50 stores it).

    8-bit (LLM.int8): int8 = 1 B/param + one fp32 scale (SCB) per output row.
    4-bit (nf4/fp4): packed 2 params/byte (uint8) + fp32 absmax per 64-param block + its 16-entry fp32
    code book; nested quant: absmax as uint8 (1 B/block) + fp32 absmax per 256 blocks + fp32 offset +
    the 256-entry fp32 code book of that second level. Code books are per weight (measured, not shared).
    """
    if quantization == "bnb-8bit":
        return {"int8": (numel, False), "float32": (4 * rows, True)}
    blocks = math.ceil(numel / BNB4_BLOCK)
    out = {"uint8": ((numel + 1) // 2, False)}
    if double_quant:
        out["uint8_absmax"] = (blocks, True)
        out["float32"] = (4 * math.ceil(blocks / BNB4_NESTED_BLOCK) + 4 + 4 * 256 + 4 * 16, True)
    else:
        out["float32"] = (4 * blocks + 4 * 16, True)
    return out


def _weights(m: Any, tdt: Any, quantization: str, double_quant: bool, skip_modules: list[str] | None
             ) -> tuple[dict[str, int], int, int, dict[str, int], bool]:
    """(bytes by dtype, quant-state bytes, params, own bytes per module, any keep_in_fp32) of a meta model.

    Per parameter: quantized Linear weight -> ``_quant_weight``; ``_keep_in_fp32_modules`` match (fp16
    loads; ``_strict`` also bf16) -> numel x 4; else numel x its meta dtype's size (the load dtype, as
    from_pretrained assigns it). Tied parameters are one object: counted once."""
    import torch

    plan = m._get_dtype_plan(tdt) if hasattr(m, "_get_dtype_plan") else {}
    fp32_pats = [k for k, v in plan.items() if v == torch.float32]
    quantized = _quantized_modules(m, skip_modules) if quantization != "none" else set()
    by_dtype: dict[str, int] = {}
    qstate = params = 0
    module_bytes: dict[str, int] = {}
    seen: set[int] = set()
    for mname, mod in m.named_modules():
        own = 0
        for pname, p in mod.named_parameters(recurse=False):
            if mname in quantized and pname == "weight":
                rows = p.shape[1] if type(mod) is not torch.nn.Linear else p.shape[0]  # Conv1D is (in, out)
                parts = _quant_weight(quantization, p.numel(), rows, double_quant)
            else:
                full = f"{mname}.{pname}" if mname else pname
                pd = "float32" if fp32_pats and _matches(full, fp32_pats) else str(p.dtype).removeprefix("torch.")
                parts = {pd: (p.numel() * (4 if pd == "float32" else p.element_size()), False)}
            own += sum(b for b, _ in parts.values())
            if id(p) in seen:
                continue
            seen.add(id(p))
            params += p.numel()
            for d, (b, is_state) in parts.items():
                by_dtype[d.removesuffix("_absmax")] = by_dtype.get(d.removesuffix("_absmax"), 0) + b
                qstate += b if is_state else 0
        if own:
            module_bytes[mname] = own
    return by_dtype, qstate, params, module_bytes, bool(fp32_pats)


def _per_layer(m: Any, layers: int, module_bytes: dict[str, int]) -> int:
    """Bytes of decoder layer 0: the ModuleList of ``layers`` entries holding the most parameters."""
    import torch

    lists = [(n, ml) for n, ml in m.named_modules() if isinstance(ml, torch.nn.ModuleList) and len(ml) == layers]
    if not lists:
        return 0
    prefix = max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[0]
    return sum(b for n, b in module_bytes.items() if n.startswith(f"{prefix}.0."))


def estimate_from_config(config: Any, *, dtype: str, quantization: str = "none", batch_size: int = 1,
                         prompt_tokens: int = 32, max_new_tokens: int = 32, stop_after: int | None = None,
                         cache_implementation: str = "dynamic", double_quant: bool = False,
                         skip_modules: list[str] | None = None, model: str = "") -> SizeEstimate:
    """Build the model on the meta device and count bytes per parameter; no weights are read.

    ``double_quant``/``skip_modules`` mirror BitsAndBytesConfig's bnb_4bit_use_double_quant and
    llm_int8_skip_modules (None: transformers' default skips)."""
    import torch
    from transformers import AutoModelForCausalLM

    if quantization not in ("none", "bnb-8bit", "bnb-4bit-nf4", "bnb-4bit-fp4"):
        raise LoadprofError(f"unknown quantization {quantization!r}")
    dt = resolve_dtype(config, dtype)
    tdt = getattr(torch, dt)
    with torch.device("meta"):  # parameters get the load dtype (default dtype), buffers keep their own
        m = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=tdt)
    by_dtype, qstate, params, module_bytes, has_fp32 = _weights(m, tdt, quantization, double_quant, skip_modules)
    buffers = sum(b.numel() * b.element_size() for b in {id(b): b for b in m.buffers()}.values())
    largest = max(module_bytes.items(), key=lambda kv: kv[1]) if module_bytes else ("", 0)
    layers, kv_heads, head_dim, windows = _kv_layout(config)
    emb, out_emb = m.get_input_embeddings(), m.get_output_embeddings()
    emb_bytes = sum(p.numel() for p in emb.parameters()) * DTYPE_BYTES[dt] if emb is not None else 0
    tied = out_emb is not None and emb is not None and out_emb.weight is emb.weight

    # KV: keys + values per layer, kv_heads x head_dim each, in the activations' dtype (= load dtype).
    kv_b = DTYPE_BYTES[dt]
    per_token = 2 * layers * kv_heads * head_dim * kv_b
    generated = min(max_new_tokens, stop_after or max_new_tokens)
    # A dynamic cache ends with prompt + generated - 1 tokens (the last token is sampled, never fed back);
    # a sliding layer keeps at most window - 1. generate() sizes a static cache up front for the cap,
    # max_length - 1 = prompt + max_new_tokens - 1 (transformers 5.x), a static sliding layer min(window, that).
    dyn_tokens = max(prompt_tokens + generated - 1, 0) if generated else 0
    cap = max(prompt_tokens + max_new_tokens - 1, 0) if max_new_tokens else 0
    layer_tok = 2 * kv_heads * head_dim * kv_b
    kv_dyn = batch_size * layer_tok * sum(dyn_tokens if w is None else min(dyn_tokens, w - 1) for w in windows)
    kv_static = batch_size * layer_tok * sum(cap if w is None else min(cap, w) for w in windows)
    formulas = _formulas(quantization=quantization, dt=dt, double_quant=double_quant, has_fp32=has_fp32,
                         layers=layers, kv_heads=kv_heads, head_dim=head_dim, per_token=per_token,
                         batch_size=batch_size, prompt_tokens=prompt_tokens, generated=generated,
                         max_new_tokens=max_new_tokens, sliding=any(w is not None for w in windows))
    return SizeEstimate(model=model or type(m).__name__, dtype=dt, quantization=quantization, batch_size=batch_size,
                    prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, generated_tokens=generated,
                    param_count=params, weight_bytes=sum(by_dtype.values()), weight_bytes_by_dtype=by_dtype,
                    quant_state_bytes=qstate, buffers_bytes=buffers, largest_layer=largest,
                    per_layer_bytes=_per_layer(m, layers, module_bytes), embedding_bytes=emb_bytes,
                    tied_embeddings=tied, kv_dtype=dt, kv_bytes_per_token=per_token, kv_cache_dynamic_bytes=kv_dyn,
                    kv_cache_static_bytes=kv_static, cache_implementation=cache_implementation, formulas=formulas,
                    num_attention_heads=int(_text_config(config).num_attention_heads), num_layers=layers,
                    tensor_count=sum(1 for _ in m.parameters()))


def _formulas(*, quantization: str, dt: str, double_quant: bool, has_fp32: bool, layers: int, kv_heads: int,
              head_dim: int, per_token: int, batch_size: int, prompt_tokens: int, generated: int,
              max_new_tokens: int, sliding: bool) -> dict[str, str]:
    """Each estimated figure's formula, with this model's numbers filled in (shown beside the figures)."""
    kv_b = DTYPE_BYTES[dt]
    qdesc = {"none": f"params x {kv_b} B ({dt})",
             "bnb-8bit": f"quantized Linear: numel x 1 B (int8) + out_rows x 4 B (fp32 SCB); rest: params x {kv_b} B",
             }.get(quantization, "quantized Linear: ceil(numel/2) B (uint8, 2 params/B) + "
                   + ("ceil(numel/64) x 1 B + ceil(blocks/256) x 4 B + 4 B + 1088 B (nested absmax, codes)"
                      if double_quant else "ceil(numel/64) x 4 B (fp32 absmax) + 64 B (code)")
                   + f"; rest (lm_head, tied, skip modules, non-Linear): params x {kv_b} B")
    return {
        "param_count": "sum of numel over unique parameters of the meta model (tied weights once)",
        "weight_bytes": qdesc + ("; _keep_in_fp32_modules: params x 4 B" if has_fp32 else ""),
        "buffers_bytes": "sum of numel x element size over unique buffers (e.g. rotary inv_freq, fp32)",
        "largest_layer": "max over modules of their own parameters' bytes",
        "per_layer_bytes": "bytes of the parameters of decoder layer 0",
        "kv_bytes_per_token": f"2 x layers x kv_heads x head_dim x dtype B = 2 x {layers} x {kv_heads} x {head_dim}"
                              f" x {kv_b} = {per_token}",
        "kv_cache_dynamic_bytes": f"kv_bytes_per_token x batch x (prompt + generated - 1) = {per_token} x {batch_size}"
                                  f" x ({prompt_tokens} + {generated} - 1)"
                                  + ("; sliding layers: min(tokens, window - 1)" if sliding else ""),
        "kv_cache_static_bytes": f"kv_bytes_per_token x batch x (prompt + max_new_tokens - 1) = {per_token} x"
                                 f" {batch_size} x ({prompt_tokens} + {max_new_tokens} - 1)"
                                 + ("; sliding layers: min(cap, window)" if sliding else ""),
    }


def config_from_dict(d: dict[str, Any]) -> Any:
    """A config.json-style dict -> the transformers config class of its ``model_type``."""
    from transformers import AutoConfig

    d = dict(d)
    legacy = d.pop("torch_dtype", None)  # 4.x key; 5.x warns on it
    if legacy is not None:
        d.setdefault("dtype", legacy)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def load_config(model: Any, model_path: str | None = None) -> Any:
    """Config of a ModelSpec: synthetic spec, local folder (``model_path`` wins) or a cached hub id."""
    if model_path is None and getattr(model, "synthetic", None) is not None:
        from loadprof.strategies.synthetic import config_dict

        d = config_dict(model.synthetic)
        check_config(d, f"synthetic shape {model.synthetic.shape!r}")
        return config_from_dict(d)
    where = model_path or getattr(model, "path", None)
    if where:
        f = Path(where) / "config.json"
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise LoadprofError(f"cannot read a model config from {f}: {e}", exit_code=2) from None
        if not isinstance(d, dict):
            raise LoadprofError(f"{f} is not a JSON object", exit_code=2)
        check_config(d, str(f))  # sizes bounded before transformers builds anything (SpecError, exit 2)
        if "model_type" not in d:
            raise LoadprofError(f"{f} has no model_type", exit_code=2,
                                hint="a transformers config.json names its architecture in model_type")
        try:
            return config_from_dict(d)
        except (ValueError, KeyError, TypeError) as e:
            raise LoadprofError(f"cannot read a model config from {f}: {e}", exit_code=2) from None
    return _cached_hub_config(model.hub_id, model.trust_remote_code, model.revision)


def _cached_hub_config(hub_id: str, trust_remote_code: bool, revision: str | None = None) -> Any:
    """The config of a hub id from the local cache only, whatever HF_HUB_OFFLINE says: the file is looked up in
    the cache and read from its snapshot folder, so neither the hub library's request headers nor a lookup
    ever reach the network (an estimate never waits on DNS)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except Exception as e:  # noqa: BLE001 - an id the hub library rejects (bad characters, too many slashes)
        raise LoadprofError(f"invalid hub id {hub_id!r}: {str(e).strip().splitlines()[0][:160]}",
                            exit_code=2) from None
    if not isinstance(found, str):
        raise LoadprofError(f"no config for {hub_id!r}: it is not in the local Hugging Face cache; loadprof never "
                            "downloads",
                            exit_code=2, hint=f"fetch it first where there is a network: hf download {hub_id}, "
                                              "or give a local checkpoint folder") from None
    try:
        d = json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoadprofError(f"cannot read the cached config of {hub_id!r} ({found}): {e}", exit_code=2) from None
    if isinstance(d, dict):
        check_config(d, found)  # sizes bounded before transformers builds anything (SpecError, exit 2)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(Path(found).parent), trust_remote_code=trust_remote_code,
                                          local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a broken cached config: name it, no traceback
        raise LoadprofError(f"cannot read the cached config of {hub_id!r} ({found}): {type(e).__name__}: "
                            f"{str(e).strip()[:200]}", exit_code=2) from None


def estimate_strategy(strategy: Any, model_path: str | None = None) -> SizeEstimate:
    """The sizes expected for one Strategy (its model, load dtype/quantization and generate settings)."""
    g = strategy.generate
    return estimate_from_config(
        load_config(strategy.model, model_path), dtype=strategy.load.dtype, quantization=strategy.load.quantization,
        batch_size=g.batch_size if g else 1, prompt_tokens=g.prompt_tokens if g else 0,
        max_new_tokens=g.max_new_tokens if g else 0, stop_after=g.stop_after if g else None,
        cache_implementation=g.cache_implementation if g else "dynamic", model=strategy.model.label)


def estimate_command(target: str, *, dtype: str = "auto", quantization: str = "none", batch_size: int = 1,
                     prompt_tokens: int = 32, max_new_tokens: int = 32,
                     overrides: frozenset[str] = frozenset()) -> list[SizeEstimate]:
    """``loadprof estimate TARGET``: a synthetic shape (``qwen2.5-7b`` or ``arch:shape``), a checkpoint
    folder, a sweep YAML (one estimate per distinct model x load x generate), or a cached hub id.

    For a YAML, ``overrides`` names the options the user gave ("dtypes", "quantizations", "batch_size",
    "prompt_tokens", "max_new_tokens"): they replace every strategy's own setting (validated like the YAML's,
    SpecError exit 2 otherwise); the others keep the YAML's."""
    from loadprof.strategies.model import GenerateSpec, LoadSpec, ModelSpec, Strategy, SyntheticSpec
    from loadprof.strategies.shapes import SHAPES

    p = Path(target)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        try:
            from loadprof.strategies.expand import load_sweep
        except ImportError as e:
            raise LoadprofError(f"sweep files are not supported here yet ({e})") from None
        out: dict[tuple, SizeEstimate] = {}
        for s in load_sweep(p).strategies:
            s = _overridden(s, overrides, dtype=dtype, quantization=quantization, batch_size=batch_size,
                            prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens)
            g = s.generate
            gen = (g.batch_size, g.prompt_tokens, g.max_new_tokens, g.stop_after, g.cache_implementation) if g else None
            key = (s.model, s.load.dtype, s.load.quantization, gen)
            if key not in out:
                out[key] = estimate_strategy(s)
        return list(out.values())
    arch, _, shape = target.rpartition(":")
    if shape in SHAPES:
        model = ModelSpec(synthetic=SyntheticSpec(arch=arch or None, shape=shape,
                                                  dtype=dtype if dtype != "auto" else "bfloat16"))
    elif p.is_dir():
        model = ModelSpec(path=str(p))
    else:
        model = ModelSpec(hub_id=target)
    s = Strategy(model=model, load=LoadSpec(dtype=dtype, quantization=quantization),
                 generate=GenerateSpec(prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size))
    return [estimate_strategy(s)]


def _overridden(s: Any, overrides: frozenset[str], **given: Any) -> Any:
    """Strategy ``s`` with the options named in ``overrides`` put in its load and generate specs."""
    from dataclasses import replace

    from loadprof.strategies.model import GenerateSpec

    # --dtype int8 means float16 weights quantized to 8 bits: a given dtype or quantization sets both
    load = ({"dtype": given["dtype"], "quantization": given["quantization"]}
            if overrides & {"dtypes", "quantizations"} else {})
    gen = {k: given[k] for k in ("batch_size", "prompt_tokens", "max_new_tokens") if k in overrides}
    if gen and s.generate is None:
        s = replace(s, generate=GenerateSpec())
    return replace(s, load=replace(s.load, **load) if load else s.load,
                   generate=replace(s.generate, **gen) if gen else s.generate)


def dtype_grid(dtypes: tuple[str, ...], quantizations: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every --dtype x --quantization, aliases normalized; ``int8``/``int4`` given as a dtype mean float16
    compute with bnb 8/4-bit (accelerate lists them as dtypes)."""
    from loadprof.core.errors import SpecError
    from loadprof.strategies.model import DTYPE_ALIASES, DTYPES, QUANTIZATION_ALIASES, QUANTIZATIONS

    quants = []
    for q in quantizations:
        q = QUANTIZATION_ALIASES.get(q.strip().lower(), q.strip())
        if q not in QUANTIZATIONS:
            raise SpecError(f"invalid quantization {q!r}; allowed: {', '.join(QUANTIZATIONS)} (or int8, int4)",
                            path="--quantization")
        quants.append(q)
    grid = []
    for d in dtypes:
        d = d.strip().lower()
        if d in ("int8", "int4"):
            grid.append(("float16", QUANTIZATION_ALIASES[d]))
            continue
        d = DTYPE_ALIASES.get(d, d)
        if d not in DTYPES:
            raise SpecError(f"invalid dtype {d!r}; allowed: {', '.join(DTYPES)} (or fp32, fp16, bf16, int8, int4)",
                            path="--dtype")
        grid += [(d, q) for q in quants]
    return list(dict.fromkeys(grid))


ESTIMATE_COLUMNS = ("model", "dtype", "quant", "params", "weights", "largest layer", "per layer", "KV/token",
                    "KV dynamic", "KV static", "total", "batch x prompt+new")


def estimate_record(e: SizeEstimate) -> dict[str, Any]:
    """One estimate's raw figures (bytes as integers), for csv/json; ``total_bytes`` is the weights, buffers
    and the KV cache the strategy's cache implementation holds at the cap (accelerate's table has no KV)."""
    kv = e.kv_cache_static_bytes if e.cache_implementation == "static" else e.kv_cache_dynamic_bytes
    return {"model": e.model, "dtype": e.dtype, "quantization": e.quantization, "param_count": e.param_count,
            "weight_bytes": e.weight_bytes, "largest_layer": e.largest_layer[0],
            "largest_layer_bytes": e.largest_layer[1], "per_layer_bytes": e.per_layer_bytes,
            "kv_bytes_per_token": e.kv_bytes_per_token, "kv_cache_dynamic_bytes": e.kv_cache_dynamic_bytes,
            "kv_cache_static_bytes": e.kv_cache_static_bytes, "total_bytes": e.weight_bytes + e.buffers_bytes + kv,
            "batch_size": e.batch_size, "prompt_tokens": e.prompt_tokens, "max_new_tokens": e.max_new_tokens}


def estimate_rows(estimates: list[SizeEstimate]) -> list[tuple[str, ...]]:
    """The estimates as formatted cells (binary byte units), in ESTIMATE_COLUMNS order."""
    from loadprof.core.units import bytes_h

    rows = []
    for e in estimates:
        r = estimate_record(e)
        rows.append((e.model, e.dtype, e.quantization, f"{e.param_count / 1e6:,.1f} M", bytes_h(e.weight_bytes),
                     f"{e.largest_layer[0]} {bytes_h(e.largest_layer[1])}", bytes_h(e.per_layer_bytes),
                     bytes_h(e.kv_bytes_per_token), bytes_h(e.kv_cache_dynamic_bytes),
                     bytes_h(e.kv_cache_static_bytes), bytes_h(r["total_bytes"]),
                     f"{e.batch_size} x {e.prompt_tokens}+{e.max_new_tokens}"))
    return rows


def _cause(e: SizeEstimate, figure: str, est: int, measured: int) -> str:
    ratio = measured / est if est else math.inf
    if figure == "kv_cache_bytes":
        return ("cache holds more tokens or a wider dtype than expected (pre-allocation, max_length sizing)"
                if ratio > 1 else "cache holds fewer tokens than expected (generation stopped early, sliding window)")
    if ratio < 1:
        return ("less than expected: tensors left on the meta device or offloaded, "
                "or a narrower dtype/quantization than requested")
    if e.dtype in HALF and e.quantization == "none" and abs(ratio - 2) <= 2 * TOLERANCE:
        return "dtype upcast (weights stored/loaded in a wider dtype than expected)"
    emb = e.embedding_bytes
    if e.tied_embeddings and emb and abs(measured - est - emb) <= TOLERANCE * emb:
        return "untied or duplicated embedding weights"
    return "an extra copy during load or buffers not in the estimate"


def estimate_vs_measured(estimate: SizeEstimate, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured vs estimated rows (``discrepancy`` when off by more than 10%, with a likely cause).

    ``measured['weights_bytes']`` is a trial's metric (parameter + buffer tensors, as model_facts
    counts them), so it is held against ``tensor_bytes``; give ``quant_state_bytes`` too and both
    sides include bnb's scales. ``kv_cache_bytes`` (or ``kv_bytes``), when given, is held against the
    cache the strategy uses (static or dynamic).
    """
    pairs: list[tuple[str, int, Any]] = []
    if measured.get("weights_bytes") is not None:
        qs = measured.get("quant_state_bytes")
        est = estimate.tensor_bytes + (estimate.quant_state_bytes if qs is not None else 0)
        pairs.append(("weights_bytes", est, measured["weights_bytes"] + (qs or 0)))
    kv = measured.get("kv_cache_bytes", measured.get("kv_bytes"))
    if kv is not None:
        pairs.append(("kv_cache_bytes", estimate.kv_cache_bytes, kv))
    rows = []
    for figure, est, got in pairs:
        ratio = got / est if est else (1.0 if not got else math.inf)
        off = abs(ratio - 1) > TOLERANCE
        rows.append({"figure": figure, "estimate": est, "measured": got, "ratio": round(ratio, 4),
                     "discrepancy": off, "likely_cause": _cause(estimate, figure, est, got) if off else None})
    return rows
