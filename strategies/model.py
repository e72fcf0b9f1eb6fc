"""Frozen specs for one point of a sweep: model + load settings + generate settings.

Specs are plain data (no torch): the parent validates and hashes them, the
worker receives them as JSON. Mapping-valued knobs (an explicit device_map,
max_memory, loader kwargs) are stored as sorted tuples of pairs so that every
spec stays hashable and its ``id`` is stable across runs and machines.
"""

from __future__ import annotations

import functools

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from loadprof.core.errors import SpecError
from loadprof.core.probe_registry import SELECTABLE

# ---- allowed values (docs/reference/yaml.md is generated from them, through loadprof.strategies.schema) ----
DEVICE_MAPS = ("cpu", "cuda", "auto", "balanced", "balanced_low_0", "sequential")
DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZATIONS = ("none", "bnb-8bit", "bnb-4bit-nf4", "bnb-4bit-fp4")
OFFLOADS = ("none", "cpu", "disk")
FILE_CACHES = ("cold", "warm", "as-is")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")
#: how a trial's process starts: ``auto`` (the default) forks warm CPU trials from a pre-imported zygote and starts
#: the rest fresh (loadprof.run.isolation says which and why); ``fresh``, a new interpreter, always; ``forkserver``,
#: forked whenever the trial allows it (loadprof.worker.forkserver; cold-cache trials still start fresh: they
#: measure the cold import too)
ISOLATIONS = ("auto", "fresh", "forkserver")
#: isolations left out of ``Strategy.id``: ``fresh`` was the default before ``auto``, which replaced it, and ids
#: (and resumes) of YAMLs written before either hold; ``auto`` and ``fresh`` measure the same phases
UNHASHED_ISOLATIONS = ("auto", "fresh")
#: how the weights are brought in (loadprof.strategies.methods: what each needs, reads and supports)
LOAD_METHODS = ("from_pretrained", "parallel", "safetensors", "fastsafetensors", "runai", "instanttensor")
METHOD_ALIASES = {"runai-model-streamer": "runai", "runai_model_streamer": "runai", "hf": "from_pretrained"}
#: familiar spellings, normalized where the YAML is read (so fp16 and float16 are one strategy, one id)
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
QUANTIZATION_ALIASES = {"int8": "bnb-8bit", "8bit": "bnb-8bit", "int4": "bnb-4bit-nf4", "4bit": "bnb-4bit-nf4",
                        "nf4": "bnb-4bit-nf4", "fp4": "bnb-4bit-fp4", "no": "none"}
ALIASES = {"load.dtype": DTYPE_ALIASES, "model.synthetic.dtype": DTYPE_ALIASES,
           "load.quantization": QUANTIZATION_ALIASES, "load.method": METHOD_ALIASES}
VALIDATION_RE = re.compile(r"^(none|full|deep|sample(:[1-9][0-9]*)?)$")
#: what ``probes:`` may name: the registry's selectable probes (loadprof.core.probe_registry, the one list)
PROBES = SELECTABLE
#: py-spy rate when sampling is on by default (custom loaders). Measured on 2 cores (benchmarks/probe_overhead.py):
#: nonblocking 50 Hz cost 1.04x on a load, 100 Hz 1.065x; blocking 200 Hz had slowed a load by 35%.
DEFAULT_SAMPLING_HZ = 50
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")

class FrozenMap(tuple):
    """A mapping frozen as a sorted tuple of (key, value) pairs, tagged so ``thaw`` never mistakes a list for it."""

    __slots__ = ()


def freeze_mapping(value: Mapping[Any, Any] | None) -> FrozenMap | None:
    """Mapping -> FrozenMap (keys as strings, sorted by key), None stays None."""
    if value is None:
        return None
    items = [(str(k), _freeze(v)) for k, v in value.items()]
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise SpecError(f"keys collide once written as strings: {sorted(value, key=str)!r}")
    return FrozenMap(sorted(items, key=lambda kv: kv[0]))


def _freeze(v: Any) -> Any:
    if isinstance(v, Mapping):
        return freeze_mapping(v)
    if isinstance(v, (list, tuple)) and not isinstance(v, FrozenMap):
        return tuple(_freeze(x) for x in v)
    return v


def thaw(value: Any) -> Any:
    """Inverse of ``freeze_mapping`` for JSON output and for calling libraries (tuples become lists)."""
    if isinstance(value, FrozenMap):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(x) for x in value]
    return value


#: a device in a device_map dict or a max_memory key: accelerate's names (a GPU index, cuda:N, cpu, disk, ...)
DEVICE_RE = re.compile(r"^(cpu|disk|mps|meta|(cuda|xpu|npu|mlu|musa|hpu)(:[0-9]+)?|[0-9]+)$")
DEVICE_HINT = "a GPU index (0, 1, ...), cuda:N, cpu or disk"
#: the least memory_limit a worker can run under: importing torch, transformers and the worker takes about
#: 210 MiB of data segment on CPU (measured with RLIMIT_DATA, the limit memory_limit sets); below it every trial
#: dies during import (SIGABRT/SIGSEGV) before measuring anything
MIN_MEMORY_LIMIT = 256 * 2**20


def check_device(value: Any, what: str) -> None:
    """A device string (or GPU index) as accelerate takes it, or SpecError naming ``what`` and the nearest one."""
    if isinstance(value, bool) or not DEVICE_RE.match(str(value).strip()):
        near = {"gpu": "0 or cuda:0", "cuda0": "cuda:0", "gpu0": "0 or cuda:0", "ram": "cpu", "host": "cpu"}
        guess = near.get(str(value).strip().lower().replace(" ", ""))
        raise SpecError(f"unknown device {value!r}; expected {DEVICE_HINT}" + (f" (did you mean {guess}?)" if guess
                                                                                  else ""), path=what)


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise SpecError(f"invalid {what} {value!r}; allowed: {', '.join(allowed)}", path=what)


SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any, what: str = "size") -> int:
    """'16GiB' / '500MB' / 1024 -> bytes. Raises SpecError naming ``what``."""
    if isinstance(value, bool):
        raise SpecError(f"expected a size like '2GiB', got {value!r}", path=what)
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"size must be >= 0, got {value}", path=what)
        return value
    m = SIZE_RE.match(str(value))
    if not m:
        raise SpecError(f"expected a size like '2GiB' or '500MB', got {value!r}", path=what)
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


@dataclass(frozen=True)
class SyntheticSpec:
    """A real transformers architecture with seeded random weights (see loadprof.strategies.synthetic)."""

    arch: str | None = None  # None: the shape's own architecture (gpt2 for gpt2 shapes, qwen2 for qwen2.5-*, ...)
    shape: str = "tiny"
    dtype: str = "bfloat16"
    seed: int = 0
    max_shard_size: str = "200MB"

    def __post_init__(self) -> None:
        from loadprof.strategies.shapes import resolve_arch  # torch-free; knows the shapes and which archs fit them

        for name, typ in (("shape", str), ("seed", int)):
            v = getattr(self, name)
            if not isinstance(v, typ) or isinstance(v, bool):
                raise SpecError(f"expected {typ.__name__}, got {v!r}", path=f"model.synthetic.{name}")
        if self.arch is not None and not isinstance(self.arch, str):
            raise SpecError(f"expected a string, got {self.arch!r}", path="model.synthetic.arch")
        resolve_arch(self)
        _choice(self.dtype, DTYPES[1:], "model.synthetic.dtype")
        parse_size(self.max_shard_size, "model.synthetic.max_shard_size")


@dataclass(frozen=True)
class ModelSpec:
    """Exactly one of ``synthetic``, ``path`` (local folder) or ``hub_id`` (must be in the local HF cache)."""

    synthetic: SyntheticSpec | None = None
    path: str | None = None
    hub_id: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None  # a hub branch, tag or commit (with hub_id): which cached snapshot to load

    def __post_init__(self) -> None:
        given = [n for n in ("synthetic", "path", "hub_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise SpecError("give exactly one of synthetic, path, hub_id", path="model")
        if self.revision is not None and (self.hub_id is None or not isinstance(self.revision, str)
                                          or not self.revision.strip()):
            raise SpecError(f"a revision is a branch, tag or commit of a hub_id model, got {self.revision!r}"
                            + ("" if self.hub_id else " without a hub_id"), path="model.revision")

    @property
    def label(self) -> str:
        if self.synthetic is not None:
            return f"{self.synthetic.arch or ''}:{self.synthetic.shape}".lstrip(":")
        if self.hub_id and self.revision:
            return f"{self.hub_id}@{self.revision}"
        return self.path or self.hub_id or "?"


@dataclass(frozen=True)
class LoaderSpec:
    """The user's own loader: ``"pkg.module:callable"`` (or ``module:Class.method``)."""

    target: str
    kwargs: FrozenMap = FrozenMap()
    init_kwargs: FrozenMap = FrozenMap()
    sys_path: tuple[str, ...] = ()
    model_arg: str = "model_path"

    def __post_init__(self) -> None:
        for name in ("kwargs", "init_kwargs"):
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, freeze_mapping(v))
            elif isinstance(v, (list, tuple)) and not v:
                object.__setattr__(self, name, FrozenMap())
            elif not isinstance(v, FrozenMap):
                raise SpecError(f"expected a mapping, got {v!r}", path=f"load.loader.{name}")
        object.__setattr__(self, "sys_path", tuple(self.sys_path))
        if not isinstance(self.target, str) or not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", self.target):
            raise SpecError(f"expected 'pkg.module:callable', got {self.target!r}", path="load.loader.target")


@dataclass(frozen=True)
class LoadSpec:
    device_map: str | FrozenMap = "cpu"
    dtype: str = "auto"
    quantization: str = "none"
    offload: str = "none"
    max_memory: FrozenMap | None = None
    offload_folder: str | None = None
    attn_implementation: str | None = None
    low_cpu_mem_usage: bool | None = None
    validation: str = "none"
    file_cache: str = "warm"
    loader: LoaderSpec | None = None
    extra_kwargs: FrozenMap = FrozenMap()
    method: str = "from_pretrained"
    workers: int | None = None  # reader threads of a method that takes them (None: the method's own default)
    check_logits: bool = False  # compare the method's logits with from_pretrained's, after the workload

    def __post_init__(self) -> None:
        _choice(self.method, LOAD_METHODS, "load.method")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise SpecError(f"must be an integer >= 1, got {self.workers!r}", path="load.workers")
        if not isinstance(self.check_logits, bool):
            raise SpecError(f"expected true or false, got {self.check_logits!r}", path="load.check_logits")
        for name in ("device_map", "max_memory", "extra_kwargs"):
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, freeze_mapping(v))
            elif isinstance(v, (list, tuple)) and not v and name == "extra_kwargs":
                object.__setattr__(self, name, FrozenMap())
        if not isinstance(self.device_map, (str, FrozenMap)):
            raise SpecError(f"expected one of {', '.join(DEVICE_MAPS)} or a mapping of module -> device, "
                            f"got {self.device_map!r}", path="load.device_map")
        if self.max_memory is not None and not isinstance(self.max_memory, FrozenMap):
            raise SpecError(f"expected a mapping of device -> size, got {self.max_memory!r}", path="load.max_memory")
        if not isinstance(self.validation, str):
            raise SpecError(f"expected a string, got {self.validation!r}", path="load.validation")
        if isinstance(self.device_map, str):
            _choice(self.device_map, DEVICE_MAPS, "load.device_map")
        _choice(self.dtype, DTYPES, "load.dtype")
        _choice(self.quantization, QUANTIZATIONS, "load.quantization")
        _choice(self.offload, OFFLOADS, "load.offload")
        _choice(self.file_cache, FILE_CACHES, "load.file_cache")
        if self.attn_implementation is not None:
            _choice(self.attn_implementation, ATTN_IMPLEMENTATIONS, "load.attn_implementation")
        if not VALIDATION_RE.match(self.validation):
            raise SpecError(
                f"invalid validation {self.validation!r}; allowed: none, sample, sample:K (K >= 1), full, deep",
                path="load.validation",
            )
        if isinstance(self.device_map, FrozenMap):
            for module, dev in self.device_map:
                check_device(dev, f"load.device_map.{module!r}" if module == "" else f"load.device_map.{module}")
        if self.max_memory is not None:
            for dev, size in self.max_memory:
                check_device(dev, f"load.max_memory.{dev}")
                parse_size(size, f"load.max_memory.{dev}")
        if self.offload == "cpu" and self.max_memory is None:
            raise SpecError("offload: cpu needs max_memory that caps the main device", path="load.offload",
                            hint="e.g. max_memory: {0: 2GiB, cpu: 30GiB}")

    @property
    def needs_cuda(self) -> bool:
        dm = self.device_map
        if isinstance(dm, str):
            return dm == "cuda"
        return any(str(v).startswith("cuda") or str(v).isdigit() for _, v in dm)

    @property
    def validation_mode(self) -> tuple[str, int]:
        """('sample', k) / ('full', 0) / ... ; bare 'sample' means k = 10 (first and last 10)."""
        mode, _, k = self.validation.partition(":")
        return mode, int(k) if k else (10 if mode == "sample" else 0)


@dataclass(frozen=True)
class GenerateSpec:
    prompt_tokens: int = 32
    max_new_tokens: int = 32
    batch_size: int = 1
    cache_implementation: str = "dynamic"
    stop_after: int | None = None
    warmup: int = 1
    repeats: int = 1
    stop_at_eos: bool = False

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "max_new_tokens", "batch_size", "repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"must be an integer >= 1, got {v!r}", path=f"generate.{name}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise SpecError(f"must be an integer >= 0, got {self.warmup!r}", path="generate.warmup")
        _choice(self.cache_implementation, CACHE_IMPLEMENTATIONS, "generate.cache_implementation")
        if self.stop_after is not None:
            if isinstance(self.stop_after, bool) or not isinstance(self.stop_after, int) or self.stop_after < 1:
                raise SpecError(f"must be an integer >= 1, got {self.stop_after!r}", path="generate.stop_after")

    @property
    def expected_new_tokens(self) -> int:
        return min(self.max_new_tokens, self.stop_after or self.max_new_tokens)


UNTIL_RE = re.compile(r"^(exit|loaded|first-token|[0-9]+(\.[0-9]+)?s?)$")


@dataclass(frozen=True)
class ProgramSpec:
    """A whole program as a trial's target (``loadprof run -- CMD``, or ``program:`` in a YAML) instead of a model
    and a loader: started unchanged, with loadprof's hooks installed at interpreter start.

    ``until``: exit (wait for it), loaded, first-token, or a number of seconds (loadprof.run.until)."""

    cmd: tuple[str, ...]
    cwd: str | None = None
    env: FrozenMap = FrozenMap()
    until: str = "exit"
    settle_s: float = 3.0

    def __post_init__(self) -> None:
        if isinstance(self.cmd, str) or not self.cmd or not all(isinstance(c, str) for c in self.cmd):
            raise SpecError(f"expected a non-empty list of strings, got {self.cmd!r}", path="program.cmd")
        object.__setattr__(self, "cmd", tuple(self.cmd))
        env = self.env
        if isinstance(env, Mapping):
            env = freeze_mapping({str(k): str(v) for k, v in env.items()})
        elif isinstance(env, (list, tuple)) and not env:
            env = FrozenMap()
        if not isinstance(env, FrozenMap):
            raise SpecError(f"expected a mapping of name -> value, got {self.env!r}", path="program.env")
        object.__setattr__(self, "env", env)
        if not isinstance(self.until, str) or not UNTIL_RE.match(self.until):
            raise SpecError(f"expected exit, loaded, first-token or seconds, got {self.until!r}", path="program.until")
        if isinstance(self.settle_s, bool) or not isinstance(self.settle_s, (int, float)) or self.settle_s < 0:
            raise SpecError(f"must be a number of seconds >= 0, got {self.settle_s!r}", path="program.settle_s")

    @property
    def label(self) -> str:
        """The command as a shell would show it (what stands in for a model's name in reports)."""
        import shlex

        return shlex.join(self.cmd)


def program_model(program: ProgramSpec) -> ModelSpec:
    """What stands in for a program strategy's model: its command, so reports that group and name trials by
    model name the program (the models it loads are named by their own load phases)."""
    return ModelSpec(path=program.label)


@dataclass(frozen=True)
class Strategy:
    """One point of the sweep. ``id`` hashes everything that changes the measurement, not the label."""

    model: ModelSpec
    load: LoadSpec = field(default_factory=LoadSpec)
    generate: GenerateSpec | None = field(default_factory=GenerateSpec)
    label: str = ""
    timeout_s: float = 600.0
    memory_limit: str | None = None
    probes: tuple[str, ...] = ("phases", "memory", "io", "allocations")
    sampling_hz: int | None = None  # None: DEFAULT_SAMPLING_HZ for a custom loader (to name its functions), else off
    isolation: str = "auto"
    program: ProgramSpec | None = None  # a whole program instead of model + loader (model then names it)

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool) and self.timeout_s > 0):
            raise SpecError(f"must be a number of seconds > 0, got {self.timeout_s!r}", path="timeout_s")
        if isinstance(self.probes, str) or not all(isinstance(p, str) for p in self.probes):
            raise SpecError(f"expected a list of probe names, got {self.probes!r}", path="probes")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise SpecError(f"unknown probe {unknown[0]!r}; allowed: {', '.join(PROBES)}", path="probes")
        object.__setattr__(self, "probes", tuple(self.probes))
        object.__setattr__(self, "timeout_s", float(self.timeout_s))
        if self.memory_limit is not None and parse_size(self.memory_limit, "memory_limit") < MIN_MEMORY_LIMIT:
            raise SpecError(f"{self.memory_limit!r} is below 256MiB, the least a worker needs to import torch and "
                            "transformers", path="memory_limit", hint="leave memory_limit out for no limit")
        if self.sampling_hz is not None and (isinstance(self.sampling_hz, bool) or not (
                isinstance(self.sampling_hz, int) and 0 <= self.sampling_hz <= 1000)):
            raise SpecError(f"must be an integer Hz in 0..1000, got {self.sampling_hz!r}", path="sampling_hz")
        _choice(self.isolation, ISOLATIONS, "isolation")

    def to_dict(self) -> dict[str, Any]:
        d = _to_jsonable(_asdict(self))
        if d.get("program", 0) is None:  # a model + loader strategy's dict is what it always was
            d.pop("program")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Strategy":
        m = dict(d["model"])
        syn = m.pop("synthetic", None)
        model = ModelSpec(synthetic=SyntheticSpec(**syn) if syn else None, **m)
        ld = dict(d.get("load") or {})
        loader = ld.pop("loader", None)
        if loader:
            loader = LoaderSpec(**loader)
        load = LoadSpec(loader=loader, **ld)
        gen = d.get("generate")
        prog = d.get("program")
        rest = {k: v for k, v in d.items() if k not in ("model", "load", "generate", "program")}
        return cls(model=model, load=load, generate=GenerateSpec(**gen) if gen else None,
                   program=ProgramSpec(**prog) if prog else None, **rest)

    @functools.cached_property
    def id(self) -> str:
        """Computed once per strategy (kept in its ``__dict__``: the dataclass is immutable, so it cannot go stale):
        a sweep of 10,000 trials asks for each id many times over."""
        d = self.to_dict()
        d.pop("label", None)
        if d.get("isolation") in UNHASHED_ISOLATIONS:  # hashes as before the key existed: ids (and resumes) hold
            d.pop("isolation")
        if d.get("model", {}).get("revision", 0) is None:  # likewise a model without a revision
            d["model"].pop("revision")
        for key, unset in UNHASHED_LOAD_DEFAULTS:  # and a load by the default method
            if key in d.get("load", {}) and d["load"][key] == unset:
                d["load"].pop(key)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def effective_sampling_hz(self) -> int:
        if self.sampling_hz is not None:
            return self.sampling_hz
        return DEFAULT_SAMPLING_HZ if self.load.loader is not None or self.program is not None else 0

    def relabel(self, label: str) -> "Strategy":
        """This strategy under another label, its id (which ignores the label) carried over, not recomputed."""
        new = replace(self, label=label)
        new.__dict__["id"] = self.id
        return new

    def display(self) -> str:
        return self.label or self.id

    def at(self, path: str) -> Any:
        """The value at a dotted YAML path ('load.dtype', 'generate.max_new_tokens', 'load.loader.kwargs.x'), as
        the YAML would give it; None where absent. For knobs named by the user (a study's varying path)."""
        node: Any = self.to_dict()
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node


#: load keys added after ids were first written: left out of ``Strategy.id`` at their default, so ids hold
UNHASHED_LOAD_DEFAULTS = (("method", "from_pretrained"), ("workers", None), ("check_logits", False))


def _asdict(v: Any) -> Any:
    """``dataclasses.asdict`` without its deep copy of every leaf (the leaves are immutable YAML values): ids of a
    10,000-trial sweep in well under a second."""
    if hasattr(type(v), "__dataclass_fields__"):
        return {name: _asdict(getattr(v, name)) for name in type(v).__dataclass_fields__}
    if isinstance(v, (list, tuple)):
        return type(v)(_asdict(x) for x in v)
    if isinstance(v, dict):
        return {k: _asdict(x) for k, x in v.items()}
    return v


def _to_jsonable(v: Any) -> Any:
    """asdict() output -> JSON-ready: frozen pair tuples back to dicts."""
    if isinstance(v, dict):
        return {k: _to_jsonable(thaw(x) if isinstance(x, tuple) else x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_jsonable(x) for x in v]
    return v


STRATEGY_KEYS = tuple(f.name for f in fields(Strategy))
MODEL_KEYS = tuple(f.name for f in fields(ModelSpec))
SYNTHETIC_KEYS = tuple(f.name for f in fields(SyntheticSpec))
LOAD_KEYS = tuple(f.name for f in fields(LoadSpec))
LOADER_KEYS = tuple(f.name for f in fields(LoaderSpec))
GENERATE_KEYS = tuple(f.name for f in fields(GenerateSpec))
PROGRAM_KEYS = tuple(f.name for f in fields(ProgramSpec))


@dataclass(frozen=True)
class Trial:
    """One isolated run of a strategy; ``repeat_index`` counts from 0."""

    strategy: Strategy
    repeat_index: int = 0

    @property
    def id(self) -> str:
        return f"{self.strategy.id}-r{self.repeat_index}"
