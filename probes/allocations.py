"""Which allocations a generate() call makes before its first token, and where in the code.

The user's notes: with max_new_tokens 128 instead of 32 a model got 29x slower although
every answer stopped after 9 tokens, because the mask, an (L + max_new_tokens)^2 bias and
the KV cache were sized by the cap before the first token. This probe runs one extra,
traced generate() call after the measured ones (so their timings are untouched), stopped at
its first token, under a TorchDispatchMode that sees every aten op: each output that starts
a new storage of at least ``min_bytes`` is recorded (views and in-place results are not new storages) with its op, shape, dtype and the
innermost call site outside torch (a static-cache layer, a mask, a model's own bias buffer).
At the first token the probe checks which of them are still alive: those bytes are the
pre-allocation (``generate_start_alloc_bytes``); freed ones were prefill activations.
Works on CPU and CUDA alike. Costs one traced prefill, in its own phase ``trace``: ``AllocationsProbe``'s
after-workload step, run by the worker when ``allocations`` is selected and the strategy generates, once per
configuration: the bytes are the same on every repeat, so a strategy's later repeats skip it once one traced
(``ProbeContext.constants["traced"]``, kept by loadprof.run.constants).
"""

from __future__ import annotations

import contextlib
import functools
import os
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

from loadprof.core.payloads import AllocationSite, AllocationsPayload
from loadprof.probes.base import Probe, ProbeContext

MIN_BYTES = 4096  # small enough for a tiny model's cache layers; only one traced prefill pays for it
#: frames that never name an allocation: this tracer and the generate driver, and stdlib wrappers
_SKIP_FILES = (os.path.join("probes", "allocations.py"), os.path.join("probes", "generation.py"),
               contextlib.__file__, functools.__file__)


@functools.lru_cache(maxsize=1)
def torch_dir() -> str:
    """torch's own package folder. Matched as a prefix, never as a '/torch/' substring: a virtualenv can live
    under a folder named torch (/opt/torch/.venv on the lent GPU machines), which would hide every frame."""
    import torch

    return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def call_site(limit: int = 40, frames: list[traceback.FrameSummary] | None = None,
              skip_dir: str | None = None) -> tuple[str, list[str]]:
    """Innermost frame outside torch and this tracer ('file:line function'), plus a short stack for the report."""
    frames = traceback.extract_stack(limit=limit)[:-2] if frames is None else frames
    skip_dir = torch_dir() if skip_dir is None else skip_dir
    kept = [f for f in frames if not f.filename.startswith(skip_dir) and not f.filename.endswith(_SKIP_FILES)]
    short = [f"{_rel(f.filename)}:{f.lineno} {f.name}" for f in kept[-6:]]
    return (short[-1] if short else "?"), short


def _rel(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


@dataclass
class Allocation:
    op: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    site: str
    stack: list[str]
    ref: Any = field(repr=False, default=None)
    alive: bool | None = None


def make_tracer(min_bytes: int = MIN_BYTES) -> Any:
    """A TorchDispatchMode recording new large storages (built lazily: torch is imported only in the worker)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class AllocationTracer(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.allocations: list[Allocation] = []
            self._live: dict[tuple[str, int], Any] = {}  # storage address -> weakref to the storage object

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                    continue
                storage = t.untyped_storage()  # torch keeps one Python object per storage: weakref-able
                nbytes = storage.nbytes()
                if nbytes < min_bytes:
                    continue
                key = (str(t.device), storage.data_ptr())
                known = self._live.get(key)
                if known is not None and known() is storage:
                    continue  # a view or in-place result of a storage already recorded
                ref = weakref.ref(storage)  # a freed address reused by the allocator is a new allocation
                self._live[key] = ref
                site, stack = call_site()
                self.allocations.append(Allocation(str(func.overloadpacket.__name__), tuple(t.shape),
                                                   str(t.dtype).removeprefix("torch."), nbytes, site, stack, ref))
            return out

        def mark_alive(self) -> None:
            for a in self.allocations:
                a.alive = a.ref is not None and a.ref() is not None

    return AllocationTracer()


def summarize(allocs: list[Allocation], top: int = 12) -> AllocationsPayload:
    """Sites aggregated by call site and op, largest alive bytes first."""
    sites: dict[tuple[str, str], dict[str, Any]] = {}
    for a in allocs:
        s = sites.setdefault((a.site, a.op), {"site": a.site, "op": a.op, "bytes": 0, "alive_bytes": 0, "count": 0,
                                              "shape": tuple(a.shape), "dtype": a.dtype, "stack": tuple(a.stack)})
        s["bytes"] += a.nbytes
        s["count"] += 1
        s["alive_bytes"] += a.nbytes if a.alive else 0
    ranked = sorted(sites.values(), key=lambda s: (-s["alive_bytes"], -s["bytes"]))
    return AllocationsPayload(generate_start_alloc_bytes=sum(a.nbytes for a in allocs if a.alive),
                              generate_start_alloc_total_bytes=sum(a.nbytes for a in allocs),
                              generate_start_alloc_count=len(allocs), generate_start_alloc_min_bytes=MIN_BYTES,
                              generate_start_alloc_sites=tuple(AllocationSite(**s) for s in ranked[:top]))


def trace_generate_start(model: Any, spec: Any, seed: int = 0) -> AllocationsPayload:
    """One generate() call with the strategy's settings, traced and stopped at its first token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from loadprof.probes.generation import generate_kwargs, make_inputs

    tracer = make_tracer()
    inputs = make_inputs(model, spec, seed)

    class _FirstToken(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            tracer.mark_alive()
            return torch.ones((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)

    kwargs = generate_kwargs(model, spec, StoppingCriteriaList([_FirstToken()]))
    with torch.inference_mode(), tracer:
        model.generate(**inputs, **kwargs)
    if any(a.alive is None for a in tracer.allocations):
        tracer.mark_alive()  # generate ended without a token (should not happen): report what is alive now
    return summarize(tracer.allocations)


class AllocationsProbe(Probe):
    """The traced first-token call as a probe: its figures are trial metrics (``generate_start_alloc_*``)."""

    NAME = "allocations"
    PAYLOAD = AllocationsPayload  # filed as trial metrics by the worker after the trace
    AFTER_WORKLOAD_PHASE = "trace"

    def unavailable(self, ctx: ProbeContext) -> str | None:
        """Traced once per configuration: a repeat of a strategy another trial traced skips the phase."""
        by = (ctx.constants.get("traced") or {}).get(ctx.strategy.id) if ctx.strategy is not None else None
        return f"traced once per configuration, by trial {by}" if by else None

    def after_workload(self, model: Any, ctx: ProbeContext) -> AllocationsPayload:
        return trace_generate_start(model, ctx.strategy.generate)
