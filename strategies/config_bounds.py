"""A model config's sizes, bounded before anything is built or estimated (exit 2 naming the key, value and file).

Why: a tampered or corrupt config.json (a negative layer count, a vocabulary of 1e30, a head count given as a
string or NaN, which Python's json parser accepts) used to reach transformers, which either raised deep inside a
model constructor (a traceback) or tried to allocate the impossible. Each size key is checked where it is
present; a missing key is left to transformers' own default, as from_pretrained would. Plain data: no torch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from loadprof.core.errors import SpecError

#: every size key transformers' configs use (gpt2, falcon, t5-style names too), with its inclusive cap
CAPS: dict[str, int] = {
    "num_hidden_layers": 1024, "n_layer": 1024, "num_layers": 1024, "n_layers": 1024,
    "num_attention_heads": 1024, "n_head": 1024, "n_heads": 1024,
    "num_key_value_heads": 1024, "n_head_kv": 1024, "multi_query_group_num": 1024,
    "hidden_size": 131072, "n_embd": 131072, "d_model": 131072,
    "intermediate_size": 1048576, "n_inner": 1048576, "ffn_dim": 1048576,
    "head_dim": 16384,
    "vocab_size": 4194304,
    "max_position_embeddings": 16777216, "n_positions": 16777216, "n_ctx": 16777216,
    "max_sequence_length": 16777216, "seq_length": 16777216,
}
#: keys a config may leave null, meaning "derive it" (gpt2's n_inner = 4 x hidden, head_dim = hidden / heads)
NULLABLE = frozenset({"n_inner", "head_dim", "num_key_value_heads", "n_head_kv", "multi_query_group_num"})
#: the nested configs a multimodal or encoder-decoder config keeps its decoder's sizes in
NESTED = ("text_config", "decoder")


def _bad(key: str, value: Any, where: str) -> str | None:
    """Why ``value`` is not a size for ``key`` (None when it is one)."""
    if value is None and key in NULLABLE:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return "is a float; expected a positive integer"
        return "is not a positive integer"
    if value <= 0:
        return "is not a positive integer"
    if value > CAPS[key]:
        return f"exceeds the cap of {CAPS[key]:,}"
    return None


def _first(config: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, int] | None:
    for k in keys:
        if isinstance(config.get(k), int):
            return k, config[k]
    return None


def _check_heads(config: Mapping[str, Any], where: str) -> None:
    """hidden divisible by heads (when head_dim does not say otherwise), heads by kv heads (grouped-query
    attention repeats each kv head heads / kv_heads times: a remainder crashes the forward pass)."""
    heads = _first(config, ("num_attention_heads", "n_head", "n_heads"))
    if heads is None:
        return
    hidden = _first(config, ("hidden_size", "n_embd", "d_model"))
    if hidden and config.get("head_dim") is None and hidden[1] % heads[1]:
        raise SpecError(f"{where}: {hidden[0]} = {hidden[1]} is not divisible by {heads[0]} = {heads[1]}",
                        hint="a tampered or corrupt config.json: every head gets hidden / heads dimensions")
    kv = _first(config, ("num_key_value_heads", "n_head_kv", "multi_query_group_num"))
    if kv and (kv[1] > heads[1] or heads[1] % kv[1]):
        raise SpecError(f"{where}: {heads[0]} = {heads[1]} is not a multiple of {kv[0]} = {kv[1]}",
                        hint="grouped-query attention shares each kv head among heads / kv_heads query heads")


def check_config(config: Mapping[str, Any], where: str) -> None:
    """SpecError (exit 2) for the first size key of ``config`` (a config.json's dict, read from ``where``) that
    is not a positive integer within its cap, or whose heads do not divide; nested text/decoder configs too."""
    for key in CAPS:
        if key in config:
            why = _bad(key, config[key], where)
            if why:
                raise SpecError(f"{where}: {key} = {_show(config[key])} {why}",
                                hint=f"at most {CAPS[key]:,}; a tampered or corrupt config.json (fix or re-fetch it)")
    _check_heads(config, where)
    for name in NESTED:
        sub = config.get(name)
        if isinstance(sub, Mapping):
            check_config(sub, f"{where} ({name})")
        elif sub is not None and name == "text_config":
            raise SpecError(f"{where}: text_config = {_show(sub)} is not an object")


def _show(value: Any) -> str:
    """The value as the file has it (NaN as NaN), kept short: a tampered value may be anything."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text):,} characters)"
