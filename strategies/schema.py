"""A JSON Schema for the sweep YAML, generated from the strategy model (``loadprof schema``).

Editors (yaml-language-server, VS Code, JetBrains) complete and check a sweep file against it. It is built
from the same tables the validator uses (the dataclass fields and their types, the allowed values in
``loadprof.strategies.model``, the shapes), so the two cannot drift; what only the validator can check (a
path on disk, token counts against a model's positions, a loader that compiles) is left to ``loadprof expand``.
"""

from __future__ import annotations

from typing import Any

from loadprof.strategies import expand as ex
from loadprof.strategies import model as m
from loadprof.strategies.shapes import ARCHS, SHAPES

SCHEMA_ID = "https://loadprof.dev/schema/sweep.json"
RANGE_PATTERN = r"^\s*[0-9]{1,15}\s*\.\.\s*[0-9]{1,15}\s*(?:[*+]\s*[0-9]{1,15})?\s*$"
SIZE_PATTERN = m.SIZE_RE.pattern
DEVICE = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": m.DEVICE_RE.pattern}]}

#: leaf path -> schema for values the validator accepts (beyond its Python type)
_VALUES: dict[str, dict[str, Any]] = {
    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    "memory_limit": {"anyOf": [{"type": "integer", "minimum": m.MIN_MEMORY_LIMIT},
                               {"type": "string", "pattern": SIZE_PATTERN}, {"type": "null"}]},
    "probes": {"type": "array", "items": {"enum": list(m.PROBES)}},
    "sampling_hz": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1000}, {"type": "null"}]},
    "isolation": {"enum": list(m.ISOLATIONS)},
    "model.path": {"type": ["string", "null"]}, "model.hub_id": {"type": ["string", "null"]},
    "model.trust_remote_code": {"type": "boolean"},
    "model.revision": {"type": ["string", "null"]},
    "model.synthetic.arch": {"anyOf": [{"enum": sorted(ARCHS)}, {"type": "null"}]},
    "model.synthetic.shape": {"enum": sorted(SHAPES)},
    "model.synthetic.dtype": {"enum": [*m.DTYPES[1:], *m.DTYPE_ALIASES]},
    "model.synthetic.seed": {"type": "integer"},
    "model.synthetic.max_shard_size": {"anyOf": [{"type": "integer", "minimum": 0},
                                                 {"type": "string", "pattern": SIZE_PATTERN}]},
    "load.device_map": {"anyOf": [{"enum": list(m.DEVICE_MAPS)},
                                  {"type": "object", "additionalProperties": DEVICE}]},
    "load.dtype": {"enum": [*m.DTYPES, *m.DTYPE_ALIASES]},
    "load.quantization": {"enum": [*m.QUANTIZATIONS, *m.QUANTIZATION_ALIASES]},
    "load.offload": {"enum": list(m.OFFLOADS)},
    "load.max_memory": {"anyOf": [{"type": "null"}, {
        "type": "object", "propertyNames": {"pattern": m.DEVICE_RE.pattern},
        "additionalProperties": {"anyOf": [{"type": "integer", "minimum": 0},
                                           {"type": "string", "pattern": SIZE_PATTERN}]}}]},
    "load.offload_folder": {"type": ["string", "null"]},
    "load.attn_implementation": {"anyOf": [{"enum": list(m.ATTN_IMPLEMENTATIONS)}, {"type": "null"}]},
    "load.low_cpu_mem_usage": {"type": ["boolean", "null"]},
    "load.validation": {"type": "string", "pattern": m.VALIDATION_RE.pattern},
    "load.file_cache": {"enum": list(m.FILE_CACHES)}, "load.extra_kwargs": {"type": "object"},
    "load.loader.target": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"},
    "load.loader.kwargs": {"type": "object"}, "load.loader.init_kwargs": {"type": "object"},
    "load.loader.sys_path": {"type": "array", "items": {"type": "string"}},
    "load.loader.model_arg": {"type": "string"},
    "generate.cache_implementation": {"enum": list(m.CACHE_IMPLEMENTATIONS)},
    "generate.warmup": {"type": "integer", "minimum": 0},
    "generate.stop_after": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
    "generate.stop_at_eos": {"type": "boolean"}, "label": {"type": "string"},
}
for _k in ("prompt_tokens", "max_new_tokens", "batch_size", "repeats"):
    _VALUES[f"generate.{_k}"] = {"type": "integer", "minimum": 1}


#: a matrix key that names a nested knob by its dotted path
DOTTED_PATTERN = r"^[a-z_]+\.[A-Za-z0-9_.]+$"


def _leaf(path: str) -> dict[str, Any]:
    return dict(_VALUES.get(path, {}))


def _section(canon: str, matrix: bool) -> dict[str, Any]:
    """A section of a partial strategy (``base``, an include) or of the matrix (every leaf a list or range)."""
    props: dict[str, Any] = {}
    for key in ex._SECTIONS[canon][1]:
        path = ex._join(canon, key)
        if matrix and canon == "" and key == "label":
            continue
        if path in ex._SECTIONS:
            sub = _section(path, matrix)
            if path == "load.loader":
                sub = {"anyOf": [sub, {"type": "string"}, {"type": "null"}]}
            elif path == "generate":
                sub = {"anyOf": [sub, {"type": ["boolean", "null"]}]}
            elif path == "model":
                sub = {"anyOf": [sub, {"type": "string", "description": "a checkpoint folder or a cached hub id"}]}
            elif path in ("load", "model.synthetic"):
                sub = {"anyOf": [sub, {"type": "null"}]}
            props[key] = ({"anyOf": [sub, {"type": "array", "items": _section(path, False)}]} if matrix else sub)
            continue
        value = _leaf(path)
        if matrix and path == "program.env":  # whole environments, or variable -> values (expand._env_dims)
            props[key] = {"anyOf": [{"type": "array", "minItems": 1, "items": {"type": "object"}},
                                    {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}}],
                          "description": path}
            continue
        if matrix:
            value = {"anyOf": [{"type": "array", "minItems": 1, "items": value},
                               *([{"type": "string", "pattern": RANGE_PATTERN}]
                                 if "integer" in str(value.get("type")) else [])]}
        props[key] = {**value, "description": f"{path}"}
    out = {"type": "object", "properties": props, "additionalProperties": False}
    if matrix:  # a dotted key names a nested knob (``program.env.OMP_NUM_THREADS: [...]``); expand checks it
        out["patternProperties"] = {DOTTED_PATTERN: {}}
    return out


def sweep_schema() -> dict[str, Any]:
    """The whole sweep document's schema (draft 2020-12)."""
    partial = _section("", False)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
        "title": "loadprof sweep", "type": "object", "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
            "repeat": {"type": "integer", "minimum": 1, "maximum": ex.MAX_TRIALS},
            "model": partial["properties"]["model"], "program": partial["properties"]["program"], "base": {"anyOf": [partial, {"type": "null"}]},
            "matrix": {"anyOf": [_section("", True), {"type": "null"}]},
            "include": {"anyOf": [{"type": "array", "items": partial}, {"type": "null"}]},
            "exclude": {"anyOf": [{"type": "array", "items": partial}, {"type": "null"}]},
        },
    }
