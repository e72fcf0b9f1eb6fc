"""The allocations probe's payload (loadprof.probes.allocations), filed as trial metrics: what the traced
generate call allocated before its first token and still held at it."""

from __future__ import annotations

from dataclasses import dataclass

from loadprof.core.payloads.base import Payload, Record


@dataclass(frozen=True)
class AllocationSite(Record):
    """One (call site, op); ``alive_bytes`` still held at the first token."""

    site: str
    op: str
    bytes: int
    alive_bytes: int
    count: int
    shape: tuple[int, ...]
    dtype: str
    stack: tuple[str, ...]


@dataclass(frozen=True)
class AllocationsPayload(Payload):
    PROBE = "allocations"
    FILED = "metrics"

    generate_start_alloc_bytes: int
    generate_start_alloc_total_bytes: int
    generate_start_alloc_count: int
    generate_start_alloc_min_bytes: int
    generate_start_alloc_sites: tuple[AllocationSite, ...]
