"""The bandwidth probe's payload (loadprof.probes.bandwidth), filed as trial metrics: device copy bandwidth,
host -> device rates on CUDA, and on CPU with a half-precision model the matmul rate per dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from loadprof.core.payloads.base import Payload


@dataclass(frozen=True)
class BandwidthPayload(Payload):
    PROBE = "bandwidth"
    FILED = "metrics"

    membw_gb_s: float
    membw_bytes: int
    membw_repeats: int
    membw_device: str
    membw_method: str
    membw_scope: str | None = None   # measured here: the device it belongs to (None: reused)
    membw_source: str | None = None  # reused: "trial <id>" that measured it
    h2d_bytes: int | None = None     # h2d_*: CUDA only
    h2d_repeats: int | None = None
    h2d_device: str | None = None
    h2d_method: str | None = None
    h2d_pageable_gb_s: float | None = None
    h2d_pinned_gb_s: float | None = None
    h2d_source: str | None = None
    matmul_gflops: Mapping[str, float] | None = None  # dtype -> GFLOP/s (CPU, half-precision model only)
    matmul_method: str | None = None
