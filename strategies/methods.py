"""Loading methods (``load.method``): what each needs, which knobs it takes, and why a trial of it cannot run here.

Torch-free: the parent checks a sweep against this table before anything runs (``check_method``, called by
preflight), and the worker asks ``skip_reason`` before loading. The loading itself is in
loadprof.strategies.method_loaders (worker side).

Every method but ``from_pretrained`` and ``parallel`` ends in the same place: the model built on the meta device
from its config, then the checkpoint's state dict assigned into it (``load_state_dict(assign=True)``), tied weights
tied. They differ in how the state dict is read, which is what the child phases of ``load`` time apart:
``read`` (files -> tensors), ``convert`` (dtype cast), ``place`` (to the target device), ``assign``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from loadprof.core.errors import SpecError
from loadprof.strategies.model import LoadSpec, thaw


@dataclass(frozen=True)
class Method:
    """One loading method: ``package`` it imports (None: loadprof's own dependencies), ``extra`` to install it
    with, whether it reads only onto a CUDA device, and whether it takes ``load.workers``."""

    name: str
    package: str | None
    summary: str
    cuda_only: bool = False
    takes_workers: bool = True
    state_dict: bool = True  # a state dict into a meta-built model (False: transformers' own from_pretrained)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("from_pretrained", None, "transformers' AutoModelForCausalLM.from_pretrained, as the load knobs ask",
           takes_workers=False, state_dict=False),
    Method("parallel", None, "from_pretrained with transformers' parallel loading: HF_ENABLE_PARALLEL_LOADING=true, "
           "HF_PARALLEL_LOADING_WORKERS=workers (transformers 4.x); on transformers 5, whose loader always reads "
           "with a thread pool, its pool size (core_model_loading.GLOBAL_WORKERS)", state_dict=False),
    Method("safetensors", "safetensors", "safetensors.safe_open per shard, straight onto the target device "
           "(shards read by `workers` threads)"),
    Method("fastsafetensors", "fastsafetensors", "fastsafetensors' SafeTensorsFileLoader (batched reads into one "
           "buffer, no mmap; GPU Direct Storage off: nogds), `workers` copy threads"),
    Method("runai", "runai_model_streamer", "Run:ai model streamer's SafetensorsStreamer (concurrent reads into "
           "CPU memory; RUNAI_STREAMER_CONCURRENCY=workers)"),
    Method("instanttensor", "instanttensor", "InstantTensor's safe_open (direct I/O, pipelined into a GPU buffer; "
           "CUDA devices only; concurrency=workers)", cuda_only=True),
)}
#: the pip extra that installs the third-party methods
EXTRA = "methods"
#: device maps a state-dict method places onto (one device, no dispatch)
STATE_DICT_DEVICE_MAPS = ("cpu", "cuda")


def unsupported(load: LoadSpec) -> tuple[str, str] | None:
    """(knob path, why) for the first knob ``load.method`` cannot honour; None when it takes them all."""
    method = METHODS[load.method]
    if load.loader is not None and load.method != "from_pretrained":
        return "load.loader", "a custom loader is its own method: give load.loader or load.method, not both"
    if load.workers is not None and not method.takes_workers:
        return "load.workers", "from_pretrained takes no workers (method: parallel sets transformers' reader threads)"
    if not method.state_dict:
        return None
    dm = load.device_map
    if not isinstance(dm, str) or dm not in STATE_DICT_DEVICE_MAPS:
        return "load.device_map", (f"{thaw(dm)!r}: a state-dict method places every tensor on one device "
                                   f"({' or '.join(STATE_DICT_DEVICE_MAPS)}); dispatch is from_pretrained's")
    if method.cuda_only and dm != "cuda":
        return "load.device_map", f"{load.method} reads only onto a CUDA device: device_map: cuda"
    for key, value, default in (("quantization", load.quantization, "none"), ("offload", load.offload, "none"),
                                ("max_memory", load.max_memory, None), ("offload_folder", load.offload_folder, None),
                                ("low_cpu_mem_usage", load.low_cpu_mem_usage, None)):
        if value != default:
            return f"load.{key}", f"{thaw(value)!r} is a from_pretrained setting; {load.method} loads a plain state dict"
    if load.extra_kwargs:
        return "load.extra_kwargs", f"from_pretrained kwargs; {load.method} does not call from_pretrained"
    return None


def check_method(load: LoadSpec) -> None:
    """SpecError naming the knob the method cannot honour (preflight adds the strategy's name)."""
    bad = unsupported(load)
    if bad is not None:
        raise SpecError(f"load.method {load.method} does not support {bad[0]}: {bad[1]}")


def skip_reason(load: LoadSpec) -> str | None:
    """Why this machine cannot run the method (its package is not installed); None when it can. A CUDA-only
    method on a machine without CUDA is skipped by the device check (its device_map is cuda)."""
    method = METHODS[load.method]
    if method.package is not None and importlib.util.find_spec(method.package) is None:
        return (f"load.method {method.name} needs the {method.package} package, not installed here "
                f"(pip install 'loadprof[{EXTRA}]')")
    return None
