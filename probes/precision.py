"""Stored dtype vs loaded dtype, per tensor group: what an upcast, a downcast or a quantization did to the weights.

The stored side comes from the checkpoint's safetensors headers alone (8-byte little-endian header length, then
JSON: name -> {dtype, shape, data_offsets}; nothing else is read), the loaded side from the model's parameters
(tied or shared storage counted once). Names are matched exactly, else by the longest common dotted suffix
(checkpoints and models differ by prefixes such as ``model.`` or ``transformer.``) with an equal element count;
a quantized tensor (bitsandbytes 4-bit packs two values per byte) is matched by the suffix alone.

``compare_precision(model_path, model)`` returns a JSON-ready dict, filed by the worker as the trial metric
``precision`` (docs/report-schema.md). torch is imported by nothing here: the model brings its tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping

#: safetensors dtype code -> (torch dtype name, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, float]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
#: loaded dtypes that mean "quantized" when the stored tensor was floating point (or stored the same way)
QUANTIZED_DTYPES = ("int8", "uint8", "float8_e4m3fn", "float8_e5m2")
#: tensor groups, first match wins: (group, substrings of a dotted name's parts)
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lm_head", ("lm_head", "embed_out")),
    ("embeddings", ("embed", "wte", "wpe")),
    ("norms", ("norm", "ln_")),
    ("attention", ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "query", "key", "value")),
    ("mlp", ("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "c_fc", "fc1", "fc2", "experts")),
)
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
INDEX_NAME = "model.safetensors.index.json"
N_EXAMPLES = 3


def group_of(name: str) -> str:
    parts = name.lower().split(".")
    for group, needles in GROUPS:
        if any(n in p for p in parts for n in needles):
            return group
    return "other"


def read_header(path: Path) -> dict[str, tuple[str, int]]:
    """{tensor name: (torch dtype name, numel)} from one safetensors file's header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name}: header of {n} bytes is not a safetensors header")
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in info["shape"]:
            numel *= int(d)
        out[name] = (SAFETENSORS_DTYPES.get(info["dtype"], (info["dtype"].lower(), 0))[0], numel)
    return out


def checkpoint_files(folder: Path) -> list[Path]:
    """The shards the index names, else ``model.safetensors``, else every top-level ``*.safetensors``."""
    index = folder / INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        return [folder / s for s in shards if (folder / s).is_file()]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return sorted(folder.glob("*.safetensors"))


def stored_tensors(model_path: str) -> tuple[dict[str, tuple[str, int]], str | None]:
    """Every checkpoint tensor's stored dtype and numel, or empty and why not."""
    folder = Path(model_path)
    files = checkpoint_files(folder) if folder.is_dir() else []
    if not files:
        others = sorted(p.name for p in folder.glob("*.bin"))[:3] if folder.is_dir() else []
        return {}, (f"no *.safetensors files in {model_path}" + (f" ({', '.join(others)})" if others else "")
                    + ": stored dtypes are not known without reading the weights")
    out: dict[str, tuple[str, int]] = {}
    for p in files:
        out.update(read_header(p))
    return out, None


def itemsize(dtype: str) -> float:
    return next((size for name, size in SAFETENSORS_DTYPES.values() if name == dtype), 0)


def loaded_tensors(model: Any) -> dict[str, tuple[str, int, int]]:
    """{parameter name: (dtype name, numel, bytes)}, shared storage counted once (the first name keeps it)."""
    seen: set[tuple[str, int]] = set()
    out = {}
    for name, t in model.named_parameters():
        key = (str(t.device), t.data_ptr() if t.device.type != "meta" else id(t))
        if key in seen:
            continue
        seen.add(key)
        out[name] = (str(t.dtype).removeprefix("torch."), t.numel(), t.numel() * t.element_size())
    return out


def _suffixes(name: str) -> Iterable[str]:
    """Dotted suffixes, longest first, of at least two parts (a bare ``weight`` matches nothing)."""
    parts = name.split(".")
    for k in range(len(parts), min(2, len(parts)) - 1, -1):
        yield ".".join(parts[-k:])


def match_names(stored: Mapping[str, tuple[str, int]], loaded: Mapping[str, tuple[str, int, int]]) -> dict[str, str]:
    """loaded name -> stored name: exact, else the longest common dotted suffix with equal numel (suffix alone for
    a quantized tensor, whose numel is packed)."""
    by_suffix: dict[str, list[str]] = {}
    for s in stored:
        for suf in _suffixes(s):
            by_suffix.setdefault(suf, []).append(s)
    used: set[str] = set()
    out = {}
    for name in loaded:
        if name in stored:
            out[name] = name
            used.add(name)
    for name, (dtype, numel, _) in loaded.items():
        if name in out:
            continue
        quantized = dtype in QUANTIZED_DTYPES
        for suf in _suffixes(name):
            hit = next((s for s in by_suffix.get(suf, ()) if s not in used
                        and (quantized or stored[s][1] == numel)), None)
            if hit is not None:
                out[name] = hit
                used.add(hit)
                break
    return out


def compare_precision(model_path: str, model: Any) -> dict[str, Any]:
    """Per (stored, loaded) dtype pair: tensors, bytes, groups and examples; plus what could not be matched."""
    stored, reason = stored_tensors(model_path)
    by_dtype: dict[str, int] = {}
    for dtype, numel in stored.values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + int(numel * itemsize(dtype))
    out: dict[str, Any] = {"pairs": [], "matched": 0, "unmatched_loaded": 0, "unmatched_stored": len(stored),
                           "unmatched_examples": [], "checkpoint_bytes_by_dtype": by_dtype,
                           "checkpoint_tensors": len(stored)}
    if reason:
        return {**out, "reason": reason}
    loaded = loaded_tensors(model)
    matches = match_names(stored, loaded)
    out.update(pairs=pairs_of(stored, loaded, matches), matched=len(matches),
               unmatched_loaded=len(loaded) - len(matches), unmatched_stored=len(stored) - len(matches),
               unmatched_examples=[n for n in loaded if n not in matches][:N_EXAMPLES])
    return out


def pairs_of(stored: Mapping[str, tuple[str, int]], loaded: Mapping[str, tuple[str, int, int]],
             matches: Mapping[str, str]) -> list[dict[str, Any]]:
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for name, sname in matches.items():
        sdtype, snumel = stored[sname]
        ldtype, lnumel, lbytes = loaded[name]
        p = pairs.setdefault((sdtype, ldtype), {
            "stored": sdtype, "loaded": ldtype, "tensors": 0, "stored_numel": 0, "stored_bytes": 0,
            "loaded_bytes": 0, "groups": {}, "group_loaded_bytes": {}, "examples": []})
        group = group_of(name)
        p["tensors"] += 1
        p["stored_numel"] += snumel
        p["stored_bytes"] += int(snumel * itemsize(sdtype))
        p["loaded_bytes"] += lbytes
        p["groups"][group] = p["groups"].get(group, 0) + 1
        p["group_loaded_bytes"][group] = p["group_loaded_bytes"].get(group, 0) + lbytes
        if len(p["examples"]) < N_EXAMPLES:
            p["examples"].append(name)
    return sorted(pairs.values(), key=lambda p: -p["loaded_bytes"])
