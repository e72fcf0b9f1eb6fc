"""CPU (and, where present, CUDA) memory per phase.

Sources and what each misses:
- RSS split anonymous / file-backed: /proc/self/status RssAnon/RssFile at phase
  edges, /proc/self/statm (resident, shared) on a thread every ``period_s``:
  splits real allocations from mmap'd checkpoint pages (a "fast" load that
  only mapped its weights shows RssFile, not RssAnon); a sampler can miss a
  spike shorter than its period.
- VmHWM, reset at every phase edge by writing 5 to /proc/self/clear_refs:
  the exact peak RSS inside each phase (where the kernel allows the reset).
- getrusage minor/major page faults at phase edges: where the bytes were
  really read (major faults = read from disk).
- torch.cuda allocator stats (allocated/reserved/peak, peak reset at phase
  start) when CUDA is initialised, and the allocated bytes over every device
  in the sampler's timeline (a fourth column, ``cuda_allocated_bytes``), so a
  user call that grew the allocator is named like one that grew RSS. Not seen by any of these: tracemalloc does
  not see torch tensors; torch.profiler misses the loader's worker threads;
  ``max_memory`` caps placement, not the loading peak.
"""

from __future__ import annotations

import json
import os
import resource
import threading
from pathlib import Path
from typing import Any, Callable

from loadprof.core import figures
from loadprof.core.payloads import MemoryPayload, MemoryTimeline, PhaseMemory
from loadprof.probes.base import Probe, ProbeContext, ProbeResult

SOURCES_NOTE = ("memory sources: RSS from /proc (anon = real allocations, file = mapped checkpoint pages); "
                "tracemalloc would not see torch tensors, torch.profiler misses the loader's worker threads, "
                "and max_memory steers placement but does not cap the loading peak")
#: report.json keeps at most this many timeline points; the full timeline is the trial's memory_timeline.json
TIMELINE_POINTS = 400
_STATUS_KEYS_B = ((b"\nVmRSS:", "rss"), (b"\nRssAnon:", "anon"), (b"\nRssFile:", "file"), (b"\nVmHWM:", "hwm"))


def read_status() -> dict[str, int]:
    """Selected /proc/self/status fields in bytes (empty on systems without procfs).

    Found by byte search rather than parsing every line: this runs at every phase edge.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for key, name in _STATUS_KEYS_B:
        i = data.find(key)
        if i >= 0:
            j = data.find(b"kB", i)
            out[name] = int(data[i + len(key):j]) * 1024
    return out


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_statm() -> tuple[int, int] | None:
    """(resident, shared) bytes from /proc/self/statm: one short line, cheap enough for a 10 ms sampler.

    ``shared`` is RssFile + RssShmem, so resident - shared is the anonymous part (plus shmem, rare here).
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def self_rusage() -> Any:
    """This process's rusage (ru_minflt, ru_majflt are what the probe reads)."""
    return resource.getrusage(resource.RUSAGE_SELF)


def cuda_allocated(cuda: Any) -> int:
    """Bytes the CUDA caching allocator holds for tensors, over every device (a sampler thread's current device
    is not the one the main thread loads to); 0 where the reading fails."""
    try:
        return sum(int(cuda.memory_allocated(i)) for i in range(cuda.device_count()))
    except Exception:  # noqa: BLE001 - a reading never takes the sampler down
        return 0


class MemoryProbe(Probe):
    """The readers are arguments (today's /proc readers by default) so a test can script what they return;
    ``sampler=False`` starts no thread: the test calls ``sample_once`` itself."""

    NAME = "memory"
    PAYLOAD = MemoryPayload

    # 10 ms: at 5 ms the sampler thread alone made a 0.6 s load 1.019x slower on 2 cores, at 10 ms 1.005x
    # (median of 6 rounds each, memory probe alone vs no probes)
    def __init__(self, period_s: float = 0.01, *, read_status: Callable[[], dict[str, int]] = read_status,
                 read_statm: Callable[[], tuple[int, int] | None] = read_statm,
                 reset_hwm: Callable[[], bool] = reset_hwm, getrusage: Callable[[], Any] = self_rusage,
                 sampler: bool = True) -> None:
        self.period_s = period_s
        self._read_status, self._read_statm = read_status, read_statm
        self._reset_hwm, self._getrusage = reset_hwm, getrusage
        self._sampler = sampler

    def start(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.open: dict[str, dict[str, Any]] = {}
        self.per_phase: dict[str, PhaseMemory] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (t_s, anon, file)
        self.peak_rss = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.hwm_reset_ok = self._reset_hwm()
        self._cuda = None
        self._nvml: Any = None
        self.nvml_note = ""
        self.peak_cuda = 0
        self._thread: threading.Thread | None = None
        if self._sampler:
            self._thread = threading.Thread(target=self._sample, name="loadprof-memory", daemon=True)
            self._thread.start()

    # -- sampler thread --
    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            if not self.sample_once():
                return

    def sample_once(self) -> bool:
        """One statm reading into the timeline and the open phases' sampled peaks (False: statm unreadable)."""
        sm = self._read_statm()
        if sm is None:
            return False
        rss, shared = sm
        anon = rss - shared
        t_s = (self.ctx.clock.now_ns() - self.ctx.t0_ns) / 1e9
        cuda = self._cuda_mod()
        with self._lock:
            self.timeline.append((t_s, anon, shared) if cuda is None else (t_s, anon, shared, cuda_allocated(cuda)))
            self.peak_rss = max(self.peak_rss, rss)
            for rec in self.open.values():
                rec["peak_sampled_rss_bytes"] = max(rec["peak_sampled_rss_bytes"], rss)
                rec["peak_anon_bytes"] = max(rec["peak_anon_bytes"], anon)
        return True

    # -- phase edges (main thread) --
    def _cuda_mod(self) -> Any:
        """torch.cuda once CUDA is initialised (re-checked until then: loading initialises it mid-trial)."""
        if not self._cuda:
            import sys

            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                self._cuda = torch.cuda
        return self._cuda

    def _nvml_used(self) -> int | None:
        """Device memory in use as NVML sees it (includes the CUDA context and other processes' use)."""
        if self._nvml is False:
            return None
        if self._nvml is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                import torch

                idx = torch.cuda.current_device()
                self._nvml = pynvml.nvmlDeviceGetHandleByIndex(idx)
                self._pynvml = pynvml
            except Exception as e:  # noqa: BLE001 - nvidia-ml-py missing or no driver: say so once
                self._nvml = False
                self.nvml_note = f"NVML readings unavailable ({type(e).__name__}: {e}); pip install 'loadprof[gpu]'"
                return None
        return int(self._pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used)

    def on_phase(self, phase: str, edge: str, t_ns: int) -> None:
        st = self._read_status()
        ru = self._getrusage()
        with self._lock:
            # the HWM since the last edge belongs to every phase open during that interval
            hwm = st.get("hwm", 0)
            cuda = self._cuda_mod()
            cuda_peak = cuda.max_memory_allocated() if cuda else 0
            for rec in self.open.values():
                rec[figures.PEAK_RSS_BYTES.key] = max(rec[figures.PEAK_RSS_BYTES.key], hwm)
                if cuda:
                    cuda_key = figures.PEAK_CUDA_ALLOCATED_BYTES.key
                    rec[cuda_key] = max(rec.get(cuda_key, 0), cuda_peak)
            self.peak_rss = max(self.peak_rss, hwm)
            self.peak_cuda = max(self.peak_cuda, cuda_peak)
            if edge == "start":
                self.open[phase] = {
                    "start_rss_bytes": st.get("rss", 0), "start_anon_bytes": st.get("anon", 0),
                    "start_file_bytes": st.get("file", 0), figures.PEAK_RSS_BYTES.key: st.get("rss", 0),
                    "peak_sampled_rss_bytes": st.get("rss", 0), "peak_anon_bytes": st.get("anon", 0),
                    "_minflt": ru.ru_minflt, "_majflt": ru.ru_majflt,
                }
                if cuda:
                    self.open[phase]["start_cuda_allocated_bytes"] = cuda.memory_allocated()
                    self.open[phase][figures.PEAK_CUDA_ALLOCATED_BYTES.key] = cuda.memory_allocated()
                    used = self._nvml_used()
                    if used is not None:
                        self.open[phase]["start_nvml_used_bytes"] = used
            elif phase in self.open:
                rec = self.open.pop(phase)
                rec.update(end_rss_bytes=st.get("rss", 0), end_anon_bytes=st.get("anon", 0),
                           end_file_bytes=st.get("file", 0),
                           minor_faults=ru.ru_minflt - rec.pop("_minflt"), major_faults=ru.ru_majflt - rec.pop("_majflt"))
                if cuda:
                    rec.update(end_cuda_allocated_bytes=cuda.memory_allocated(),
                               end_cuda_reserved_bytes=cuda.memory_reserved())
                    used = self._nvml_used()
                    if used is not None:
                        rec["end_nvml_used_bytes"] = used
                self.per_phase[phase] = PhaseMemory(**rec)
            if cuda:
                cuda.reset_peak_memory_stats()
        if self.hwm_reset_ok:
            self._reset_hwm()

    def stop(self) -> ProbeResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        st = self._read_status()
        with self._lock:
            self.peak_rss = max(self.peak_rss, st.get("hwm", 0))
            timeline = list(self.timeline)
        columns = ("t_s", "rss_anon_bytes", "rss_file_bytes")
        if any(len(r) > 3 for r in timeline):  # CUDA came up mid-trial: its allocator held 0 bytes before
            columns += ("cuda_allocated_bytes",)
            timeline = [r if len(r) > 3 else (*r, 0) for r in timeline]
        path = Path(self.ctx.trial_dir) / "memory_timeline.json"
        artifacts = {}
        try:
            path.write_text(json.dumps({"columns": list(columns), "rows": timeline}))
            artifacts["memory_timeline"] = path.name
        except OSError:
            pass
        notes = [SOURCES_NOTE]
        if self.nvml_note:
            notes.append(self.nvml_note)
        if not self.hwm_reset_ok:
            notes.append("could not reset VmHWM (/proc/self/clear_refs); per-phase peaks are sampled, not exact")
        step = max(1, -(-len(timeline) // TIMELINE_POINTS))
        cuda = self._cuda_mod()
        payload = MemoryPayload(
            per_phase=dict(self.per_phase),
            timeline=MemoryTimeline(columns=columns,
                                    rows=tuple(timeline[::step]), every_nth_sample=step),
            trial_peak_rss_bytes=self.peak_rss, end_rss_bytes=st.get("rss", 0), end_anon_bytes=st.get("anon", 0),
            end_file_bytes=st.get("file", 0), samples=len(timeline), period_ms=self.period_s * 1e3,
            trial_peak_cuda_allocated_bytes=max(self.peak_cuda, cuda.max_memory_allocated()) if cuda else None)
        return ProbeResult(payload, notes=tuple(notes), artifacts=artifacts)
