"""The io probe's payload (loadprof.probes.io): bytes read per phase, from ``/proc/self/io``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from loadprof.core.payloads.base import Payload, Record


@dataclass(frozen=True)
class PhaseIO(Record):
    storage_read_bytes: int  # /proc/self/io read_bytes: what reached the block device
    read_chars: int          # rchar: every read(), page-cache hits included


@dataclass(frozen=True)
class IOPayload(Payload):
    PROBE = "io"

    storage_read_bytes: int
    read_chars: int
    per_phase: Mapping[str, PhaseIO]
    most_bytes_read_in: str | None = None  # the top-level phase that read most (None: nothing read)
