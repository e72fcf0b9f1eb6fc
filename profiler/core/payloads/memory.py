"""The memory probe's payload (loadprof.probes.memory): process memory per phase and over the trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from loadprof.core.payloads.base import Payload, Record


@dataclass(frozen=True)
class PhaseMemory(Record):
    """Process memory over one phase (``/proc/self/status``, ``statm`` samples, rusage faults; the CUDA
    allocator and NVML on GPU, None where CUDA was not initialised or NVML not readable)."""

    start_rss_bytes: int
    end_rss_bytes: int
    peak_rss_bytes: int  # VmHWM over the phase (reset at each edge where the kernel allows)
    peak_sampled_rss_bytes: int
    start_anon_bytes: int
    end_anon_bytes: int
    peak_anon_bytes: int
    start_file_bytes: int
    end_file_bytes: int
    minor_faults: int
    major_faults: int
    start_cuda_allocated_bytes: int | None = None
    end_cuda_allocated_bytes: int | None = None
    peak_cuda_allocated_bytes: int | None = None
    end_cuda_reserved_bytes: int | None = None
    start_nvml_used_bytes: int | None = None
    end_nvml_used_bytes: int | None = None

    @property
    def file_growth_bytes(self) -> int:
        """File-backed resident memory the phase added: mmap'd weights paged in."""
        return self.end_file_bytes - self.start_file_bytes


@dataclass(frozen=True)
class MemoryTimeline(Record):
    """(t_s, rss_anon_bytes, rss_file_bytes[, cuda_allocated_bytes]) rows (``columns`` names them; the fourth
    where CUDA was initialised), every ``every_nth_sample``-th sample of the trial's own ``memory_timeline.json``
    (which keeps them all)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[float, ...], ...]
    every_nth_sample: int


@dataclass(frozen=True)
class MemoryPayload(Payload):
    PROBE = "memory"

    per_phase: Mapping[str, PhaseMemory]  # '/'-path -> the phase's figures (closed phases only)
    timeline: MemoryTimeline
    trial_peak_rss_bytes: int  # the whole trial, harness steps included (not the workload's peak)
    end_rss_bytes: int
    end_anon_bytes: int
    end_file_bytes: int
    samples: int
    period_ms: float
    trial_peak_cuda_allocated_bytes: int | None = None
