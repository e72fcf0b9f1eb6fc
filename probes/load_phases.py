"""Boundary timing of the loading pipeline with plain function wrappers.

Wrappers cost ~microseconds per call (sys.setprofile would add ~350 ms to a
0.5B load on 2 cores), so every phase here is a wrapped library function that
opens a named phase for the duration of the call. Targets were read off
transformers 5.x ``modeling_utils.from_pretrained``; a target missing in the
installed version is listed in the trial's notes and skipped.

Phase map (DESIGN.md vocabulary -> function):
  config        AutoConfig.from_pretrained / PreTrainedConfig.from_pretrained
  resolve       _get_resolved_checkpoint_files (files, shard index), maybe_load_adapters
  dtype         _get_dtype (dtype="auto" reads the shard headers)
  conversion_plan  get_model_conversion_mapping (checkpoint key renaming rules, compiled on first use)
  instantiate   the model-init context of from_pretrained (class built on meta / with dtype)
  quantize      get_hf_quantizer, HfQuantizer.preprocess_model / postprocess_model
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
import importlib.util
import inspect
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable

from loadprof.core.payloads import FromPretrainedCall, LoadPhasesPayload
from loadprof.probes.base import Probe, ProbeContext, ProbeResult

MU = "transformers.modeling_utils"

#: (phase name, hook target). Order matters only for readability.
LOAD_TARGETS: tuple[tuple[str, str], ...] = (
    ("config", "transformers.models.auto.configuration_auto:AutoConfig.from_pretrained"),
    ("config", "transformers.configuration_utils:PreTrainedConfig.from_pretrained"),
    ("resolve", f"{MU}:_get_resolved_checkpoint_files"),
    ("resolve", f"{MU}:maybe_load_adapters"),             # looks for adapter files beside the checkpoint
    ("dtype", f"{MU}:_get_dtype"),                        # reads shard headers for dtype="auto"
    ("quantize", f"{MU}:get_hf_quantizer"),
    ("conversion_plan", f"{MU}:get_model_conversion_mapping"),  # key renaming rules: ~1k regexes on first use
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
    # generate(): the cache is created here, sized by max_new_tokens for a static cache (nests under prefill)
    ("preallocate", "transformers.generation.utils:GenerationMixin._prepare_cache_for_generation"),
)
INIT_CONTEXT_TARGET = f"{MU}:PreTrainedModel.get_init_context"
CML = "transformers.core_model_loading"
#: functions called once per tensor inside ``materialize``: summed, not emitted as phases (hundreds of calls)
MAIN_ACCUMULATORS: tuple[tuple[str, str], ...] = (
    ("collect", f"{CML}:WeightRenaming.convert"),   # gathers a tensor, waiting for its worker-thread future
    ("collect", f"{CML}:WeightConverter.convert"),
    ("assign", f"{CML}:set_param_for_module"),       # puts the tensor into the module
)
MATERIALIZE_COPY = f"{CML}:_materialize_copy"
FROM_PRETRAINED = f"{MU}:PreTrainedModel.from_pretrained"
#: the two statements of transformers 5.x ``_materialize_copy`` (read/map, then cast/move); if the installed
#: version differs, the worker-thread time is reported undivided
_COPY_READ_LINE = "tensor = tensor[...]"
_COPY_CAST_LINE = "tensor = tensor.to(device=device, dtype=dtype)"


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
    PAYLOAD = LoadPhasesPayload

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.calls: dict[str, int] = {}
        for name, target in LOAD_TARGETS:
            ctx.hooks.wrap(target, self._counting(name, phase_wrapper(ctx.phase, name)))
        ctx.hooks.wrap(INIT_CONTEXT_TARGET, self._init_context)
        self.loads: list[FromPretrainedCall] = []
        ctx.hooks.wrap(FROM_PRETRAINED, self._recording_call)
        self._acc_lock = threading.Lock()
        self.main_ns: dict[str, int] = {}
        self.main_calls: dict[str, int] = {}
        self.thread_ns: dict[str, int] = {}
        self.thread_ids: set[int] = set()
        self.copy_calls = 0
        for name, target in MAIN_ACCUMULATORS:
            ctx.hooks.wrap(target, self._accumulating(name))
        self.split_copy = _copy_source_matches()
        ctx.hooks.wrap(MATERIALIZE_COPY, self._timed_copy if self.split_copy else self._timed_copy_whole)

    def _counting(self, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]):
        def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
            inner = make(fn)

            @functools.wraps(fn)
            def wrapped(*a: Any, **k: Any) -> Any:
                self.calls[name] = self.calls.get(name, 0) + 1
                return inner(*a, **k)

            return wrapped

        return counted

    def _recording_call(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Record every from_pretrained call's kwargs and what it loads from, including a user's loader's calls."""

        def wrapped(cls: Any, *a: Any, **k: Any) -> Any:
            src = a[0] if a else k.get("pretrained_model_name_or_path")
            self.loads.append(FromPretrainedCall(cls=getattr(cls, "__name__", str(cls)),
                                                 kwargs={key: _short(v) for key, v in k.items()},
                                                 source=str(os.fspath(src))[:1000] if isinstance(src, (str, os.PathLike))
                                                 else None))
            return fn(cls, *a, **k)

        return wrapped

    def _accumulating(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        now = self.ctx.clock.now_ns

        def make(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(*a: Any, **k: Any) -> Any:
                t = now()
                try:
                    return fn(*a, **k)
                finally:
                    self.main_ns[name] = self.main_ns.get(name, 0) + now() - t
                    self.main_calls[name] = self.main_calls.get(name, 0) + 1

            return wrapped

        return make

    def _add_thread(self, **ns: int) -> None:
        with self._acc_lock:
            self.copy_calls += 1
            self.thread_ids.add(threading.get_ident())
            for k, v in ns.items():
                self.thread_ns[k] = self.thread_ns.get(k, 0) + v

    def _timed_copy(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Same two statements as transformers' ``_materialize_copy``, timed apart (checked against its source)."""
        now = self.ctx.clock.now_ns

        def copy(tensor: Any, device: Any = None, dtype: Any = None) -> Any:
            t0 = now()
            tensor = tensor[...]
            t1 = now()
            if dtype is not None or device is not None:
                tensor = tensor.to(device=device, dtype=dtype)
            self._add_thread(read=t1 - t0, convert=now() - t1)
            return tensor

        return copy

    def _timed_copy_whole(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        now = self.ctx.clock.now_ns

        def copy(*a: Any, **k: Any) -> Any:
            t0 = now()
            try:
                return fn(*a, **k)
            finally:
                self._add_thread(materialize=now() - t0)

        return copy

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
        notes = tuple(f"load phase hook not installed: {m}" for m in missing)
        ignored = discarded_kwargs()
        hits = sorted({k for call in self.loads for k in call.kwargs if k in ignored})
        copied = bool(self.copy_calls)  # busy time summed over the loader's worker threads: may exceed their wall
        payload = LoadPhasesPayload(
            hooks_installed=len(self.ctx.hooks.installed), hook_calls=dict(self.calls),
            from_pretrained_calls=tuple(self.loads), ignored_kwargs={k: ignored[k] for k in hits} if hits else None,
            materialize_main_thread_s={k: v / 1e9 for k, v in self.main_ns.items()} if self.main_ns else None,
            materialize_main_thread_calls=dict(self.main_calls) if self.main_ns else None,
            materialize_worker_threads_busy_s={k: v / 1e9 for k, v in self.thread_ns.items()} if copied else None,
            materialize_worker_threads=len(self.thread_ids) if copied else None,
            materialize_tensors=self.copy_calls if copied else None)
        if not self.split_copy:
            notes += ("_materialize_copy differs from the transformers 5.x form: worker-thread read and cast "
                      "are reported together as 'materialize'",)
        return ProbeResult(payload, notes=notes)


def _short(v: Any) -> Any:
    if isinstance(v, (bool, int, float, type(None))):
        return v
    if isinstance(v, dict):
        return {str(k): _short(x) for k, x in v.items()}
    text = str(v)
    return text if len(text) <= 120 else text[:117] + "..."


_DISCARD_LOOP = re.compile(r"for (\w+) in \[([^\]]*)\]:\s*\n\s*(?:_\s*=\s*)?kwargs\.pop\(\1\b")
_DISCARD_ONE = re.compile(r"^\s*_\s*=\s*kwargs\.pop\(\s*[\"'](\w+)[\"']", re.M)


def discarded_kwargs() -> dict[str, str]:
    """kwargs the installed ``from_pretrained`` pops and throws away, read off its source: name -> 'file:line'.

    transformers 5 silently drops e.g. ``low_cpu_mem_usage`` (no warning), so a user who sets it believes
    it does something. Reading the installed source keeps this true for whatever version is installed.
    """
    try:
        from loadprof.probes._hooks import resolve

        _, _, raw = resolve(FROM_PRETRAINED)
        fn = inspect.unwrap(getattr(raw, "__func__", raw))  # our own wrapper may be installed right now
        lines, first = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "?"
    except (LookupError, OSError, TypeError):
        return {}
    src = "".join(lines)
    where = lambda pos: f"{file.rsplit('site-packages/', 1)[-1]}:{first + src.count(chr(10), 0, pos)}"  # noqa: E731
    found: dict[str, str] = {}
    for m in _DISCARD_LOOP.finditer(src):
        for name in re.findall(r"[\"'](\w+)[\"']", m.group(2)):
            found[name] = where(m.start())
    for m in _DISCARD_ONE.finditer(src):
        found[m.group(1)] = where(m.start())
    return found


def _copy_source_matches() -> bool:
    """Does the installed ``_materialize_copy`` read as the two statements ``_timed_copy`` repeats? Read from its
    source file, without importing the module: the load imports it (and the user's first load pays for that)."""
    module, _, name = MATERIALIZE_COPY.partition(":")
    try:
        spec = importlib.util.find_spec(module)  # imports only the parent package, transformers, already imported
        src = Path(spec.origin).read_text() if spec is not None and spec.origin else ""
    except (ImportError, OSError, ValueError):
        return False
    fn = re.search(rf"^def {name}\(.*?\n(?=\S)", src, re.S | re.M)  # up to the next top-level statement
    body = [line.strip() for line in fn.group(0).splitlines()] if fn else []
    return _COPY_READ_LINE in body and _COPY_CAST_LINE in body


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
