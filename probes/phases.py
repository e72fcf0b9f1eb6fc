"""Boundary timing of the loading pipeline with plain function wrappers.

Wrappers cost ~microseconds per call (sys.setprofile would add ~350 ms to a
0.5B load on 2 cores), so every phase here is a wrapped library function that
opens a named phase for the duration of the call. Targets were read off
transformers 5.x ``modeling_utils.from_pretrained``; a target missing in the
installed version is listed in the trial's notes and skipped.

Phase map (DESIGN.md vocabulary -> function):
  config        AutoConfig.from_pretrained / PreTrainedConfig.from_pretrained
  resolve       _get_resolved_checkpoint_files (files, shard index)
  instantiate   the model-init context of from_pretrained (class built on meta / with dtype)
  quantize      HfQuantizer.preprocess_model / postprocess_model
  device_map    _get_device_map (infer_auto_device_map, max_memory)
  weights       PreTrainedModel._load_pretrained_model (open shards, convert, assign)
    allocator_warmup  caching_allocator_warmup
    offload           accelerate_disk_offload
    materialize       convert_and_load_state_dict_in_model (read + dtype cast + assign)
  post_init     PreTrainedModel._finalize_model_loading (missing keys, init, tie weights)
  generation_config   adjust_generation_fn
  dispatch      accelerate_dispatch (hooks for multi-device/offload)
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

from probes.base import Probe, ProbeContext, ProbeResult

MU = "transformers.modeling_utils"

#: (phase name, hook target). Order matters only for readability.
LOAD_TARGETS: tuple[tuple[str, str], ...] = (
    ("config", "transformers.models.auto.configuration_auto:AutoConfig.from_pretrained"),
    ("config", "transformers.configuration_utils:PreTrainedConfig.from_pretrained"),
    ("resolve", f"{MU}:_get_resolved_checkpoint_files"),
    ("quantize", "transformers.quantizers.base:HfQuantizer.preprocess_model"),
    ("quantize", "transformers.quantizers.base:HfQuantizer.postprocess_model"),
    ("device_map", f"{MU}:_get_device_map"),
    ("weights", f"{MU}:PreTrainedModel._load_pretrained_model"),
    ("allocator_warmup", f"{MU}:caching_allocator_warmup"),
    ("offload", f"{MU}:accelerate_disk_offload"),
    ("materialize", f"{MU}:convert_and_load_state_dict_in_model"),
    ("post_init", f"{MU}:PreTrainedModel._finalize_model_loading"),
    ("generation_config", "transformers.generation.utils:GenerationMixin.adjust_generation_fn"),
    ("dispatch", f"{MU}:accelerate_dispatch"),
)
INIT_CONTEXT_TARGET = f"{MU}:PreTrainedModel.get_init_context"


def phase_wrapper(open_phase: Callable[[str], Any], name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with open_phase(name):
                return fn(*args, **kwargs)

        return wrapped

    return make


class LoadPhasesProbe(Probe):
    NAME = "phases"

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.calls: dict[str, int] = {}
        for name, target in LOAD_TARGETS:
            ctx.hooks.wrap(target, self._counting(name, phase_wrapper(ctx.phase, name)))
        ctx.hooks.wrap(INIT_CONTEXT_TARGET, self._init_context)

    def _counting(self, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]):
        def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
            inner = make(fn)

            @functools.wraps(fn)
            def wrapped(*a: Any, **k: Any) -> Any:
                self.calls[name] = self.calls.get(name, 0) + 1
                return inner(*a, **k)

            return wrapped

        return counted

    def _init_context(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """get_init_context returns the context managers that wrap ``cls(config)``: add a phase to them."""
        open_phase = self.ctx.phase

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            contexts = list(fn(*args, **kwargs))
            contexts.insert(0, _PhaseContext(open_phase, "instantiate"))
            return contexts

        return wrapped

    def stop(self) -> ProbeResult:
        missing = tuple(self.ctx.hooks.missing)
        notes = tuple(f"load phase hook not installed (absent in this version): {m}" for m in missing)
        return ProbeResult(self.NAME, metrics={"hooks_installed": len(self.ctx.hooks.installed),
                                               "hook_calls": dict(self.calls)}, notes=notes)


class _PhaseContext(contextlib.AbstractContextManager):
    """A reusable context-manager object (transformers' ContextManagers enters each with ``enter_context``)."""

    def __init__(self, open_phase: Callable[[str], Any], name: str) -> None:
        self._open = open_phase
        self._name = name
        self._cm: Any = None

    def __enter__(self) -> Any:
        self._cm = self._open(self._name)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)
