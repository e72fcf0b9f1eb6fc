"""The phases probe's payload (loadprof.probes.load_phases): hooks on transformers' loading steps, what
from_pretrained was called with, and the materialize threads' busy time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from loadprof.core.payloads.base import Payload, Record, key


@dataclass(frozen=True)
class FromPretrainedCall(Record):
    cls: str = key("class")
    kwargs: Mapping[str, Any] = key("kwargs")  # values shortened to JSON-safe reprs
    source: str | None = None  # what it loaded from (a folder or hub id; None: not a path, or an older file)


@dataclass(frozen=True)
class LoadPhasesPayload(Payload):
    PROBE = "phases"

    hooks_installed: int
    hook_calls: Mapping[str, int]
    from_pretrained_calls: tuple[FromPretrainedCall, ...]
    #: kwarg -> where the installed transformers discards it (None: no call passed one)
    ignored_kwargs: Mapping[str, str] | None = None
    #: per-tensor work on the main thread inside materialize (None: no tensor was materialized)
    materialize_main_thread_s: Mapping[str, float] | None = None
    materialize_main_thread_calls: Mapping[str, int] | None = None
    #: busy time summed over the loader's worker threads ("read"/"convert", or "materialize" undivided)
    materialize_worker_threads_busy_s: Mapping[str, float] | None = None
    materialize_worker_threads: int | None = None
    materialize_tensors: int | None = None
