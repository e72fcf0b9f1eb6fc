"""The one list of loadprof's probes, and the worker's step functions the sampler attributes by.

Pure data, no imports of probes or torch: the spec layer validates a YAML ``probes:`` list against it, the
worker builds its probes from it (importing each ``module:Class`` lazily, in the worker only), the probe
table of the YAML reference (docs/reference/yaml.md) is generated from it, and the parent-side py-spy sampler
maps stack frames to phases with ``WORKER_STEP_PHASES``, which the worker also uses to open those phases (one
definition, not two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal


@dataclass(frozen=True)
class ProbeEntry:
    """One probe: its result name, where its class lives, where it runs and whether ``probes:`` selects it."""

    name: str  # the class's NAME; results land in TrialResult.probes[name] (or as trial metrics, see below)
    target: str  # "module:Class", imported only where the probe runs
    runs_in: Literal["worker", "parent"]
    selectable: bool  # may a YAML ``probes:`` list name it? Not selectable: turned on as the description says
    description: str  # one line, shown in the probe table of docs/reference/yaml.md


#: Order matters: ``probes:`` error messages list the selectable names in this order, and the worker runs the
#: after-workload steps in this order (the allocation trace before the bandwidth copy).
REGISTRY: tuple[ProbeEntry, ...] = (
    ProbeEntry("phases", "loadprof.probes.load_phases:LoadPhasesProbe", "worker", True,
               "named steps inside from_pretrained (config, weights, materialize, ...) by wrapping transformers "
               "functions; every from_pretrained call's kwargs; materialize thread time"),
    ProbeEntry("memory", "loadprof.probes.memory:MemoryProbe", "worker", True,
               "per phase: start/end/peak RSS (anonymous vs file-backed), page faults, CUDA allocator figures; "
               "memory_timeline.json"),
    ProbeEntry("io", "loadprof.probes.io:IOProbe", "worker", True,
               "per phase: bytes read from storage (/proc/self/io read_bytes) and read() chars"),
    ProbeEntry("allocations", "loadprof.probes.allocations:AllocationsProbe", "worker", True,
               "after the measured generate calls, one traced generate stopped at its first token (phase trace): "
               "what it allocated before that token, by call site"),
    ProbeEntry("cuda_snapshot", "loadprof.probes.cuda_snapshot:CudaSnapshotProbe", "worker", True,
               "opt-in CUDA memory history of the whole trial, written to cuda_snapshot.pickle "
               "(pytorch.org/memory_viz)"),
    ProbeEntry("bandwidth", "loadprof.probes.bandwidth:BandwidthProbe", "worker", False,
               "device copy bandwidth and, on CUDA, host-to-device rates (phase membw; measured by a sweep's first "
               "trial on a device, reused by its later ones with membw_source); not selectable: runs whenever "
               "the strategy generates"),
    ProbeEntry("sampling", "loadprof.probes.sampling:Sampler", "parent", False,
               "py-spy sampling of the worker from outside: time by phase, top functions, your own functions; "
               "not selectable: turned on by sampling_hz (on by default for a custom loader)"),
)

#: what a YAML ``probes:`` list may name (strategies.model validates against this)
SELECTABLE: tuple[str, ...] = tuple(e.name for e in REGISTRY if e.selectable)

#: (worker function name, top-level phase it runs in). The worker opens each of these phases by its step
#: function's name through this table; the sampler matches py-spy frames by the same names.
WORKER_STEP_PHASES: tuple[tuple[str, str], ...] = (
    ("import_stack", "import"), ("step_load", "load"), ("step_validate", "validate"),
    ("step_warmup", "warmup"), ("step_generate", "generate"),
)


def entry(name: str) -> ProbeEntry:
    """The registry entry called ``name`` (KeyError when there is none)."""
    for e in REGISTRY:
        if e.name == name:
            return e
    raise KeyError(name)


def worker_probes(selected: Iterable[str]) -> tuple[ProbeEntry, ...]:
    """The worker's probes for a ``probes:`` list: the selected ones in the list's order (each once), then
    every worker probe that is not selectable (always on), in registry order."""
    by_name = {e.name: e for e in REGISTRY if e.runs_in == "worker"}
    chosen = [by_name[n] for n in dict.fromkeys(selected) if n in by_name and by_name[n].selectable]
    return tuple(chosen + [e for e in by_name.values() if not e.selectable])
