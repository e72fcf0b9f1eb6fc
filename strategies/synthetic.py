"""Real checkpoints with seeded random weights, so that loadprof runs offline on real loads.

A ``SyntheticSpec`` names a shape (copied from a public config.json, see ``loadprof.strategies.shapes``)
and an architecture (gpt2, llama, qwen2, mistral: the real transformers classes). ``make_model``
writes a checkpoint laid out like ``save_pretrained`` would (``model.safetensors``, or
``model-0000i-of-0000N.safetensors`` + ``model.safetensors.index.json`` when it needs more than one
shard, ``config.json``, ``generation_config.json``) and caches it under a content key.

Why one streaming writer for every size: the model is built on the meta device only (names,
shapes, tied keys, for free even at 7B), each tensor is generated in the target dtype and shards are
written one at a time, so memory stays at about one shard plus one tensor; a 7B never needs
its 15-30 GB in RAM, and small and large models get the same code path and the same layout.
Shards are planned exactly like ``huggingface_hub.split_torch_state_dict_into_shards`` (state-dict
order; a tensor bigger than the limit gets a shard of its own) and tied duplicates are dropped by
transformers' own ``remove_tied_weights_from_state_dict``, as ``save_pretrained`` does.

Each tensor's generator is seeded from ``(seed, tensor name)``: values do not depend on the shard
plan or on write order. Matrices/embeddings ~ N(0, initializer_range), norm weights 1, biases 0.

The build is atomic: everything goes into a temp dir beside the target, a completion marker is
written last and the dir is renamed into place, so a crash never leaves something ``is_built``.
Everything but ``make_model`` is torch-free (the parent process must stay torch-free).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from loadprof.core.errors import LoadprofError
from loadprof.strategies.model import DTYPES, SyntheticSpec, parse_size
from loadprof.strategies.shapes import ARCHS, SHAPES, Shape, dims, resolve_arch
from loadprof.strategies.shapes import shape_of as _shape

FORMAT_VERSION = 1  # bump when the bytes written for a given spec change: old caches then miss
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MARKER = ".loadprof-complete"
INDEX_NAME = "model.safetensors.index.json"


def _translate(d: dict[str, Any], arch: str) -> dict[str, Any]:
    """Neutral dims -> a config in ``arch``'s vocabulary (for a shape put on a foreign arch)."""
    if arch == "gpt2":
        return {"activation_function": "gelu_new", "n_embd": d["hidden"], "n_head": d["heads"],
                "n_layer": d["layers"], "n_inner": d["intermediate"], "n_positions": d["positions"],
                "n_ctx": d["positions"], "vocab_size": d["vocab"], "layer_norm_epsilon": d["eps"],
                "initializer_range": d["init"], "tie_word_embeddings": d["tie"],
                "bos_token_id": d["bos"], "eos_token_id": d["eos"]}
    cfg: dict[str, Any] = {
        "hidden_act": "silu", "hidden_size": d["hidden"], "intermediate_size": d["intermediate"],
        "num_hidden_layers": d["layers"], "num_attention_heads": d["heads"], "num_key_value_heads": d["kv_heads"],
        "vocab_size": d["vocab"], "max_position_embeddings": d["positions"], "rms_norm_eps": d["eps"],
        "rope_theta": d["rope_theta"], "initializer_range": d["init"], "tie_word_embeddings": d["tie"],
        "bos_token_id": d["bos"], "eos_token_id": d["eos"], "attention_dropout": 0.0, "use_cache": True}
    if d["rope_scaling"]:
        cfg["rope_scaling"] = copy.deepcopy(d["rope_scaling"])
    if arch == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=None, max_window_layers=d["layers"])
    else:
        cfg["head_dim"] = d["head_dim"]
    if arch == "llama":
        cfg.update(attention_bias=False, mlp_bias=False)
    if arch == "mistral":
        cfg["sliding_window"] = None
    return cfg


def config_dict(spec: SyntheticSpec) -> dict[str, Any]:
    """config.json content as the hub writes it (4.x keys: rope_theta, rope_scaling, torch_dtype).

    The file ``make_model`` writes is this dict as the installed transformers re-serializes it
    (5.x turns rope_theta/rope_scaling into rope_parameters and adds layer_types, for instance).
    """
    arch, shape = resolve_arch(spec), _shape(spec)
    cfg = copy.deepcopy(shape.config) if arch == shape.arch else _translate(dims(shape), arch)
    cfg.update(model_type=arch, architectures=[ARCHS[arch][1]], torch_dtype=spec.dtype, dtype=spec.dtype)
    return cfg


def param_count(spec: SyntheticSpec) -> int:
    """Exact parameter count from the config (tied embeddings counted once)."""
    arch, cfg = resolve_arch(spec), config_dict(spec)
    d = dims(Shape(arch, "", cfg))
    h, i, v, layers = d["hidden"], d["intermediate"], d["vocab"], d["layers"]
    q, kv = d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"]
    if arch == "gpt2":
        # ln_1 (w+b), c_attn (h x 3h + b), c_proj (h x h + b), ln_2 (w+b), c_fc (h x i + b), mlp.c_proj (i x h + b)
        layer = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h)
        total = v * h + d["positions"] * h + layers * layer + 2 * h  # wte, wpe, blocks, ln_f
    else:
        # q, k, v, o projections; qwen2 always has q/k/v biases, llama's attention_bias also biases o_proj
        attn = h * q + 2 * h * kv + q * h
        if arch == "qwen2":
            attn += q + 2 * kv
        elif cfg.get("attention_bias"):
            attn += q + 2 * kv + h
        mlp = 3 * h * i + ((2 * i + h) if cfg.get("mlp_bias") else 0)  # gate, up, down
        total = v * h + layers * (attn + mlp + 2 * h) + h  # embed, blocks (+2 RMSNorms), final norm
    return total + (0 if d["tie"] else v * h)  # lm_head


def checkpoint_bytes(spec: SyntheticSpec) -> int:
    """Bytes of tensor data in the checkpoint: params x dtype size (safetensors headers not counted)."""
    return param_count(spec) * DTYPE_BYTES[spec.dtype]


def content_key(spec: SyntheticSpec) -> str:
    """12 hex digits over everything that decides the bytes on disk."""
    arch = resolve_arch(spec)
    blob = json.dumps({"format": FORMAT_VERSION, "arch": arch, "shape": spec.shape,
                       "shape_config": _shape(spec).config, "dtype": spec.dtype, "seed": spec.seed,
                       "max_shard_size": parse_size(spec.max_shard_size, "model.synthetic.max_shard_size")},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """``$LOADPROF_CACHE``, else ``~/.cache/loadprof``."""
    return Path(os.environ.get("LOADPROF_CACHE") or "~/.cache/loadprof").expanduser()


def model_dir(spec: SyntheticSpec, root: str | os.PathLike[str] | None = None) -> Path:
    base = Path(root) if root is not None else cache_root()
    return base / "models" / f"{resolve_arch(spec)}-{spec.shape}-{spec.dtype}-s{spec.seed}-{content_key(spec)}"


def is_built(spec: SyntheticSpec, root: str | os.PathLike[str] | None = None) -> bool:
    """True only when the completion marker (written last) is there and names this content key."""
    try:
        marker = json.loads((model_dir(spec, root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("content_key") == content_key(spec)


def make_model(spec: SyntheticSpec, root: str | os.PathLike[str] | None = None, force: bool = False,
               *, progress: Callable[[str], None] | None = None) -> Path:
    """Build the checkpoint unless it is built (then return its path untouched); ``force`` rebuilds."""
    target = model_dir(spec, root)
    if is_built(spec, root) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_checkpoint(spec, tmp, progress or (lambda msg: None))
        if target.exists():  # forced rebuild, or leftovers without a marker: move aside, then swap in
            old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
            try:
                target.rename(old)
            except FileNotFoundError:
                old = None  # another process just removed it
            tmp.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except OSError:
        if is_built(spec, root) and not force:  # another process won the race with the same content
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remove_stale_temps(target: Path) -> None:
    """Temp dirs of this model left by processes that died mid-build (and old dirs a swap left behind)."""
    for p in target.parent.glob(f".old-{target.name}-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in target.parent.glob(f".tmp-{target.name}-*"):
        pid = p.name[len(f".tmp-{target.name}-"):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def meta_model(spec: SyntheticSpec) -> Any:
    """The transformers model on the meta device (no memory): names, shapes, tied keys, param count."""
    import torch
    import transformers

    config_cls, model_cls = (getattr(transformers, n) for n in ARCHS[resolve_arch(spec)])
    kwargs = config_dict(spec)
    kwargs.pop("model_type")
    config = config_cls(**kwargs)
    with torch.device("meta"):
        return model_cls(config)


def _tensors_to_save(model: Any) -> dict[str, Any]:
    """The state dict ``save_pretrained`` would write: tied duplicates and ignored keys dropped."""
    state = model.state_dict()
    try:
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError:  # older transformers: keep the first name of each shared parameter
        kept = {n for n, _ in model.named_parameters()}
        every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        state = {k: t for k, t in state.items() if k in kept or k not in every}
    else:
        state = remove_tied_weights_from_state_dict(state, model)
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(key, None)
    return state


def plan_shards(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Tensor names per shard, as huggingface_hub's split_torch_state_dict_into_shards groups them."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    for name, size in sizes.items():
        if size > limit:
            shards.append([name])
            continue
        if current and current_size + size > limit:
            shards.append(current)
            current, current_size = [], 0
        current.append(name)
        current_size += size
    if current:
        shards.append(current)
    return shards


def _tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def _write_checkpoint(spec: SyntheticSpec, out: Path, progress: Callable[[str], None]) -> None:
    import torch
    from safetensors.torch import save_file

    model = meta_model(spec)
    config = model.config
    dtype = getattr(torch, spec.dtype)
    metas = _tensors_to_save(model)
    sizes = {name: t.numel() * DTYPE_BYTES[spec.dtype] for name, t in metas.items()}
    shards = plan_shards(sizes, parse_size(spec.max_shard_size, "model.synthetic.max_shard_size"))
    weight_map: dict[str, str] = {}
    gen = torch.Generator()
    for i, names in enumerate(shards, 1):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        shard = {}
        for name in names:
            t = torch.empty(tuple(metas[name].shape), dtype=dtype)
            if name.endswith(".bias"):
                t.zero_()
            elif t.dim() == 1:  # RMSNorm / LayerNorm weight
                t.fill_(1.0)
            else:
                t.normal_(0.0, config.initializer_range, generator=gen.manual_seed(_tensor_seed(spec.seed, name)))
            shard[name] = t
            weight_map[name] = fname
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        del shard
        progress(f"wrote {fname} ({sum(sizes[n] for n in names) / 1e6:.1f} MB, shard {i}/{len(shards)})")
    total = sum(sizes.values())
    if len(shards) > 1:
        index = {"metadata": {"total_parameters": param_count(spec), "total_size": total},
                 "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    import transformers

    marker = {"content_key": content_key(spec), "format_version": FORMAT_VERSION, "spec": asdict(spec),
              "arch": resolve_arch(spec), "total_size": total, "params": param_count(spec),
              "files": sorted(set(weight_map.values())), "transformers": transformers.__version__}
    (out / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")  # last: the build is complete


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadprof.strategies.synthetic",
                                description="Build (or find cached) a synthetic checkpoint; prints one JSON line.")
    p.add_argument("--shape", required=True, help=f"one of: {', '.join(SHAPES)}")
    p.add_argument("--arch", default=None, help=f"one of: {', '.join(ARCHS)} (default: the shape's own)")
    p.add_argument("--dtype", default="bfloat16", help=f"one of: {', '.join(DTYPES[1:])}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shard-size", default="200MB")
    p.add_argument("--root", default=None, help="cache root (default: $LOADPROF_CACHE or ~/.cache/loadprof)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    a = p.parse_args(argv)
    try:
        spec = SyntheticSpec(arch=a.arch, shape=a.shape, dtype=a.dtype, seed=a.seed, max_shard_size=a.max_shard_size)
        was_built = is_built(spec, a.root)
        t0 = time.perf_counter()
        path = make_model(spec, a.root, force=a.force, progress=lambda m: print(m, file=sys.stderr, flush=True))
        seconds = time.perf_counter() - t0
    except LoadprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps({"path": str(path), "built": a.force or not was_built, "bytes": checkpoint_bytes(spec),
                      "params": param_count(spec), "seconds": round(seconds, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
