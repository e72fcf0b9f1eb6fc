"""Loading a model for a trial: the built-in Hugging Face loader and the user's own.

Runs inside the worker (torch is imported lazily here, never in the parent).
The built-in loader turns a LoadSpec into exactly the ``from_pretrained``
kwargs a user would write, and returns them too, so the report can show what
was asked and findings can spot kwargs the installed transformers ignores.
A custom loader is the user's ModelManager: ``"pkg.module:callable"`` or
``"pkg.module:Class.method"`` (the class is instantiated with ``init_kwargs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

from loadprof.strategies import methods
from loadprof.strategies.method_loaders import OpenPhase, load_state_dict_method, parallel_loading
from loadprof.strategies.model import LoaderSpec, LoadSpec, Strategy, thaw

#: kwargs the loader passes through only when the user set them (None = not set)
_OPTIONAL_KWARGS = ("attn_implementation", "low_cpu_mem_usage")


@dataclass
class Loaded:
    """What a loader produced; ``kwargs`` are the from_pretrained kwargs (built-in loader only)."""

    model: Any
    tokenizer: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    loader: str = "transformers.AutoModelForCausalLM.from_pretrained"
    metrics: dict[str, Any] = field(default_factory=dict)  # the loading method's own (method, bytes per step)


class SkipTrial(Exception):
    """This machine cannot run the strategy (no CUDA, no bitsandbytes): the trial is skipped, not failed."""


def skip_reason(load: LoadSpec) -> str | None:
    """Why this machine cannot run ``load`` (None when it can). Checked before loading anything."""
    import torch

    reason = methods.skip_reason(load)
    if reason:
        return reason
    if load.needs_cuda and not torch.cuda.is_available():
        return f"device_map={thaw(load.device_map)!r} needs a CUDA device; torch.cuda.is_available() is False here"
    if load.quantization.startswith("bnb"):
        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install 'loadprof[quant]')"
        try:
            from transformers.integrations import validate_bnb_backend_availability

            if not validate_bnb_backend_availability(raise_exception=False):
                return "bitsandbytes has no usable backend on this machine"
        except ImportError:
            pass
    return None


def _device_key(k: str) -> Any:
    return int(k) if str(k).isdigit() else k


def from_pretrained_kwargs(load: LoadSpec, trial_dir: str, trust_remote_code: bool) -> dict[str, Any]:
    """LoadSpec -> from_pretrained kwargs (torch objects built here)."""
    import torch

    kw: dict[str, Any] = {}
    dm = load.device_map
    kw["device_map"] = dm if isinstance(dm, str) else {k: _device_key(v) if isinstance(v, str) else v for k, v in thaw(dm).items()}
    if load.dtype != "auto":
        kw["dtype"] = getattr(torch, load.dtype)
    else:
        kw["dtype"] = "auto"
    if load.quantization != "none":
        from transformers import BitsAndBytesConfig

        if load.quantization == "bnb-8bit":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            compute = getattr(torch, load.dtype) if load.dtype not in ("auto",) else torch.float16
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=load.quantization.rsplit("-", 1)[-1],
                bnb_4bit_compute_dtype=compute,
            )
    if load.max_memory is not None:
        kw["max_memory"] = {_device_key(k): v for k, v in thaw(load.max_memory).items()}
    if load.offload == "disk" or load.offload_folder:
        kw["offload_folder"] = load.offload_folder or f"{trial_dir}/offload"
    for name in _OPTIONAL_KWARGS:
        v = getattr(load, name)
        if v is not None:
            kw[name] = v
    if trust_remote_code:
        kw["trust_remote_code"] = True
    kw.update(thaw(load.extra_kwargs) or {})
    return kw


def load_builtin(strategy: Strategy, model_path: str, trial_dir: str) -> Loaded:
    from transformers import AutoModelForCausalLM

    kw = from_pretrained_kwargs(strategy.load, trial_dir, strategy.model.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kw)
    return Loaded(model=model, kwargs=kw)


def resolve_target(spec: LoaderSpec) -> Any:
    """Import ``pkg.module:attr.path``; a method named through its class gets a fresh instance."""
    for p in reversed(spec.sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    mod_name, _, attr_path = spec.target.partition(":")
    obj: Any = importlib.import_module(mod_name)
    parts = attr_path.split(".")
    for i, name in enumerate(parts):
        owner = obj
        obj = getattr(obj, name)
        is_last = i == len(parts) - 1
        if is_last and inspect.isclass(owner) and inspect.isfunction(inspect.getattr_static(owner, name)):
            obj = getattr(owner(**(thaw(spec.init_kwargs) or {})), name)
    return obj


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def load_custom(strategy: Strategy, model_path: str) -> Loaded:
    spec = strategy.load.loader
    assert spec is not None
    fn = resolve_target(spec)
    kwargs = dict(thaw(spec.kwargs) or {})
    if spec.model_arg and spec.model_arg not in kwargs and _accepts(fn, spec.model_arg):
        kwargs[spec.model_arg] = model_path
    out = fn(**kwargs)
    model, tok = _unpack(out)
    if model is None or not hasattr(model, "parameters"):
        raise TypeError(f"loader {spec.target} returned {type(out).__name__}, expected a model, (model, tokenizer) or {{'model': ...}}")
    return Loaded(model=model, tokenizer=tok, loader=spec.target)


def _unpack(out: Any) -> tuple[Any, Any]:
    if isinstance(out, dict):
        return out.get("model"), out.get("tokenizer")
    if isinstance(out, (tuple, list)):
        return (out[0] if out else None), (out[1] if len(out) > 1 else None)
    return out, None


def load(strategy: Strategy, model_path: str, trial_dir: str,
         phase: OpenPhase = lambda name: contextlib.nullcontext()) -> Loaded:
    """The model by the strategy's loader or ``load.method``; ``phase`` opens a child phase of ``load``."""
    if strategy.load.loader is not None:
        return load_custom(strategy, model_path)
    method = strategy.load.method
    if method in ("from_pretrained", "parallel"):
        extra = parallel_loading(strategy.load.workers) if method == "parallel" else {}
        return dataclasses.replace(load_builtin(strategy, model_path, trial_dir), metrics=extra)
    model, metrics = load_state_dict_method(strategy, model_path, phase)
    return Loaded(model=model, loader=f"loadprof.methods:{method}", metrics=metrics)


class LogitsMismatch(Exception):
    """A loading method's model answered differently from from_pretrained's on the same input."""


def check_logits(model: Any, strategy: Strategy, model_path: str, trial_dir: str) -> dict[str, Any]:
    """Load the checkpoint again with plain from_pretrained (same dtype and device) and compare both models'
    logits on a fixed 16-token input: equal to the bit, or LogitsMismatch (the trial fails). Runs after the
    workload, in its own phase, so it never colours a measured figure."""
    import torch

    ref_load = dataclasses.replace(strategy.load, method="from_pretrained", workers=None, check_logits=False)
    ref = load_builtin(dataclasses.replace(strategy, load=ref_load), model_path, trial_dir).model
    vocab = int(getattr(model.config, "vocab_size", 0) or 2)
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = model(input_ids=ids.to(model.device)).logits
        b = ref(input_ids=ids.to(ref.device)).logits
    diff = (a.float() - b.float().to(a.device)).abs().max().item()
    equal = a.shape == b.shape and torch.equal(a, b.to(a.device))
    del ref
    if not equal:
        raise LogitsMismatch(f"load.method {strategy.load.method}: logits differ from from_pretrained's on a fixed "
                             f"input (max |diff| {diff:.3g}, shapes {tuple(a.shape)} vs {tuple(b.shape)})")
    return {"logits_check": "equal to from_pretrained", "logits_max_abs_diff": diff}
