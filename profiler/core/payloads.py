"""Typed views of what each probe filed for a trial, so analysis and renderers read attributes, not key chains.

``report.json`` keeps every probe's own dict (``TrialResult.probes[name]``, as ``ProbeResult.to_dict`` wrote it;
the generation and allocation probes file their figures as trial ``metrics``). A view is built from that dict
once, on first use (``TrialResult.views``); keys an older file lacks read as the field's default, keys a newer
probe adds are ignored until a view names them. A probe that did not run gives an empty view (``present`` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def _pick(cls: type[T], d: Any) -> T:
    """``cls`` from the keys of ``d`` it declares (nothing else), defaults for the rest."""
    d = d if isinstance(d, Mapping) else {}
    return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})  # type: ignore[arg-type]


def _metrics(probes: Mapping[str, Any], name: str) -> tuple[bool, Mapping[str, Any], Mapping[str, Any]]:
    p = probes.get(name)
    if not isinstance(p, Mapping):
        return False, {}, {}
    return True, p.get("metrics") or {}, p.get("per_phase") or {}


# ---------------------------------------------------------------------------------------------------- memory

@dataclass(frozen=True)
class PhaseMemory:
    """Process memory over one phase (``/proc/self/status`` and ``smaps_rollup``; CUDA allocator and NVML on GPU)."""

    start_rss_bytes: int = 0
    end_rss_bytes: int = 0
    peak_rss_bytes: int = 0  # VmHWM over the phase (reset at each edge where the kernel allows)
    peak_sampled_rss_bytes: int = 0
    start_anon_bytes: int = 0
    end_anon_bytes: int = 0
    peak_anon_bytes: int = 0
    start_file_bytes: int = 0
    end_file_bytes: int = 0
    minor_faults: int = 0
    major_faults: int = 0
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
class MemoryView:
    present: bool = False
    per_phase: Mapping[str, PhaseMemory] = field(default_factory=dict)
    #: (t_s, rss_anon_bytes, rss_file_bytes) rows, thinned to every ``every_nth_sample``-th sample
    timeline: tuple[tuple[float, float, float], ...] = ()
    every_nth_sample: int = 1
    trial_peak_rss_bytes: int | None = None  # the whole trial, harness steps included (not the workload's peak)
    trial_peak_cuda_allocated_bytes: int | None = None
    end_rss_bytes: int | None = None
    samples: int = 0
    period_ms: float | None = None

    @classmethod
    def of(cls, probes: Mapping[str, Any]) -> "MemoryView":
        present, m, per = _metrics(probes, "memory")
        tl = m.get("timeline")
        rows = tl.get("rows") if isinstance(tl, Mapping) else tl
        return cls(present=present, per_phase={k: _pick(PhaseMemory, v) for k, v in per.items()},
                   timeline=tuple(tuple(r[:3]) for r in (rows or ()) if isinstance(r, (list, tuple)) and len(r) >= 3),
                   every_nth_sample=(tl.get("every_nth_sample") if isinstance(tl, Mapping) else None) or 1,
                   trial_peak_rss_bytes=m.get("trial_peak_rss_bytes"),
                   trial_peak_cuda_allocated_bytes=m.get("trial_peak_cuda_allocated_bytes"),
                   end_rss_bytes=m.get("end_rss_bytes"), samples=m.get("samples") or 0, period_ms=m.get("period_ms"))


# -------------------------------------------------------------------------------------------------------- io

@dataclass(frozen=True)
class PhaseIO:
    storage_read_bytes: int = 0  # /proc/self/io read_bytes: what reached the block device
    read_chars: int = 0          # rchar: every read(), page-cache hits included


@dataclass(frozen=True)
class IOView:
    present: bool = False
    storage_read_bytes: int = 0
    read_chars: int = 0
    most_bytes_read_in: str | None = None
    per_phase: Mapping[str, PhaseIO] = field(default_factory=dict)

    @classmethod
    def of(cls, probes: Mapping[str, Any]) -> "IOView":
        present, m, per = _metrics(probes, "io")
        return cls(present=present, storage_read_bytes=m.get("storage_read_bytes") or 0,
                   read_chars=m.get("read_chars") or 0, most_bytes_read_in=m.get("most_bytes_read_in"),
                   per_phase={k: _pick(PhaseIO, v) for k, v in per.items()})


# ---------------------------------------------------------------------------------------------- load phases

@dataclass(frozen=True)
class FromPretrainedCall:
    cls: str = "?"
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # values shortened to JSON-safe reprs


@dataclass(frozen=True)
class LoadPhasesView:
    """The ``phases`` probe: hooks on transformers' loading steps, and what from_pretrained was called with."""

    present: bool = False
    hooks_installed: int = 0
    hook_calls: Mapping[str, int] = field(default_factory=dict)
    from_pretrained_calls: tuple[FromPretrainedCall, ...] = ()
    ignored_kwargs: Mapping[str, str] = field(default_factory=dict)  # kwarg -> where transformers discards it
    materialize_worker_threads_busy_s: Mapping[str, float] = field(default_factory=dict)
    materialize_worker_threads: int | None = None
    materialize_tensors: int | None = None

    @classmethod
    def of(cls, probes: Mapping[str, Any]) -> "LoadPhasesView":
        present, m, _ = _metrics(probes, "phases")
        calls = tuple(FromPretrainedCall(cls=str(c.get("class", "?")), kwargs=c.get("kwargs") or {})
                      for c in m.get("from_pretrained_calls") or () if isinstance(c, Mapping))
        return cls(present=present, hooks_installed=m.get("hooks_installed") or 0, hook_calls=m.get("hook_calls") or {},
                   from_pretrained_calls=calls, ignored_kwargs=m.get("ignored_kwargs") or {},
                   materialize_worker_threads_busy_s=m.get("materialize_worker_threads_busy_s") or {},
                   materialize_worker_threads=m.get("materialize_worker_threads"),
                   materialize_tensors=m.get("materialize_tensors"))


# -------------------------------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class UserFunction:
    """One function of the user's code in one top-level phase, from the samples whose deepest user frame it is
    (its own time plus the library code it called), running or waiting; seconds are wall seconds."""

    name: str = "?"
    file: str = "?"
    line: int | None = None
    phase: str = "load"          # top-level phase (files from before per-phase attribution: the load)
    samples: int = 0
    seconds: float = 0.0
    running_s: float = 0.0
    waiting_s: float = 0.0
    waits: Mapping[str, float] = field(default_factory=dict)  # wait kind -> seconds
    own_s: float = 0.0           # outside every named sub-phase (in the load: outside transformers' steps)
    own_share_of_phase: float | None = None  # of the phase's wall time
    share_of_phase: float | None = None
    inclusive_s: float = 0.0
    decode_s: float = 0.0
    share_of_decode: float | None = None   # of generate's decode wall time
    hottest_line: int | str | None = None

    @property
    def main_wait(self) -> str | None:
        return max(self.waits, key=lambda k: self.waits[k]) if self.waits else None


@dataclass(frozen=True)
class PhaseSamples:
    """What the main thread's samples saw in one phase path, outside its child phases."""

    seconds: float = 0.0
    samples: int = 0
    inclusive_s: float = 0.0
    running_s: float = 0.0
    waiting_s: float = 0.0
    waits: Mapping[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    share_of_phase: float | None = None
    top: tuple[Mapping[str, Any], ...] = ()  # [{function, state, seconds}], most seconds first


@dataclass(frozen=True)
class SamplingView:
    present: bool = False
    ok: bool = False
    rate_hz: float | None = None
    effective_rate_hz: float | None = None
    samples_total: int = 0
    main_thread_samples: int = 0
    main_thread_s: float = 0.0
    states_known: bool = False
    phases: Mapping[str, PhaseSamples] = field(default_factory=dict)
    areas: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # phase -> library area -> seconds
    user_functions: tuple[UserFunction, ...] = ()

    def user_functions_in(self, phase: str) -> tuple[UserFunction, ...]:
        return tuple(u for u in self.user_functions if u.phase == phase)

    @classmethod
    def of(cls, probes: Mapping[str, Any]) -> "SamplingView":
        present, m, _ = _metrics(probes, "sampling")
        phases = {k: _pick(PhaseSamples, {**v, "top": tuple(v.get("top") or ())}) for k, v in (m.get("phases") or {}).items()
                  if isinstance(v, Mapping)}
        return cls(present=present, ok=bool(m.get("ok")), rate_hz=m.get("rate_hz"),
                   effective_rate_hz=m.get("effective_rate_hz"), samples_total=m.get("samples_total") or 0,
                   main_thread_samples=m.get("main_thread_samples") or 0, main_thread_s=m.get("main_thread_s") or 0.0,
                   states_known=bool(m.get("states_known")), phases=phases, areas=m.get("areas") or {},
                   user_functions=tuple(_user_function(u) for u in m.get("user_functions") or ()))


def _user_function(u: Any) -> UserFunction:
    """Older files (load only, counts x interval, shares of sampled time) read in today's fields."""
    if isinstance(u, Mapping) and "phase" not in u:
        own = u.get("own_s", u.get("self_user_s", 0.0))
        u = {**u, "phase": "load", "seconds": u.get("self_user_s", own), "own_s": own,
             "samples": u.get("own_samples", u.get("self_user_samples", 0)),
             "own_share_of_phase": u.get("own_share_of_load", u.get("share_of_load")),
             "running_s": u.get("self_user_s", own)}
    return _pick(UserFunction, u)


# -------------------------------------------------------------------------------------------------- imports

@dataclass(frozen=True)
class TimedImport:
    """One outermost import the workload triggered: the module, the phase path it ran under, its seconds."""

    module: str = "?"
    phase: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class ImportsView:
    """The ``imports`` probe: the outermost imports timed during the workload's phases (the first ones listed),
    how many there were and their total seconds; each is also an ``import`` phase in the tree."""

    present: bool = False
    imports: tuple[TimedImport, ...] = ()
    count: int = 0
    seconds: float = 0.0

    def slowest_under(self, *phases: str) -> tuple[TimedImport, ...]:
        """The listed imports that ran under any of these phase paths, slowest first."""
        hits = [i for i in self.imports if any(i.phase.startswith(p + "/") for p in phases)]
        return tuple(sorted(hits, key=lambda i: -i.seconds))

    @classmethod
    def of(cls, probes: Mapping[str, Any]) -> "ImportsView":
        present, m, _ = _metrics(probes, "imports")
        return cls(present=present, imports=tuple(_pick(TimedImport, i) for i in m.get("imports") or ()),
                   count=m.get("count") or 0, seconds=m.get("seconds") or 0.0)


# --------------------------------------------------------------------------- generation, allocations (metrics)

@dataclass(frozen=True)
class GenerationView:
    """The measured generate calls (the generation probe files these as trial metrics)."""

    ttft_ms: float | None = None
    decode_tok_s: float | None = None
    decode_tok_s_per_seq: float | None = None
    per_token_ms_p50: float | None = None
    per_token_ms_p90: float | None = None
    per_token_ms_p99: float | None = None
    new_tokens: int | None = None
    generate_call_s: float | None = None
    generate_calls_measured: int | None = None
    generate_calls_warmup: int | None = None
    cold_generate_s: float | None = None
    cold_ttft_ms: float | None = None

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> "GenerationView":
        return _pick(cls, metrics)


@dataclass(frozen=True)
class AllocationSite:
    """One (call site, op) of the traced generate start; ``alive_bytes`` still held at the first token."""

    site: str = "?"
    op: str = ""
    bytes: int = 0
    alive_bytes: int = 0
    count: int = 0
    shape: tuple[int, ...] = ()
    dtype: str = ""
    stack: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "stack", tuple(self.stack))


@dataclass(frozen=True)
class AllocationsView:
    """What the traced generate call allocated at its start and still held at the first token."""

    generate_start_alloc_bytes: int | None = None
    generate_start_alloc_count: int | None = None
    generate_start_alloc_total_bytes: int | None = None
    generate_start_alloc_min_bytes: int | None = None
    generate_start_alloc_sites: tuple[AllocationSite, ...] = ()

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> "AllocationsView":
        base = _pick(cls, {k: v for k, v in metrics.items() if k != "generate_start_alloc_sites"})
        sites = tuple(_pick(AllocationSite, s) for s in metrics.get("generate_start_alloc_sites") or ())
        return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, "generate_start_alloc_sites": sites})


# ------------------------------------------------------------------------------------ machine (harness data)

@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was around the trial (``harness.machine``, measured by the parent): CPU time other
    processes used, hypervisor steal, 1-minute load average. Results from before it read as absent; a figure
    the platform could not read (no ``/proc/stat``) is None."""

    present: bool = False
    loadavg_1m_start: float | None = None
    loadavg_1m_end: float | None = None
    cpu_count: int | None = None
    wall_s: float | None = None
    busy_cpu_s: float | None = None      # every process, system-wide
    worker_cpu_s: float | None = None    # the worker tree (and py-spy), reaped within the interval
    harness_cpu_s: float | None = None   # the parent: loadprof's own threads
    others_cpu_s: float | None = None
    others_cpu_cores: float | None = None
    steal_s: float | None = None
    steal_share: float | None = None     # of wall x cpu_count

    @classmethod
    def of(cls, harness: Mapping[str, Any]) -> "MachineLoad":
        m = harness.get("machine") if isinstance(harness, Mapping) else None
        return _pick(cls, {**m, "present": True}) if isinstance(m, Mapping) else cls()


@dataclass(frozen=True)
class ProbeViews:
    """Every probe's view of one trial: ``trial.views.memory.per_phase["load"]``, ``trial.views.io``, ..."""

    memory: MemoryView
    io: IOView
    load_phases: LoadPhasesView
    sampling: SamplingView
    generation: GenerationView
    allocations: AllocationsView
    machine: MachineLoad = MachineLoad()
    imports: ImportsView = ImportsView()

    @classmethod
    def of(cls, probes: Mapping[str, Any], metrics: Mapping[str, Any],
           harness: Mapping[str, Any] | None = None) -> "ProbeViews":
        return cls(MemoryView.of(probes), IOView.of(probes), LoadPhasesView.of(probes), SamplingView.of(probes),
                   GenerationView.of(metrics), AllocationsView.of(metrics), MachineLoad.of(harness or {}),
                   ImportsView.of(probes))
