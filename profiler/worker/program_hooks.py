"""The hooks a program gets: every load (``from_pretrained`` of models, tokenizers, processors, configs;
``pipeline(...)``; ``safetensors.torch.load_file``), every ``generate``, each model's first forward.

Nothing is imported to install them: the one import watcher (loadprof.probes._imports.when_imported) waits for
each module to be imported by the program itself and wraps its functions the moment the module has run (before
the program's ``from x import y`` binds them); everything is undone with the worker's HookSet. When ``transformers.modeling_utils`` arrives, the load-phase probe (loadprof.probes.load_phases) starts
too, so inside each named load the steps are the ones a trial shows (config, resolve, weights/materialize,
post_init, ...). Each load is a phase named by what was loaded (its folder's name, or its hub id with ``/``
written ``--``; a repeat gets ``#2``), and ``program_loads`` lists each one's full path or id.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import weakref
from types import ModuleType
from typing import Any, Callable

from loadprof.probes._imports import when_imported
from loadprof.probes.load_phases import FROM_PRETRAINED, LoadPhasesProbe

MU = "transformers.modeling_utils"
AUTO = "transformers.models.auto"
AUTO_MODEL = f"{AUTO}.auto_factory:_BaseAutoModelClass.from_pretrained"
#: (module whose import installs the hook, hook target, kind of load). Order inside one module: outermost last.
HOOKS: tuple[tuple[str, str, str], ...] = (
    (MU, FROM_PRETRAINED, "model"),
    (MU, f"{AUTO}.configuration_auto:AutoConfig.from_pretrained", "config"),
    (MU, "transformers.configuration_utils:PreTrainedConfig.from_pretrained", "config"),
    (f"{AUTO}.auto_factory", AUTO_MODEL, "model"),
    ("transformers.tokenization_utils_base", "transformers.tokenization_utils_base:PreTrainedTokenizerBase"
                                             ".from_pretrained", "tokenizer"),
    (f"{AUTO}.tokenization_auto", f"{AUTO}.tokenization_auto:AutoTokenizer.from_pretrained", "tokenizer"),
    ("transformers.processing_utils", "transformers.processing_utils:ProcessorMixin.from_pretrained", "processor"),
    (f"{AUTO}.processing_auto", f"{AUTO}.processing_auto:AutoProcessor.from_pretrained", "processor"),
    ("transformers.image_processing_base", "transformers.image_processing_base:ImageProcessingMixin"
                                           ".from_pretrained", "processor"),
    ("transformers.feature_extraction_utils", "transformers.feature_extraction_utils:FeatureExtractionMixin"
                                              ".from_pretrained", "processor"),
    ("transformers.pipelines", "transformers.pipelines:pipeline", "pipeline"),
    ("transformers.generation.utils", "transformers.generation.utils:GenerationMixin.generate", "generate"),
    ("safetensors.torch", "safetensors.torch:load_file", "safetensors"),
)
#: kinds whose loads name the loads they make (a pipeline's model and tokenizer); others hide their inner ones
CONTAINERS = ("pipeline", "processor")


def auto_model_copies(auto_factory: ModuleType) -> list[str]:
    """Hook targets for the Auto model classes defined before the hooks: transformers gives each its own copy of
    ``_BaseAutoModelClass.from_pretrained`` as it defines it (auto_class_update), so a class defined earlier (an
    in-process profile in a process that already imported them) does not call the hooked one. A program's are
    defined after the hook (none here): their copies are of the wrapper."""
    out, todo = [], list(auto_factory._BaseAutoModelClass.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "from_pretrained" in vars(cls) and "<locals>" not in cls.__qualname__:
            out.append(f"{cls.__module__}:{cls.__qualname__}.from_pretrained")
    return out


def source_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """What a load loads, as given: ``pretrained_model_name_or_path`` / ``model`` / the first str or path."""
    for key in ("pretrained_model_name_or_path", "model", "filename"):
        v = kwargs.get(key)
        if isinstance(v, (str, os.PathLike)):
            return os.fspath(v)
    for v in args:
        if isinstance(v, (str, os.PathLike)):
            return os.fspath(v)
    for v in [kwargs.get("model"), *args[1:2]]:
        if v is not None and not isinstance(v, type):
            return type(v).__name__
    return "?"


def short_name(source: str) -> str:
    """A phase name for ``source``: a local path's last part, a hub id with ``/`` written ``--``."""
    if os.path.exists(source) or source.startswith(("/", ".", "~")):
        source = os.path.basename(os.path.normpath(source)) or source
    return re.sub(r"[^\w.:@+=#-]", "_", source.replace("/", "--"))[:80] or "?"


class Hooks:
    """The wrappers, bound to one ProgramWorker (its phases, notes and metrics)."""

    def __init__(self, worker: Any) -> None:
        self.w = worker
        self.phases = worker.phases
        self.loads: list[dict[str, Any]] = []
        self._names: dict[str, int] = {}
        self.calls: list[Any] = []  # probes.generation.CallTiming of each generate call
        self._local = threading.local()  # the kinds of the loads open in this thread; the generate in progress

    def callbacks(self) -> dict[str, Callable[[ModuleType], None]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for module, target, kind in HOOKS:
            out.setdefault(module, []).append((target, kind))
        return {m: (lambda mod, m=m, ts=tuple(ts): self._install(m, ts)) for m, ts in out.items()}

    def _install(self, module: str, targets: tuple[tuple[str, str], ...]) -> None:
        if module == MU:  # the steps inside from_pretrained, as a trial shows them (installed before ours: inner)
            call_guarded(self.w.note, "load phase hooks", lambda: self.w.add_probe(LoadPhasesProbe()))
        for target, kind in targets:
            make = self._generate if kind == "generate" else self._load(kind)
            call_guarded(self.w.note, f"hook {target}", lambda t=target, mk=make: self.w.hooks.wrap(t, mk))
            if target == AUTO_MODEL:
                for copy in auto_model_copies(sys.modules[module]):
                    call_guarded(self.w.note, f"hook {copy}", lambda t=copy, mk=make: self.w.hooks.wrap(t, mk))

    def _kinds(self) -> list[str]:
        if not hasattr(self._local, "kinds"):
            self._local.kinds = []
        return self._local.kinds

    def _name(self, kind: str, source: str) -> str:
        base = f"{kind}:{short_name(source)}"
        n = self._names[base] = self._names.get(base, 0) + 1
        return base if n == 1 else f"{base}#{n}"

    def _load(self, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(*a: Any, **k: Any) -> Any:
                kinds = self._kinds()
                if kinds and (kinds[-1] not in CONTAINERS or kinds[-1] == kind) or not self.phases.may_open():
                    return fn(*a, **k)  # inside another load: its own steps, not a load of its own
                source = source_name(a, k)
                name = self._name(kind, source)
                kinds.append(kind)
                try:
                    with self.phases.step(name, load=True) as path:
                        obj = fn(*a, **k)
                finally:
                    kinds.pop()
                if path is not None:
                    self._record(path, kind, source, obj)
                return obj

            return wrapped

        return make

    def _record(self, path: str, kind: str, source: str, obj: Any) -> None:
        entry: dict[str, Any] = {"phase": path, "kind": kind, "source": source, "class": type(obj).__name__}
        if kind == "model" and self._watch_forward(obj, path.rsplit(":", 1)[-1]):
            self.phases.model_loaded()
        self.loads.append(entry)
        self.w.metric("program_loads", self.loads)

    def _watch_forward(self, model: Any, label: str) -> bool:
        """Wrap the loaded model's ``forward`` (on the instance): its first call is a ``forward:NAME`` load step
        or, inside generate, that call's ``prefill``; later calls pass straight through."""
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(model, torch.nn.Module) or "forward" in vars(model):
            return False
        original = model.forward
        state = {"first": True}

        def forward(*a: Any, **k: Any) -> Any:
            gen = getattr(self._local, "generate", None)
            if gen is not None and gen["forwards"] == 0:
                gen["forwards"] = 1
                with self.phases.step("prefill", load=False):
                    out = original(*a, **k)
                gen["steps"].append(self.w.rec.clock.now_ns())
                if state.pop("first", False):
                    self.phases.model_used()
                gen["decode"] = self._open_decode()
                return out
            if gen is not None:
                gen["forwards"] += 1
                out = original(*a, **k)
                gen["steps"].append(self.w.rec.clock.now_ns())
                return out
            if state.pop("first", False) and gen is None:
                with self.phases.step(f"forward:{label}", load=True):
                    out = original(*a, **k)
                self.phases.model_used()
                return out
            return original(*a, **k)

        model.forward = forward
        ref = weakref.ref(model)  # the cleanup must not keep a model alive that the program let go of
        self.w.hooks.add_cleanup(lambda: _unwrap_forward(ref(), forward))
        return True

    def _open_decode(self) -> Any:
        cm = self.phases.step("decode", load=False)
        return cm if cm.__enter__() is not None else None

    def _generate(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            if getattr(self._local, "generate", None) is not None or self._kinds() or not self.phases.may_open():
                return fn(*a, **k)
            now = self.w.rec.clock.now_ns
            gen: dict[str, Any] = {"forwards": 0, "decode": None, "steps": [], "t0": now()}
            with self.phases.step("generate", load=False):
                self._local.generate = gen
                try:
                    return fn(*a, **k)
                finally:
                    self._local.generate = None
                    if gen["decode"] is not None:
                        gen["decode"].__exit__(None, None, None)
                    self._generated(gen, now(), *_shape(a, k))

        return wrapped

    def _generated(self, gen: dict[str, Any], t_end: int, batch: int, prompt: int) -> None:
        """The generate calls' figures so far, as a trial's (probes.generation.summarize: the first call is
        the cold one, the rest are measured)."""
        from loadprof.probes.generation import CallTiming, summarize

        self.calls.append(CallTiming(gen["t0"], t_end, list(gen["steps"]), max(0, len(gen["steps"])),
                                     prompt_tokens=prompt))
        for key, v in summarize(self.calls, 1 if len(self.calls) > 1 else 0, batch).items():
            self.w.metric(key, v)


def _unwrap_forward(model: Any, forward: Any) -> None:
    if model is not None and vars(model).get("forward") is forward:
        del model.forward


def call_guarded(note: Callable[[str], None], what: str, fn: Callable[[], Any]) -> None:
    """Run ``fn``; a failure is a note, never the program's failure (hooks run inside the user's imports)."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        note(f"{what} failed: {type(e).__name__}: {e}")


def _shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int]:
    """(batch, prompt length) of a generate call: its input_ids' two dimensions; (1, 0) when they cannot be told."""
    ids = kwargs.get("input_ids", args[1] if len(args) > 1 else None)
    shape = getattr(ids, "shape", None)
    return (int(shape[0]), int(shape[1])) if shape is not None and len(shape) == 2 else (1, 0)


def install(worker: Any) -> Hooks:
    """Hooks for ``worker``: installed now for modules already imported, else when the program imports them;
    ``worker.hooks.undo()`` removes them (and the forward wrappers of the models loaded meanwhile)."""
    hooks = Hooks(worker)
    for name, cb in hooks.callbacks().items():
        worker.hooks.add_cleanup(when_imported(name, cb))
    return hooks
