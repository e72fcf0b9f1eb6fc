"""Which process a trial runs in: forked from a pre-imported zygote (loadprof.worker.forkserver), or a fresh
interpreter. One pure rule, so the runner, the tests and the reports agree on it.

Forking skips re-importing torch and transformers (3-4 s a trial on CPU, 10-16 s on a GPU image) and leaves the
phases a trial is compared by (load, validate, warmup, TTFT, decode) where a fresh process puts them
(benchmarks/forkserver.py measures the two side by side). ``isolation: auto``, the default, forks wherever that
holds and starts fresh where it does not:

* a cold page cache: the trial measures the cold import too, which a zygote has already paid;
* a trial that may use a GPU (a GPU is visible and its device map is not all CPU/disk, or a custom loader,
  which may place the model anywhere): the zygote never touches CUDA and a child may initialise it itself, but
  what a pre-imported process costs on a GPU image has not been shown to stay within the noise of a fresh one.

Under ``auto`` a forked trial of the built-in loader also shares the lazy import its load starts with
(``transformers.modeling_utils`` and the model's modeling module, 1.3-1.5 s on CPU) with the other trials of its
repeat round: a sub-zygote does that import once per round, timed, and each trial's real load cost includes the
measurement (loadprof.worker.shared_import). Each repeat round measures its own, so repeats keep their spread; a
custom loader's imports are its own and are never shared. ``forkserver`` (asked) shares nothing: every trial pays
and times its own import.

``fresh`` and ``forkserver`` are explicit overrides (``forkserver`` still starts a cold-cache trial fresh). The
trial's harness records what it really ran under (``isolation``) and why (``isolation_note``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Mapping

from loadprof.strategies.model import Strategy

FRESH, FORKSERVER, AUTO = "fresh", "forkserver", "auto"
#: device-map targets that keep every weight off any GPU
_HOST_DEVICES = ("cpu", "disk")
#: device nodes a visible GPU leaves (NVIDIA, AMD's ROCm)
GPU_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd")


@dataclass(frozen=True)
class Choice:
    """How a trial starts (``fresh`` or ``forkserver``) and why, as its harness records it."""

    isolation: str
    note: str
    share_import: bool = False  # forked from its repeat round's sub-zygote, which did the load's lazy import

    def harness(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "isolation_note": self.note,
                **({"share_import": True} if self.share_import else {})}


def gpu_visible(env: Mapping[str, str], nodes: tuple[str, ...] = GPU_NODES) -> bool:
    """May a worker with this environment see a GPU? Without running anything (nvidia-smi takes seconds, importing
    torch would initialise CUDA here): CUDA_VISIBLE_DEVICES hiding all, else a GPU device node."""
    hidden = env.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    return any(glob.glob(pattern) for pattern in nodes)


def host_only(strategy: Strategy) -> bool:
    """Does the trial keep the model on the host whatever GPUs there are (the built-in loader, every weight on
    cpu or disk)?"""
    load = strategy.load
    if load.loader is not None:
        return False
    if isinstance(load.device_map, str):
        return load.device_map == "cpu"
    return all(str(dev) in _HOST_DEVICES for _, dev in load.device_map)


def choose(strategy: Strategy, gpu: bool, pre_import: bool = True) -> Choice:
    """The isolation a trial of ``strategy`` runs under (``gpu``: a GPU is visible to its worker; ``pre_import``
    False: a zygote would serve this one trial only, so ``auto`` starts it fresh). ``forkserver`` here may still
    end ``fresh`` when the zygote cannot start or fork (the runner notes why)."""
    asked = strategy.isolation
    if asked == FRESH:
        return Choice(FRESH, "isolation: fresh (asked)")
    if strategy.load.file_cache == "cold":
        return Choice(FRESH, "cold page cache: a fresh interpreter, whose import from a cold cache is measured too")
    if asked == FORKSERVER:
        return Choice(FORKSERVER, "isolation: forkserver (asked)")
    if not pre_import:
        return Choice(FRESH, "isolation: auto, a zygote would serve this trial only (a Ray task): a fresh interpreter")
    if gpu and not host_only(strategy):
        why = "a custom loader" if strategy.load.loader is not None else "a device map that may use the GPU"
        return Choice(FRESH, f"isolation: auto, a GPU is visible and {why}: a fresh interpreter")
    if strategy.load.loader is None:
        return Choice(FORKSERVER, "isolation: auto, a warm CPU trial: forked from a pre-imported zygote, the load's "
                                  "lazy import measured once per repeat round and shared", share_import=True)
    return Choice(FORKSERVER, "isolation: auto, a warm CPU trial: forked from a pre-imported zygote")


def choose_for(strategy: Strategy, env: Mapping[str, str] | None = None, pre_import: bool = True) -> Choice:
    """``choose`` with this machine's GPU visibility for a worker run with ``env`` (default: ours)."""
    return choose(strategy, gpu_visible(os.environ if env is None else env), pre_import)
