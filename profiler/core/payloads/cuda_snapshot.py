"""The cuda_snapshot probe's payload (loadprof.probes.cuda_snapshot): the snapshot itself is an artifact."""

from __future__ import annotations

from dataclasses import dataclass

from loadprof.core.payloads.base import Payload


@dataclass(frozen=True)
class CudaSnapshotPayload(Payload):
    PROBE = "cuda_snapshot"

    max_entries: int  # the memory history's ring size (older allocations fall out of the snapshot)
