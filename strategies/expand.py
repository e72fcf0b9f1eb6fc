"""Sweep YAML -> validated, frozen strategies. Pure data: never imports torch or transformers,
so ``loadprof`` can reject a bad file instantly, before any trial starts.

::

    name: quickstart          # optional; default: the file's stem
    description: free text    # optional
    repeat: 2                 # trials per strategy (isolated runs), int >= 1, default 1; run interleaved:
                              # r0 of every strategy, then r1 of every strategy, ...
    model: {...}              # shorthand for base.model (give one or the other)
    base:                     # a partial strategy, the starting point of every strategy
      model: {synthetic: {arch: qwen2, shape: tiny, dtype: bfloat16}}  # or {path: ./ckpt} or {hub_id: org/name}
      load: {device_map: cpu, dtype: auto, quantization: none, validation: "sample:10",
             file_cache: warm, loader: "pkg.mod:fn"}
      generate: {prompt_tokens: 32, max_new_tokens: 16}  # `generate: false` (or null): no generation
      label: my-run           # also: timeout_s, memory_limit, probes, sampling_hz,
                              # isolation (auto: warm CPU trials forked from a pre-imported zygote,
                              #   the rest fresh | fresh | forkserver)
    matrix:                   # cartesian product over base; every leaf is a list
      model: [{synthetic: {shape: tiny}}, {synthetic: {shape: gpt2}}]
      load: {dtype: [float32, bfloat16], device_map: [cpu, auto]}
      generate: {max_new_tokens: "32..256*2", batch_size: [1, 2]}
      timeout_s: [60, 120]
    include:                  # extra points, each deep-merged over base (not multiplied with matrix)
      - {label: my-loader, load: {loader: {target: "mypkg.loading:ModelManager.load",
                                           kwargs: {x: 1}, sys_path: [.]}}}
    exclude:                  # drop matrix points that match every value given here
      - {load: {dtype: float16, device_map: cpu}}

Field names and allowed values are those of ``loadprof.strategies.model`` (``LoadSpec`` etc.). Rules:

* Unknown keys fail with the YAML path and a did-you-mean. Bad values fail with the YAML path
  where they were written (``matrix.load.dtype[1]``), the value and what is allowed.
* ``matrix`` sections nest like ``base`` (``model``, ``model.synthetic``, ``load``,
  ``load.loader``, ``generate``); a section may also be a list of partial sections
  (``model: [{...}, {...}]``, ``generate: [false, {max_new_tokens: 8}]``), one dimension.
  Every other leaf is a non-empty list; integer knobs also take a range string:
  ``"32..4096*2"`` (32, 64, ... 4096), ``"1..8+2"`` (1, 3, 5, 7), ``"1..8"`` (step 1).
  Mapping-valued knobs (a ``device_map`` dict, ``max_memory``) take a list of mappings.
  Order: model dimensions outermost, then load, generate, top-level knobs; within a
  section, as written. Includes come after the matrix. Trials run in rounds (every strategy's r0,
  then every strategy's r1, ...), each round in a seeded shuffle; reports list them strategy by strategy.
* Without ``matrix``, ``base`` alone is the one point, unless ``include`` is given: then
  the include entries are the points.
* Merging: sections deep-merge; other values replace. A model that names a source
  (``synthetic``/``path``/``hub_id``) replaces the base's other sources.
  ``load.loader`` is ``"pkg.mod:callable"`` or a mapping (target, kwargs, init_kwargs,
  sys_path, model_arg); one with a target replaces the base's loader, one without
  (``{kwargs: {...}}``) merges into it; ``loader: null`` goes back to the built-in loader.
  ``generate: false`` / null disables generation; a later generate mapping re-enables it.
* Relative ``model.path``, ``load.offload_folder`` and ``load.loader.sys_path`` entries
  resolve against the YAML file's folder, so trials run from any cwd.
* ``exclude`` entries are partial strategies of single values; a point matches when every
  value given equals the point's (unwritten fields compare as their defaults). Excludes run
  before validation, so they can remove combinations that would be invalid.
* Labels: an include entry's own ``label`` wins; otherwise the varying matrix dimensions
  as ``key=value`` (the model as its label, a ``device_map`` dict as ``custom``), include
  entries from the keys they set, both prefixed by a base ``label``; a sweep with one
  point (or a point with nothing to say) gets the model label.
* Strategies with the same ``Strategy.id`` are kept once (first wins; ``Sweep.dropped``
  says which). An exclude that matches nothing, and a sweep left empty, are errors.
=======
What a sweep file may hold and how it expands (matrix, include, exclude, merging, labels, run order, limits)
is documented once, for users, in docs/reference/yaml.md; its key tables are generated from the dataclasses
in ``loadprof.strategies.model`` through ``loadprof.strategies.schema``, which reads ``_SECTIONS`` here, so the
validator, the JSON Schema and the reference cannot drift. Bad input fails before anything runs with the YAML
path where it was written (``matrix.load.dtype[1]``), the value, what is allowed and a did-you-mean.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import os
import random
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from loadprof.core.errors import SpecError
from loadprof.strategies.yamlload import load_yaml
from loadprof.strategies.model import (ALIASES, GENERATE_KEYS, LOAD_KEYS, LOADER_KEYS, MODEL_KEYS, PROGRAM_KEYS,
                                       STRATEGY_KEYS, SYNTHETIC_KEYS, GenerateSpec, LoaderSpec, LoadSpec, ModelSpec,
                                       ProgramSpec, Strategy, SyntheticSpec, Trial, program_model)

TOP_KEYS = ("name", "description", "repeat", "model", "program", "base", "matrix", "include", "exclude")
MATRIX_KEYS = tuple(k for k in STRATEGY_KEYS if k != "label")
# Canonical section path -> (dataclass, valid keys); the keys come from model.py so the two never drift.
_SECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "": (Strategy, STRATEGY_KEYS), "model": (ModelSpec, MODEL_KEYS),
    "model.synthetic": (SyntheticSpec, SYNTHETIC_KEYS), "load": (LoadSpec, LOAD_KEYS),
    "load.loader": (LoaderSpec, LOADER_KEYS), "generate": (GenerateSpec, GENERATE_KEYS),
    "program": (ProgramSpec, PROGRAM_KEYS)}
_MODEL_SOURCES = ("synthetic", "path", "hub_id")
_PATH_FIELDS = ("model.path", "load.offload_folder", "load.loader.sys_path")
_SIZE_FIELDS = ("memory_limit", "model.synthetic.max_shard_size")  # parse_size takes ints too
_RANK = {"model": 0, "load": 1, "generate": 2}
MAX_POINTS = 100_000
#: strategies x repeat: the most trials one sweep may plan (also bounds memory before anything runs)
MAX_TRIALS = 100_000
MAX_RANGE = 10_000


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


# Leaf canonical path -> annotation string / default, read off the dataclasses.
_LEAVES: dict[str, str] = {}
_DEFAULTS: dict[str, Any] = {}
for _sec, (_cls, _) in _SECTIONS.items():
    for _f in fields(_cls):
        if _join(_sec, _f.name) not in _SECTIONS:
            _LEAVES[_join(_sec, _f.name)] = str(_f.type)
            _DEFAULTS[_join(_sec, _f.name)] = _f.default
for _c in _SIZE_FIELDS:
    _LEAVES[_c] = _LEAVES[_c].replace("str", "str | int")

_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "FrozenMap": ("a mapping", lambda v: isinstance(v, Mapping)),
    "tuple[str, ...]": ("a list of strings",
                        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "None": ("null", lambda v: v is None),
}


@dataclass(frozen=True)
class Sweep:
    """All strategies of one YAML file, in run order; ``dropped`` notes the duplicates removed."""

    name: str
    source: str
    description: str
    repeat: int
    strategies: tuple[Strategy, ...]
    dropped: tuple[str, ...] = ()

    def trials(self) -> tuple[Trial, ...]:
        """The run order (``--resume`` runs what is left in it): rounds of every strategy once (r0 of every
        strategy, then r1, ...), each round in its own seeded shuffle. Interleaving spreads slow drift (thermals,
        page cache, a neighbour's load) evenly over the strategies; the shuffle keeps it from lining up with a
        knob's values (caps written 32, 64, ... 2048 would otherwise run in that order, and drift would read as a
        trend). The seed comes from the strategies, so the same sweep always runs in the same order; trial ids do
        not depend on it."""
        out: list[Trial] = []
        for r in range(self.repeat):
            order = list(self.strategies)
            seed = hashlib.sha256(f"{r}:".encode() + "|".join(s.id for s in order).encode()).digest()
            random.Random(seed).shuffle(order)
            out += [Trial(s, r) for s in order]
        return tuple(out)

    def trials_by_strategy(self) -> tuple[Trial, ...]:
        """The same trials strategy-major (a strategy's repeats side by side): the order reports list them in."""
        return tuple(Trial(s, r) for s in self.strategies for r in range(self.repeat))


# One matrix dimension: its canonical path and its choices, each (normalized value, origins).
_Dim = tuple[str, tuple[tuple[Any, dict[str, str]], ...]]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown_key(key: Any, valid: tuple[str, ...], path: str, top: bool = False) -> SpecError:
    """Did-you-mean via difflib; ties are all named (e.g. 'eiclude' is as close to include as to exclude)."""
    word = str(key)
    if top and word in STRATEGY_KEYS:
        return SpecError(f"unknown key {word!r} at the top level; strategy fields go under base:, matrix: "
                         "or include:", path=path, hint=f"valid keys: {', '.join(valid)}")
    close = difflib.get_close_matches(word, valid, n=3, cutoff=0.6)
    if not close:
        return SpecError(f"unknown key {word!r}; valid keys: {', '.join(valid)}", path=path)
    best = difflib.SequenceMatcher(None, close[0], word).ratio()
    close = [c for c in close if difflib.SequenceMatcher(None, c, word).ratio() >= best - 1e-9]
    return SpecError(f"unknown key {word!r}; did you mean {' or '.join(map(repr, close))}?", path=path,
                     hint=f"valid keys: {', '.join(valid)}")


def _check_keys(node: Mapping, valid: tuple[str, ...], path: str, top: bool = False) -> None:
    for k in node:
        if k not in valid:
            raise _unknown_key(k, valid, _join(path, k), top)


def _check_type(value: Any, canon: str, ypath: str) -> Any:
    """Type-check a leaf against its dataclass annotation (the dataclasses check domains, not types)."""
    parts = [p.strip() for p in _LEAVES[canon].split("|")]
    if not all(p in _KINDS for p in parts) or any(_KINDS[p][1](value) for p in parts):
        if "float" in parts and isinstance(value, int) and not isinstance(value, bool):
            try:  # 60 and 60.0 must give the same Strategy.id
                return float(value)
            except OverflowError:
                raise SpecError(f"number too large: {_short(value)}", path=ypath) from None
        return value
    raise SpecError(f"expected {' or '.join(_KINDS[p][0] for p in parts)}, got {_short(value)}", path=ypath)


def _model_shorthand(text: str, base_dir: Path) -> dict[str, str]:
    """``model: ./ckpt`` (a path: starts with ., / or ~, or names a folder beside the YAML) or
    ``model: org/name`` (a hub id, which must be in the local cache)."""
    t = text.strip()
    if t.startswith((".", "/", "~")) or (t and (base_dir / t).is_dir()):
        return {"path": t}
    return {"hub_id": t}


def _resolve(value: Any, base_dir: Path) -> Any:
    if isinstance(value, (list, tuple)):
        return [_resolve(v, base_dir) for v in value]
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


def _norm(value: Any, canon: str, ypath: str, origins: dict[str, str], base_dir: Path) -> Any:
    """Check one written value against the schema at ``canon``; record where each field came from."""
    if canon in ("generate", "load.loader") and (value is None or value is False):
        origins[canon] = ypath
        return None
    if canon in ("load", "model.synthetic") and value is None:
        value = {}
    if canon == "model" and isinstance(value, str):
        value = _model_shorthand(value, base_dir)
    if canon == "generate" and value is True:
        value = {}
    if canon == "load.loader" and isinstance(value, str):
        origins[canon] = origins[canon + ".target"] = ypath
        return {"target": value}
    if canon in _SECTIONS:
        if not isinstance(value, Mapping):
            raise SpecError(f"expected a mapping, got {_short(value)}", path=ypath or None)
        _check_keys(value, _SECTIONS[canon][1], ypath)
        origins[canon] = ypath
        return {k: _norm(v, _join(canon, k), _join(ypath, k), origins, base_dir) for k, v in value.items()}
    value = _check_type(value, canon, ypath)
    if canon in ALIASES and isinstance(value, str):
        value = ALIASES[canon].get(value.strip().lower(), value)
    if canon in _PATH_FIELDS and value is not None:
        value = _resolve(value, base_dir)
    origins[canon] = ypath
    return value


def parse_range(text: Any, *, path: str | None = None) -> tuple[int, ...]:
    """'32..4096*2' -> 32, 64, ..., 4096; '1..8+2' -> 1, 3, 5, 7; '1..8' -> 1..8. Endpoints inclusive."""
    hint = "write START..END, START..END+STEP or START..END*FACTOR, e.g. 32..4096*2"
    m = re.match(r"^\s*([0-9]{1,15})\s*\.\.\s*([0-9]{1,15})\s*(?:([*+])\s*([0-9]{1,15}))?\s*$", text) \
        if isinstance(text, str) else None
    if not m:
        raise SpecError(f"invalid range {_short(text)}", path=path, hint=hint)
    start, end, op, step = int(m[1]), int(m[2]), m[3] or "+", int(m[4] or 1)
    problem = (f"start {start} > end {end}" if start > end
               else "step must be >= 1" if op == "+" and step < 1
               else "factor must be >= 2" if op == "*" and step < 2
               else "a geometric range must start at >= 1" if op == "*" and start < 1
               else f"more than {MAX_RANGE} values" if op == "+" and (end - start) // step >= MAX_RANGE else "")
    if problem:
        raise SpecError(f"invalid range {text!r}: {problem}", path=path, hint=hint)
    if op == "+":
        return tuple(range(start, end + 1, step))
    out = [start]
    while out[-1] * step <= end:
        out.append(out[-1] * step)
    return tuple(out)


def _undot(node: Mapping[str, Any], canon: str, ypath: str) -> dict[str, Any]:
    """``{"program.env.OMP_NUM_THREADS": [...]}`` -> ``{"program": {"env": {"OMP_NUM_THREADS": [...]}}}``: a
    matrix may name a nested knob by its dotted path (split only where the prefix is a section, or
    ``program.env``); the same knob written twice, dotted and nested, is an error."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        head, _, rest = str(k).partition(".")
        c = _join(canon, head)
        if rest and (c in _SECTIONS or c == _ENV):
            _put(out, head, _undot({rest: v}, c, _join(ypath, head)) if c != _ENV else {rest: v}, ypath)
        else:
            _put(out, k, v, ypath)
    return out


def _put(out: dict[str, Any], key: str, value: Any, ypath: str) -> None:
    if key not in out:
        out[key] = value
    elif isinstance(out[key], Mapping) and isinstance(value, Mapping):
        merged = dict(out[key])
        for k, v in value.items():
            _put(merged, k, v, _join(ypath, key))
        out[key] = merged
    else:
        raise SpecError("given twice (dotted and nested)", path=_join(ypath, key))


def _env_dims(node: Any, ypath: str, out: list[_Dim]) -> None:
    """``program.env: {NAME: [values]}``: one dimension per variable, each value a one-variable env that the
    merge adds to the base's (values are strings in the environment: 1 and "1" are the same)."""
    for name, values in node.items():
        y = _join(ypath, name)
        if not isinstance(values, list) or not values:
            raise SpecError(f"matrix values must be a non-empty list, got {_short(values)}", path=y,
                            hint=f"write {name}: [{values}]")
        bad = [x for x in values if isinstance(x, (list, dict)) or x is None]
        if bad:
            raise SpecError(f"an environment value must be a string or a number, got {_short(bad[0])}", path=y)
        out.append((_ENV, tuple(({str(name): str(x)}, {_ENV: f"{y}[{i}]"}) for i, x in enumerate(values))))


_ENV = "program.env"


def _dims(node: Any, canon: str, ypath: str, base_dir: Path, out: list[_Dim]) -> None:
    """Collect matrix dimensions; nested sections recurse (a dotted key names a nested knob), every other leaf
    must be a list; ``program.env`` may also be a mapping of variable -> values."""
    if not isinstance(node, Mapping):
        raise SpecError(f"expected a mapping, got {_short(node)}", path=ypath)
    node = _undot(node, canon, ypath)
    _check_keys(node, MATRIX_KEYS if canon == "" else _SECTIONS[canon][1], ypath)
    for k, v in node.items():
        c, y = _join(canon, k), _join(ypath, k)
        if c in _SECTIONS and isinstance(v, Mapping):
            _dims(v, c, y, base_dir, out)
            continue
        if c == _ENV and isinstance(v, Mapping):
            _env_dims(v, y, out)
            continue
        is_int = c in _LEAVES and "int" in _LEAVES[c].split(" | ") and c not in _SIZE_FIELDS
        if is_int and isinstance(v, str) and ".." in v:
            out.append((c, tuple((x, {c: y}) for x in parse_range(v, path=y))))
            continue
        if not isinstance(v, list):
            more = " or a range like 32..4096*2" if is_int else "; ranges work only for integer knobs" \
                if isinstance(v, str) and ".." in v else ""
            written = v if isinstance(v, str) else _short(v)  # a Python repr of a scalar/dict is valid flow YAML
            raise SpecError(f"matrix values must be lists, got {_short(v)}", path=y, hint=f"write [{written}]{more}")
        if not v:
            raise SpecError("empty list: a matrix dimension needs at least one value", path=y,
                            hint="give values or remove the key")
        values = []
        for i, x in enumerate(v):
            origins: dict[str, str] = {}
            values.append((_norm(x, c, f"{y}[{i}]", origins, base_dir), origins))
        out.append((c, tuple(values)))


def _nest(canon: str, value: Any) -> dict[str, Any]:
    head, _, rest = canon.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _merge(dst: Mapping[str, Any] | None, src: Mapping[str, Any], canon: str = "") -> dict[str, Any]:
    """Deep-merge normalized partials: sections merge, values replace. A model source replaces the other
    sources and a loader target the whole loader: a different checkpoint/loader shares nothing with the base's."""
    out = {} if canon == "load.loader" and "target" in src else dict(dst or {})
    if canon == "model" and any(s in src for s in _MODEL_SOURCES):
        for s in _MODEL_SOURCES:
            if s not in src:
                out.pop(s, None)
        if "revision" not in src:  # a revision belongs to the hub id it was given with
            out.pop("revision", None)
    for k, v in src.items():
        c = _join(canon, k)
        if c in _SECTIONS and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, c)
        elif c == _ENV and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}  # a matrix's variables join the base's environment
        else:
            out[k] = v
    return out


def _canon_value(v: Any) -> Any:
    if isinstance(v, Mapping):
        return tuple(sorted(((str(k), _canon_value(x)) for k, x in v.items()), key=lambda p: p[0]))
    if isinstance(v, (list, tuple)):
        return tuple(_canon_value(x) for x in v)
    return v


def _matches(point: Mapping[str, Any], entry: Mapping[str, Any], canon: str = "") -> bool:
    """Does a (normalized) exclude entry match a raw point? Unwritten fields compare as their defaults."""
    for k, want in entry.items():
        c = _join(canon, k)
        if c in _SECTIONS:
            have = point.get(k, {} if c in ("load", "generate") else None)
            if want is None or have is None:
                if (want is None) != (have is None):
                    return False
            elif not _matches(have, want, c):
                return False
        elif _canon_value(point.get(k, _DEFAULTS.get(c))) != _canon_value(want):
            return False
    return True


def _build(raw: Mapping[str, Any], origins: Mapping[str, str], label: str) -> Strategy:
    """Raw point -> Strategy; the dataclasses' SpecErrors come back with the YAML path of the field."""

    def where(canon: str) -> str:
        parts = canon.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in origins:
                return ".".join([origins[".".join(parts[:n])], *parts[n:]])
        return _join(origins.get("", ""), canon)

    try:
        program = ProgramSpec(**raw["program"]) if raw.get("program") else None
        if program is not None and not raw.get("model"):  # a program names itself where a model would
            raw = {**raw, "model": {"path": program_model(program).path}}
        if not raw.get("model"):
            raise SpecError("no model given", path="model",
                            hint="add model: {synthetic: {shape: tiny}} (or path:/hub_id:) at the top level")
        m = dict(raw["model"])
        syn = m.pop("synthetic", None)
        model = ModelSpec(synthetic=None if syn is None else SyntheticSpec(**syn), **m)
        ld = dict(raw.get("load") or {})
        loader = ld.pop("loader", None)
        if loader is not None and "target" not in loader:
            raise SpecError("a loader needs a target 'pkg.module:callable'", path="load.loader")
        load = LoadSpec(loader=None if loader is None else LoaderSpec(**loader), **ld)
        gen = raw.get("generate", {})
        rest = {k: v for k, v in raw.items() if k not in ("model", "load", "generate", "label", "program")}
        strategy = Strategy(model=model, load=load, generate=None if gen is None else GenerateSpec(**gen),
                            label=label, program=program, **rest)
        hash(strategy), strategy.id  # noqa: B018 - every strategy must be hashable and have an id
    except SpecError as e:
        msg = e.message[len(e.path) + 2:] if e.path and e.message.startswith(f"{e.path}: ") else e.message
        raise SpecError(msg, path=where(e.path) if e.path else None, hint=e.hint) from None
    except (TypeError, ValueError, OverflowError) as e:
        raise SpecError(f"invalid value: {e}", path=origins.get("") or None) from None
    return strategy


def _fmt(value: Any, canon: str) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, Mapping):
        return "custom" if canon.endswith("device_map") else ",".join(f"{k}:{_fmt(v, '')}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v, "") for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(node: Any, canon: str, s: Strategy, name: str | None = None) -> list[str]:
    """``key=value`` words for what a partial sets (model as its label, a loader as its target)."""
    if canon in ("model", "model.synthetic"):
        return [f"model={s.model.label}"]
    if canon == "load.loader":
        return [f"loader={s.load.loader.target if s.load.loader else 'builtin'}"]
    if canon == "generate" and node is None:
        return ["generate=off"]
    if canon == _ENV and isinstance(node, Mapping):
        return [f"{k}={_fmt(v, '')}" for k, v in node.items()]
    if canon in _SECTIONS:
        words = [w for k, v in node.items() if _join(canon, k) != "label" for w in _describe(v, _join(canon, k), s)]
        return words or (["generate=on"] if canon == "generate" else [])
    return [f"{name or canon.rsplit('.', 1)[-1]}={_fmt(node, canon)}"]


_Point = tuple[Strategy, str, bool]  # (strategy, where it came from, label given explicitly)
_Part = tuple[dict[str, Any], dict[str, str]]  # (normalised partial strategy, YAML origin of each value)


def expand(doc: Any, source: str = "<memory>", base_dir: Path | None = None) -> Sweep:
    """A parsed sweep document -> Sweep. Everything is checked before anything is built."""
    base_dir = Path(os.path.abspath(base_dir if base_dir is not None else os.getcwd()))
    name, description, repeat = _header(doc, source)
    base, base_origins = _base(doc, base_dir)
    dims: list[_Dim] = []
    if doc.get("matrix") is not None:
        _dims(doc["matrix"], "", "matrix", base_dir, dims)
    dims.sort(key=lambda d: _RANK.get(d[0].split(".")[0], 3))  # stable: written order within a rank
    includes = _partials(doc, "include", base_origins, base_dir)
    excludes = _partials(doc, "exclude", {}, base_dir)
    points: list[_Point] = []
    if doc.get("matrix") is not None or not includes:
        points += _matrix_points(base, base_origins, dims, excludes)
    points += _include_points(base, includes)
    kept, dropped = _dedupe(points, source)
    if len(kept) * repeat > MAX_TRIALS:
        raise SpecError(f"{len(kept)} strategies x repeat {repeat} = {len(kept) * repeat:,} trials; at most "
                        f"{MAX_TRIALS:,} per sweep", path="repeat", hint="split the sweep or lower repeat")
    return Sweep(name=name, source=source, description=description, repeat=repeat,
                 strategies=tuple(kept), dropped=tuple(dropped))


def _header(doc: Any, source: str) -> tuple[str, str, int]:
    """The document's shape and its name, description and repeat."""
    if doc is None:
        raise SpecError(f"{source} is empty; expected a mapping with at least a model",
                        hint="e.g. model: {synthetic: {shape: tiny}}")
    if not isinstance(doc, Mapping):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(doc).__name__}")
    _check_keys(doc, TOP_KEYS, "", top=True)
    name = doc.get("name", Path(source).stem if not source.startswith("<") else "sweep")
    description = "" if doc.get("description") is None else doc["description"]
    repeat = doc.get("repeat", 1)
    for key, ok, want in (("name", isinstance(name, str) and name, "a non-empty string"),
                          ("description", isinstance(description, str), "a string"),
                          ("repeat", isinstance(repeat, int) and not isinstance(repeat, bool)
                           and 1 <= repeat <= MAX_TRIALS, f"an integer in 1..{MAX_TRIALS}")):
        if not ok:
            raise SpecError(f"expected {want}, got {_short(doc.get(key))}", path=key)
    return name, description, repeat


def _base(doc: Mapping[str, Any], base_dir: Path) -> _Part:
    """``base`` with the top-level ``model`` and ``program`` shorthands folded in."""
    base_origins: dict[str, str] = {}
    base = _norm({} if doc.get("base") is None else doc["base"], "", "base", base_origins, base_dir)
    if "base" not in doc:
        base_origins.pop("")
    for key in ("model", "program"):  # shorthands for base.model / base.program
        if key in doc:
            if key in base:
                raise SpecError(f"{key} given both at the top level and under base", path=key,
                                hint="keep one of them")
            base[key] = _norm(doc[key], key, key, base_origins, base_dir)
    return base, base_origins


def _partials(doc: Mapping[str, Any], key: str, base_origins: dict[str, str], base_dir: Path) -> list[_Part]:
    """The ``include`` or ``exclude`` entries, normalised (an include starts from the base's origins)."""
    entries = [] if doc.get(key) is None else doc[key]
    if not isinstance(entries, list):
        raise SpecError(f"expected a list of partial strategies, got {_short(entries)}", path=key)
    out = []
    for i, entry in enumerate(entries):
        origins = dict(base_origins)
        part = _norm(entry, "", f"{key}[{i}]", origins, base_dir)
        if key == "exclude" and not part:
            raise SpecError("empty exclude entry would drop every point", path=f"{key}[{i}]")
        out.append((part, origins))
    return out


def _matrix_points(base: dict[str, Any], base_origins: dict[str, str], dims: list[_Dim],
                   excludes: list[_Part]) -> list[_Point]:
    """The cartesian product over ``base``, less the excluded points, each labelled by what varies."""
    if math.prod(len(d[1]) for d in dims) > MAX_POINTS:
        raise SpecError(f"the matrix has more than {MAX_POINTS:,} points", path="matrix")
    varying = [d for d in dims if len(d[1]) > 1]
    leaf_names = [d[0].rsplit(".", 1)[-1] for d in varying]
    names = {d[0]: (leaf if leaf_names.count(leaf) == 1 else ".".join(d[0].split(".")[-2:]))
             for d, leaf in zip(varying, leaf_names)}
    used = [False] * len(excludes)
    points: list[_Point] = []
    for n, combo in enumerate(itertools.product(*(d[1] for d in dims))):
        raw, origins = base, dict(base_origins)
        for d, (value, value_origins) in zip(dims, combo):
            raw = _merge(raw, _nest(d[0], value))
            origins.update(value_origins)
        hits = [i for i, (entry, _) in enumerate(excludes) if _matches(raw, entry)]
        for i in hits:
            used[i] = True
        if hits:
            continue
        s = _build(raw, origins, "")
        words = [w for d, (value, _) in zip(dims, combo) if len(d[1]) > 1
                 for w in _describe(value, d[0], s, names.get(d[0]))]
        label = " ".join([base["label"], *words] if base.get("label") else words)
        points.append((s.relabel(label or s.model.label), f"matrix point {n}",
                       bool(base.get("label"))))
    for i, hit in enumerate(used):
        if not hit:
            raise SpecError("matches no matrix point (a typo?)", path=f"exclude[{i}]",
                            hint="exclude values must equal the matrix values exactly")
    return points


def _include_points(base: dict[str, Any], includes: list[_Part]) -> list[_Point]:
    points: list[_Point] = []
    for i, (part, origins) in enumerate(includes):
        s = _build(_merge(base, part), origins, "")
        explicit = part.get("label") or ""
        words = _describe(part, "", s)
        label = explicit or " ".join([base["label"], *words] if base.get("label") else words) or s.model.label
        points.append((s.relabel(label), f"include[{i}]", bool(explicit or base.get("label"))))
    return points


def _dedupe(points: list[_Point], source: str) -> tuple[list[Strategy], list[str]]:
    """First of each ``Strategy.id`` kept, the others named in ``dropped``; a lone unlabelled point gets the
    model's label."""
    seen: dict[str, tuple[str, str]] = {}
    kept: list[tuple[Strategy, bool]] = []
    dropped: list[str] = []
    for s, origin, explicit in points:
        if s.id in seen:
            first_label, first_origin = seen[s.id]
            dropped.append(f"{origin} {s.label!r} is the same strategy as {first_origin} {first_label!r}; "
                           "kept the first")
            continue
        seen[s.id] = (s.label, origin)
        kept.append((s, explicit))
    if not kept:
        raise SpecError(f"{source}: the sweep has no strategies left", hint="check matrix and exclude")
    if len(kept) == 1 and not kept[0][1]:
        kept[0] = (kept[0][0].relabel(kept[0][0].model.label), False)
    return [s for s, _ in kept], dropped


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep YAML (safe_load types only, so a sweep file can never run code; bounded: yamlload) and
    expand it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"no such sweep file: {p}", hint="check the path (see strategies/examples/)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read sweep file {p}: {e}") from None
    doc = load_yaml(text, str(p))
    return expand(doc, source=str(p), base_dir=p.resolve().parent)
