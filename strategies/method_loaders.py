"""Worker side of the state-dict loading methods (loadprof.strategies.methods has the table and the checks).

Each method reads the checkpoint's safetensors into a state dict its own way; everything after is shared, so every
method ends in the same model object: built on the meta device from its config (accelerate's
``init_empty_weights``: parameters on meta, buffers such as rotary frequencies computed for real), the state dict
assigned into it (``load_state_dict(assign=True)``), tied weights tied, ``eval()``. The steps are child phases of
``load`` on the trial's clock: ``config``, ``instantiate``, ``read`` (files -> tensors), ``place`` (to the target
device, when the reader left them elsewhere), ``convert`` (dtype cast on the target device, when the checkpoint's
dtype is not the one asked), ``assign``. Bytes per step are filed as ``load_bytes_by_step`` (analysis.derive turns
them into GB/s against the machine's bounds).

``safe_open`` on the CPU only maps a file: its read step then touches one byte per page so the bytes are read
where the step says (unmapped, they would be read by page faults at the first forward, as from_pretrained's are).
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ContextManager

from loadprof.strategies.model import Strategy

OpenPhase = Callable[[str], ContextManager[Any]]
INDEX = "model.safetensors.index.json"
PAGE = 4096


def shard_files(model_path: str) -> list[str]:
    """The checkpoint's safetensors files, in shard order (the index's, else the one ``model.safetensors``)."""
    root = Path(model_path)
    if (root / INDEX).is_file():
        names = sorted(set(json.loads((root / INDEX).read_text())["weight_map"].values()))
        return [str(root / n) for n in names]
    if (root / "model.safetensors").is_file():
        return [str(root / "model.safetensors")]
    raise FileNotFoundError(f"{model_path} has no model.safetensors or {INDEX}: the state-dict methods read "
                            "safetensors checkpoints only")


def _page_in(t: Any) -> None:
    """Touch one byte per page of a CPU tensor (a mapped file's pages are read now, not at first use)."""
    if t.device.type == "cpu" and t.numel():
        flat = t.detach().reshape(-1)
        step = max(1, PAGE // t.element_size())
        flat[::step].sum()


def read_safetensors(files: list[str], device: str, workers: int | None) -> dict[str, Any]:
    from safetensors import safe_open

    def one(path: str) -> dict[str, Any]:
        out = {}
        with safe_open(path, framework="pt", device=device) as f:
            for key in f.keys():
                out[key] = f.get_tensor(key)
                _page_in(out[key])
        return out

    with ThreadPoolExecutor(max_workers=workers or 1) as pool:
        parts = list(pool.map(one, files))
    return {k: v for part in parts for k, v in part.items()}


def read_fastsafetensors(files: list[str], device: str, workers: int | None) -> dict[str, Any]:
    import fastsafetensors as fst

    kw = {"max_threads": workers} if workers else {}
    loader = fst.SafeTensorsFileLoader(fst.SingleGroup(), device, nogds=True, **kw)
    try:
        loader.add_filenames({0: files})
        keys = list(loader.get_keys())
        buf = loader.copy_files_to_device()
        try:  # its tensors share ownership of the buffer: they stay valid after close (fastsafetensors >= 0.5)
            return {key: buf.get_tensor(key) for key in keys}
        finally:
            buf.close()
    finally:
        loader.close()


def read_runai(files: list[str], device: str, workers: int | None) -> dict[str, Any]:
    if workers:
        os.environ["RUNAI_STREAMER_CONCURRENCY"] = str(workers)
    from runai_model_streamer import SafetensorsStreamer

    with SafetensorsStreamer() as streamer:
        streamer.stream_files(files)
        return dict(streamer.get_tensors())


def read_instanttensor(files: list[str], device: str, workers: int | None) -> dict[str, Any]:
    from instanttensor import safe_open

    with safe_open(files, framework="pt", device=device, concurrency=workers) as f:
        return dict(f.tensors())


#: method -> (reader, whether it reads straight onto the target device)
READERS: dict[str, tuple[Callable[[list[str], str, int | None], dict[str, Any]], bool]] = {
    "safetensors": (read_safetensors, True), "fastsafetensors": (read_fastsafetensors, True),
    "runai": (read_runai, False), "instanttensor": (read_instanttensor, True),
}


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def build_empty(strategy: Strategy, model_path: str, phase: OpenPhase) -> tuple[Any, Any]:
    """(model with parameters on meta, torch dtype of the load) from the checkpoint's config."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    load = strategy.load
    with phase("config"):
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=strategy.model.trust_remote_code)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, load.dtype) if load.dtype != "auto" else (
        getattr(torch, stored) if isinstance(stored, str) else stored)
    kw: dict[str, Any] = {"dtype": dtype, "trust_remote_code": strategy.model.trust_remote_code}
    if load.attn_implementation is not None:
        kw["attn_implementation"] = load.attn_implementation
    with phase("instantiate"), init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, **kw)
    return model, dtype


def assign(model: Any, state: dict[str, Any], device: str, model_path: str) -> None:
    """The state dict into the meta-built model, tied weights tied; any parameter left on meta is an error."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.to(device)  # the buffers built for real on the CPU (the parameters are there already)
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if unexpected or meta:
        raise ValueError(f"the state dict does not fit the model built from {model_path}/config.json: "
                         f"{len(unexpected)} unexpected keys {sorted(unexpected)[:3]}, "
                         f"{len(meta)} parameters left on meta {meta[:3]} (missing: {sorted(missing)[:3]})")
    model.eval()
    gen = Path(model_path) / "generation_config.json"
    if gen.is_file() and getattr(model, "generation_config", None) is not None:
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(model_path)


def load_state_dict_method(strategy: Strategy, model_path: str, phase: OpenPhase) -> tuple[Any, dict[str, Any]]:
    """(model, metrics) by ``strategy.load.method``'s reader; metrics name the method and the bytes of each step."""
    import torch

    load = strategy.load
    device = "cuda" if load.device_map == "cuda" else "cpu"
    reader, direct = READERS[load.method]
    model, dtype = build_empty(strategy, model_path, phase)
    files = shard_files(model_path)
    with phase("read"):
        state = reader(files, device if direct else "cpu", load.workers)
    per = {"read": _nbytes(state.values())}
    away = [k for k, t in state.items() if t.device.type != torch.device(device).type]
    if away:
        with phase("place"):
            for k in away:
                state[k] = state[k].to(device)
        per["place"] = _nbytes(state[k] for k in away)
    cast = [k for k, t in state.items() if t.is_floating_point() and t.dtype != dtype]
    if cast:
        per["convert"] = _nbytes(state[k] for k in cast)  # bytes in (the checkpoint's dtype)
        with phase("convert"):
            for k in cast:
                state[k] = state[k].to(dtype)
    with phase("assign"):
        assign(model, state, device, model_path)
    per["assign"] = _nbytes(state.values())
    return model, {"load_method": load.method, "load_files": len(files), "load_tensors": len(state),
                   "load_workers": load.workers, "load_bytes_by_step": per}


def parallel_loading(workers: int | None) -> dict[str, Any]:
    """Turn on transformers' parallel loading for this process, as its documentation says (4.x reads the two
    variables at load time); transformers 5 has no such switch (its loader always uses a thread pool of
    ``GLOBAL_WORKERS``), so its pool is sized to ``workers`` as well. Returns what was set, as metrics."""
    os.environ["HF_ENABLE_PARALLEL_LOADING"] = "true"
    if workers:
        os.environ["HF_PARALLEL_LOADING_WORKERS"] = str(workers)
    out: dict[str, Any] = {"load_method": "parallel", "load_workers": workers}
    with contextlib.suppress(ImportError):
        from transformers import core_model_loading as cml

        if hasattr(cml, "GLOBAL_WORKERS"):
            if workers:
                cml.GLOBAL_WORKERS = workers
            out["load_workers"] = cml.GLOBAL_WORKERS
    return out
