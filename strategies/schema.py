"""A JSON Schema for the sweep YAML, generated from the strategy model (``loadprof schema``).

Editors (yaml-language-server, VS Code, JetBrains) complete and check a sweep file against it. It is built
from the same tables the validator uses (the dataclass fields and their types, the allowed values in
``loadprof.strategies.model``, the shapes), so the two cannot drift; what only the validator can check (a
path on disk, token counts against a model's positions, a loader that compiles) is left to ``loadprof expand``.
"""

from __future__ import annotations

import dataclasses
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
    "load.method": {"enum": [*m.LOAD_METHODS, *m.METHOD_ALIASES]},
    "load.workers": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
    "load.check_logits": {"type": "boolean"},
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

#: what each key means, in one line: the description an editor shows on hover, and the meaning column of the
#: YAML reference (docs/reference/yaml.md, generated from this schema); a test wants one for every key
DOCS: dict[str, str] = {
    "name": "the sweep's name: its report titles and default output folder (default: the file's stem)",
    "description": "free text, shown in the reports",
    "repeat": "isolated trials per strategy, run in rounds (r0 of every strategy, then r1, ...), each round in a "
              "seeded shuffle, so drift spreads evenly and never lines up with a knob's written order",
    "base": "a partial strategy: the starting point of every strategy",
    "matrix": "cartesian product over base: every leaf is a list (integer knobs also take a range string)",
    "include": "extra points, each deep-merged over base (not multiplied with the matrix)",
    "exclude": "drop the matrix points that match every value given",
    "model": "the checkpoint: exactly one of synthetic, path, hub_id; a string is a folder (it starts with . / ~ "
             "or exists beside the YAML), or else a cached hub id",
    "label": "the strategy's name in reports (default: the matrix values that vary)",
    "timeout_s": "seconds before the trial's process group is killed (status timeout)",
    "memory_limit": "caps the worker's data segment (e.g. 2GiB, at least 256MiB): hitting it fails the trial, "
                    "not the sweep",
    "probes": "what the worker measures (the probe table)",
    "sampling_hz": "py-spy rate, sampling the worker from outside: unset means 50 Hz for a custom loader and off for "
                   "the built-in one; 0 turns it off",
    "isolation": "auto (default): a warm trial that keeps the model on the CPU is forked from a zygote that imported "
                 "torch, transformers' top level and loadprof's probes once per sweep, and a built-in load's lazy "
                 "import (transformers.modeling_utils, the modeling module) is done and timed once per repeat round "
                 "and counted in each of that round's real load costs; cold-cache, GPU and Ray "
                 "trials start fresh; fresh: every trial a new interpreter, its import phase measured; forkserver: "
                 "forked wherever it is safe (cold-cache trials still start fresh), every trial paying its own lazy "
                 "import",
    "program": "a whole program instead of model + loader, started unchanged with loadprof's hooks installed at "
               "interpreter start (as `loadprof run -- CMD`)",
    "program.cmd": "the command line, a list of strings (a first argument ending in .py runs with loadprof's Python)",
    "program.cwd": "the folder it runs in (relative: the YAML's folder)",
    "program.env": "environment variables added to the program's (a matrix may vary them: "
                   "`program.env.OMP_NUM_THREADS: [\"1\", \"2\"]`)",
    "program.until": "when the trial ends: exit (wait for the program), loaded (the last load and its first forward "
                     "done and nothing loading for settle_s), first-token, or a number of seconds",
    "program.settle_s": "seconds without a new load after which --until loaded counts the program as loaded",
    "model.synthetic": "a real transformers architecture with seeded random weights, written as sharded "
                       "safetensors and cached by content",
    "model.synthetic.arch": "the architecture to put the shape on (unset: the shape's own)",
    "model.synthetic.shape": "the shape of a real public model (the shape table)",
    "model.synthetic.dtype": "the dtype the checkpoint stores",
    "model.synthetic.seed": "seed of the random weights",
    "model.synthetic.max_shard_size": "the largest safetensors shard",
    "model.path": "a local checkpoint folder (relative to the YAML)",
    "model.hub_id": "a hub id that is already in the local Hugging Face cache (nothing is downloaded)",
    "model.trust_remote_code": "run the checkpoint's own modeling code (only when you say so)",
    "model.revision": "with hub_id: a branch, tag or commit already in the cache",
    "load.device_map": "passed to from_pretrained; cuda (or a map naming a GPU) is skipped on a machine without CUDA",
    "load.dtype": "auto keeps the checkpoint's dtype",
    "load.quantization": "bitsandbytes; skipped where bitsandbytes is missing or has no backend",
    "load.offload": "cpu needs max_memory; disk writes to offload_folder (default: inside the trial folder)",
    "load.max_memory": "per-device caps for auto-style maps, e.g. {0: 2GiB, cpu: 30GiB}",
    "load.offload_folder": "where disk offload writes (relative to the YAML)",
    "load.attn_implementation": "passed through when set",
    "load.low_cpu_mem_usage": "passed through when set (transformers 5 ignores it)",
    "load.validation": "post-load meta-device check: the first and last K modules (sample = sample:10), every "
                       "module (full), or every module touching the data (deep)",
    "load.file_cache": "before the trial: warm reads the checkpoint once, cold evicts it from the page cache "
                       "(verified with mincore), as-is leaves it",
    "load.extra_kwargs": "anything else for from_pretrained",
    "load.method": "how the weights are brought in: from_pretrained, parallel (from_pretrained with load.workers "
                   "reader threads), or a state dict read by safetensors, fastsafetensors, runai (Run:ai model "
                   "streamer) or instanttensor into a model built on the meta device; a method whose package or "
                   "device is missing here is skipped (the loading-methods page)",
    "load.workers": "reader threads of parallel, safetensors, fastsafetensors, runai or instanttensor (unset: the "
                    "method's own default)",
    "load.check_logits": "after the workload, load the same checkpoint with from_pretrained and fail the trial "
                         "unless the method's model gives the same logits on a fixed input",
    "load.loader": "your own loader instead of from_pretrained: 'pkg.module:callable' or a mapping",
    "load.loader.target": "a function or Class.method, as 'pkg.module:callable'",
    "load.loader.kwargs": "keyword arguments of the call",
    "load.loader.init_kwargs": "keyword arguments of the class, when a method is named",
    "load.loader.sys_path": "folders to import your package from (relative to the YAML)",
    "load.loader.model_arg": "the keyword the checkpoint folder is passed in (when the callable accepts it)",
    "generate": "the generate step; false: load only",
    "generate.prompt_tokens": "length of the seeded random prompt",
    "generate.max_new_tokens": "the cap on new tokens",
    "generate.batch_size": "sequences per generate call",
    "generate.cache_implementation": "static pre-allocates the KV cache for prompt + max_new_tokens",
    "generate.stop_after": "force a stop after k tokens (what an early EOS does) while the cap stays",
    "generate.warmup": "generate calls before the measured ones; the first is also reported as cold_*",
    "generate.repeats": "measured generate calls (their medians are reported)",
    "generate.stop_at_eos": "stop at EOS; by default it is ignored, so every call makes the same number of tokens",
    "load": "how the model is loaded",
}
#: the top-level ``model`` (a shorthand) means something else than a strategy's
TOP_DOCS = {"model": "shorthand for base.model", "program": "shorthand for base.program"}


_NO_DEFAULT = object()


def _default(canon: str, key: str) -> Any:
    """The dataclass default of a leaf, as the YAML would write it (editors show it; so does the reference)."""
    f = next(f for f in dataclasses.fields(ex._SECTIONS[canon][0]) if f.name == key)
    if f.default is dataclasses.MISSING:
        return _NO_DEFAULT
    return m.thaw(f.default)


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
            props[key] = {**props[key], "description": f"{path}: {DOCS[path]}" if path in DOCS else path}
            continue
        value = _leaf(path)
        if matrix and path == "program.env":  # whole environments, or variable -> values (expand._env_dims)
            props[key] = {"anyOf": [{"type": "array", "minItems": 1, "items": {"type": "object"}},
                                    {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}}],
                          "description": f"{path}: {DOCS[path]}"}
            continue
        if matrix:
            value = {"anyOf": [{"type": "array", "minItems": 1, "items": value},
                               *([{"type": "string", "pattern": RANGE_PATTERN}]
                                 if "integer" in str(value.get("type")) else [])]}
        default = _default(canon, key)
        props[key] = {**value, "description": f"{path}: {DOCS[path]}" if path in DOCS else path,
                      **({"default": default} if not matrix and default is not _NO_DEFAULT else {})}
    out = {"type": "object", "properties": props, "additionalProperties": False}
    if matrix:  # a dotted key names a nested knob (``program.env.OMP_NUM_THREADS: [...]``); expand checks it
        out["patternProperties"] = {DOTTED_PATTERN: {}}
    return out


def sweep_schema() -> dict[str, Any]:
    """The whole sweep document's schema (draft 2020-12)."""
    partial = _section("", False)
    props: dict[str, dict[str, Any]] = {
        "name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
        "repeat": {"type": "integer", "minimum": 1, "maximum": ex.MAX_TRIALS, "default": 1},
        "model": partial["properties"]["model"], "program": partial["properties"]["program"],
        "base": {"anyOf": [partial, {"type": "null"}]}, "matrix": {"anyOf": [_section("", True), {"type": "null"}]},
        "include": {"anyOf": [{"type": "array", "items": partial}, {"type": "null"}]},
        "exclude": {"anyOf": [{"type": "array", "items": partial}, {"type": "null"}]},
    }
    for key in ex.TOP_KEYS:
        props[key] = {**props[key], "description": TOP_DOCS.get(key) or DOCS[key]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
        "title": "loadprof sweep", "type": "object", "additionalProperties": False, "properties": props,
    }
