"""Checks that need the file system but not the model: run before the output folder exists (exit 2, YAML path).

Spec validation (model.py, expand.py) catches what a value alone can tell. What only the disk can tell used to
surface inside a trial, after the folder was made: a model path that is not a checkpoint, a hub id that was
never downloaded, a loader module that does not exist or does not compile, a ``sys_path`` that is missing, and
token counts past a model's learned positions (rotary ones run past theirs: a note, not a refusal). Nothing here imports torch or transformers, reaches the network, or
executes the user's code: loader modules are located with the import system's finders and only compiled.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from loadprof.core.errors import LoadprofError, SpecError
from loadprof.strategies.config_bounds import check_config
from loadprof.strategies.methods import check_method
from loadprof.strategies.model import ModelSpec, Strategy

#: config keys that bound the sequence length, in the order transformers' configs name them
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def preflight(strategies: Iterable[Strategy]) -> list[str]:
    """Raise SpecError (exit 2) for the first problem found in any strategy; strategies sharing a model or a
    loader are checked once. Returns notes: what will run but deserves a word (a RoPE model asked past its
    trained positions)."""
    seen_models: dict[ModelSpec, Positions] = {}
    seen_loaders: set[tuple[str, tuple[str, ...]]] = set()
    past: dict[ModelSpec, list[int]] = {}  # computed positions asked past their trained length: one note a model
    strategies = list(strategies)
    for s in strategies:
        if s.program is not None:  # a whole program: its command stands in for the model (nothing to read)
            continue
        try:
            check_method(s.load)
            if s.model not in seen_models:
                seen_models[s.model] = _check_model(s.model)
            need = _check_tokens(s, seen_models[s.model])
            if need:
                past.setdefault(s.model, []).append(need)
            ld = s.load.loader
            if ld is not None and (ld.target, ld.sys_path) not in seen_loaders:
                seen_loaders.add((ld.target, ld.sys_path))
                _check_loader(ld.target, ld.sys_path)
        except SpecError as e:
            if len(strategies) > 1:  # say which strategy: the path alone may fit several
                raise SpecError(f"{e.message} (strategy {s.display()!r})", hint=e.hint) from None
            raise
    return [_past_note(m, seen_models[m], needs) for m, needs in past.items()]


def _past_note(model: ModelSpec, pos: Positions, needs: list[int]) -> str:
    """One note per model, however many strategies ask past its trained positions."""
    which = (f"prompt_tokens + max_new_tokens = {needs[0]:,} is" if len(needs) == 1 else
             f"{len(needs):,} strategies ask prompt_tokens + max_new_tokens up to {max(needs):,},")
    return (f"{model.label}: {which} past its {pos.limit:,} trained positions (config {pos.key}); its positions are "
            f"computed (rotary), so it runs, with transformers' warning, but text past the trained length may degrade")


# ---------------------------------------------------------------- the model

#: model types whose positions are rotary (or ALiBi) and so computed, not looked up: transformers runs them past
#: ``max_position_embeddings`` with a warning (quality past the trained length is the user's question, not a crash)
COMPUTED_POSITIONS = frozenset({
    "llama", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "mistral", "mixtral", "gemma", "gemma2", "gemma3_text",
    "phi", "phi3", "gpt_neox", "gptj", "falcon", "olmo", "olmo2", "starcoder2", "stablelm", "cohere", "granite",
    "deepseek_v2", "deepseek_v3", "internlm2", "bloom", "mpt"})
#: config keys that only a model with computed positions has
COMPUTED_KEYS = ("rope_theta", "rope_scaling", "rotary_dim", "rotary_pct", "rotary_emb_base", "alibi")


@dataclass(frozen=True)
class Positions:
    """A model's position limit (``limit`` None when its config does not say), the config key that states it,
    and whether positions are computed (rotary, ALiBi: runs past the limit) or a learned table (cannot)."""

    limit: int | None = None
    key: str = "max_position_embeddings"
    computed: bool = False


def _positions(config: Mapping[str, Any]) -> Positions:
    for c in (config, config.get("text_config") or {}):
        for k in POSITION_KEYS:
            if isinstance(c.get(k), int) and c[k] > 0:
                computed = (c.get("model_type") in COMPUTED_POSITIONS
                            or any(c.get(x) not in (None, False) for x in COMPUTED_KEYS)
                            or c.get("position_embedding_type") in ("rotary", "alibi"))
                return Positions(int(c[k]), k, computed)
    return Positions()


def _read_config(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SpecError(f"cannot read {path}: {str(e)[:200]}", path=where) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} is not a JSON object", path=where)
    check_config(data, str(path))
    return data


def _hub_config(hub_id: str, revision: str | None = None) -> Path:
    """The cached config.json of ``hub_id``, looked up offline; SpecError with the fetch command when absent."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return Path()
    _hub_cache_folder()
    try:
        found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except Exception as e:  # an id the hub library rejects (bad characters, too many slashes)
        raise SpecError(f"invalid hub id {hub_id!r}: {str(e).splitlines()[0][:160]}", path="model.hub_id") from None
    if not isinstance(found, str):
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        from loadprof.strategies.shapes import SHAPES

        synthetic = (f"; or measure loadprof's synthetic {hub_id} (same shapes, random weights): "
                     f"model: {{synthetic: {{shape: {hub_id}}}}}" if hub_id in SHAPES else "")
        at = f" at revision {revision!r}" if revision else ""
        fetch = f"hf download {hub_id}" + (f" --revision {revision}" if revision else "")
        raise SpecError(f"{hub_id!r}{at} is not in the local Hugging Face cache ({cache}); loadprof never downloads",
                        path="model.revision" if revision else "model.hub_id",
                        hint=f"fetch it first where there is a network: {fetch}{synthetic}")
    return Path(found)


def _hub_cache_folder() -> None:
    """HF_HUB_CACHE / HF_HOME, when set to something that exists, must be a folder: otherwise every hub id
    reads as "not downloaded", which sends the user to fetch what may well be there."""
    for var in ("HF_HUB_CACHE", "HF_HOME"):
        value = os.environ.get(var)
        if value and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
            raise SpecError(f"{var}={value} is a file, not a folder (the Hugging Face cache hub ids are read from)",
                            hint=f"point {var} at the cache folder, or unset it")


def _check_model(model: ModelSpec) -> Positions:
    """The model's positions (limit None when the config does not say), after checking that it is there."""
    if model.synthetic is not None:
        from loadprof.strategies.shapes import dims, resolve_arch, shape_of

        from loadprof.strategies.synthetic import config_dict

        learned = resolve_arch(model.synthetic) == "gpt2"  # the architecture built, whatever the shape's origin
        check_config(config_dict(model.synthetic), f"synthetic shape {model.synthetic.shape!r}")
        return Positions(dims(shape_of(model.synthetic)).get("positions"),
                         "n_positions" if learned else "max_position_embeddings", not learned)
    if model.path is not None:
        p = Path(model.path)
        if not p.exists():
            raise SpecError(f"{model.path!r} does not exist", path="model.path",
                            hint="a folder with config.json and the weights (relative paths start at the YAML)")
        if not p.is_dir():
            raise SpecError(f"{model.path!r} is a file; expected a checkpoint folder", path="model.path",
                            hint="point at the folder that holds config.json")
        if not (p / "config.json").is_file():
            raise SpecError(f"{model.path!r} has no config.json", path="model.path",
                            hint="point at the folder that holds config.json and the weights")
        return _positions(_read_config(p / "config.json", "model.path"))
    if model.hub_id is not None:
        cfg = _hub_config(model.hub_id, model.revision)
        return _positions(_read_config(cfg, "model.hub_id")) if cfg.name else Positions()
    return Positions()


def _check_tokens(s: Strategy, pos: Positions) -> int | None:
    """Refuse token counts past a learned position table (the lookup has no row for them: the trial would
    crash); past computed (rotary, ALiBi) positions, the tokens asked for (the note is said once per model)."""
    gen, positions = s.generate, pos.limit
    if gen is None or not positions:
        return None
    need = gen.prompt_tokens + gen.max_new_tokens
    if need <= positions:
        return None
    if pos.computed:
        return need
    if gen.prompt_tokens > positions:
        raise SpecError(f"{gen.prompt_tokens:,} prompt tokens exceed the model's {positions:,} positions",
                        path="generate.prompt_tokens", hint=f"at most {positions:,}, counting the new tokens too")
    raise SpecError(f"prompt_tokens + max_new_tokens = {need:,} exceeds the model's {positions:,} learned "
                    f"positions (config {pos.key})", path="generate.max_new_tokens",
                    hint=f"max_new_tokens <= {positions - gen.prompt_tokens:,} with this prompt")


# ---------------------------------------------------------------- the user's loader

def _find(module: str, search: list[str]) -> importlib.machinery.ModuleSpec | None:
    """Locate ``module`` without importing it or its parents (PathFinder per component, never ``__init__``)."""
    spec = None
    path: list[str] | None = search
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[:i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    return spec


def _top_level_names(tree: ast.Module) -> tuple[set[str], bool]:
    names: set[str] = set()
    star = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            star = star or any(a.name == "*" for a in node.names)
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            star = True  # names bound conditionally: do not guess
    return names, star


def _check_loader(target: str, sys_path: tuple[str, ...]) -> None:
    for folder in sys_path:
        if not Path(folder).is_dir():
            raise SpecError(f"{folder!r} is not a folder", path="load.loader.sys_path")
    module, _, attr = target.partition(":")
    spec = _find(module, [*sys_path, os.getcwd(), *sys.path])
    if spec is None:
        raise SpecError(f"cannot find module {module!r} (searched load.loader.sys_path, the current folder and "
                        "the environment)", path="load.loader.target",
                        hint="add its folder to load.loader.sys_path (relative to the YAML)")
    origin = spec.origin or ""
    if not origin.endswith(".py"):
        return  # an extension or namespace module: nothing to compile
    try:
        tree = ast.parse(Path(origin).read_bytes(), filename=origin)
        compile(tree, origin, "exec")
    except SyntaxError as e:
        raise SpecError(f"{origin} does not compile: {e.msg} at line {e.lineno}", path="load.loader.target") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read {origin}: {e}", path="load.loader.target") from None
    names, unsure = _top_level_names(tree)
    head = attr.split(".")[0]
    if not unsure and head not in names:
        raise SpecError(f"{module} ({origin}) defines no {head!r} at its top level", path="load.loader.target",
                        hint="the target is 'module:function' or 'module:Class.method'")


# ---------------------------------------------------------------- the environment

def load_checked(yaml_file: str | os.PathLike[str]) -> tuple[Any, list[str]]:
    """The sweep of ``yaml_file`` and preflight's notes, the current folder checked first (a relative path
    resolves against it); SpecError (exit 2) before anything runs or is made."""
    from loadprof.strategies.expand import load_sweep

    check_cwd()
    sweep = load_sweep(yaml_file)
    return sweep, preflight(sweep.strategies)


def check_cwd() -> Path:
    """The current folder, or SpecError when it no longer exists (``cd x && rmdir x && loadprof ...``):
    relative paths and the default output folder resolve against it, and os.getcwd() raises."""
    try:
        return Path(os.getcwd())
    except FileNotFoundError:
        where = os.environ.get("PWD") or "the folder loadprof was started in"
        raise SpecError(f"the current folder {where} no longer exists (removed after the shell entered it)",
                        hint="cd to an existing folder and run it again") from None
    except OSError as e:  # permission lost on the folder, an I/O error under it
        raise SpecError(f"cannot read the current folder: {e.strerror or e}", hint="cd to another folder") from None


def _writable_folder(folder: Path, what: str, fix: str) -> None:
    """SpecError (exit 2) unless ``folder`` can be made and written: its nearest existing ancestor must be a
    folder that takes new entries (os.access also says no on a read-only file system). An I/O error exits 74."""
    try:
        probe = folder
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise SpecError(f"{what} {folder}: {probe} is a file, not a folder", hint=fix)
        if not os.access(probe, os.W_OK | os.X_OK):
            raise SpecError(f"{what} {folder}: {probe} is not writable", hint=fix)
    except OSError as e:
        raise LoadprofError(f"{what} {folder}: {e.strerror or e}", hint=fix, exit_code=74) from None


def check_environment(strategies: Iterable[Strategy], out: Path) -> None:
    """What the machine must offer before anything runs: the output folder's place writable, the synthetic
    checkpoint cache writable when a model must be built there (the Hugging Face cache: ``_hub_cache_folder``,
    checked with the hub id). Each refusal is one line naming what and where (exit 2; 74 for an I/O error)."""
    _writable_folder(out, "cannot create the output folder",
                     f"choose a writable --out (it would be {out})")
    from loadprof.strategies.synthetic import cache_root, is_built

    strategies = list(strategies)
    unbuilt = [s.model.synthetic for s in strategies if s.model.synthetic is not None and s.program is None
               and not is_built(s.model.synthetic)]
    if unbuilt:
        root = cache_root()
        _writable_folder(root / "models", f"cannot build synthetic model {unbuilt[0].shape!r} in the cache",
                         f"set LOADPROF_CACHE to a writable folder (now {root})")
