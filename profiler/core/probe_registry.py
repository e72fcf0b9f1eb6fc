"""The one list of loadprof's probes, and the worker's step functions the sampler attributes by.

Pure data, no imports of probes or torch: the spec layer validates a YAML ``probes:`` list against it, the
worker builds its worker probes from it and the runner its parent probes (importing each ``module:Class``
lazily, where it runs), the result model reads each probe's payload by the type named here, the probe table of
the YAML reference (docs/reference/yaml.md) is generated from it, and the parent-side py-spy sampler maps stack
frames to phases with ``WORKER_STEP_PHASES``, which the worker also uses to open those phases (one definition,
not two).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from loadprof.core.payloads import (AllocationsPayload, BandwidthPayload, CudaSnapshotPayload, ImportsPayload,
                                    IOPayload,
                                    LoadPhasesPayload, MachinePayload, MemoryPayload, Payload, SamplingPayload)


@dataclass(frozen=True)
class ProbeEntry:
    """One probe: its result name, where its class lives, where it runs, whether ``probes:`` selects it, and the
    one payload type it files (the class's ``PAYLOAD``)."""

    name: str  # the class's NAME; results land in TrialResult.probes[name] (or as trial metrics: payload.FILED)
    target: str  # "module:Class", imported only where the probe runs
    runs_in: Literal["worker", "parent"]  # parent: the runner runs it beside the worker (probes.base.ParentProbe)
    selectable: bool  # may a YAML ``probes:`` list name it? Not selectable: turned on as the description says
    description: str  # one line, shown in the probe table of docs/reference/yaml.md
    payload: type[Payload]

    def load(self) -> Any:
        """The class ``target`` names, imported now (probes load lazily, where they run)."""
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


#: Order matters: ``probes:`` error messages list the selectable names in this order, the worker runs the
#: after-workload steps in this order (the allocation trace before the bandwidth copy), and the runner starts the
#: parent probes in this order and stops them in reverse (the machine's window holds py-spy's whole life).
REGISTRY: tuple[ProbeEntry, ...] = (
    ProbeEntry("phases", "loadprof.probes.load_phases:LoadPhasesProbe", "worker", True,
               "named steps inside from_pretrained (config, weights, materialize, ...) by wrapping transformers "
               "functions; every from_pretrained call's kwargs; materialize thread time", LoadPhasesPayload),
    ProbeEntry("memory", "loadprof.probes.memory:MemoryProbe", "worker", True,
               "per phase: start/end/peak RSS (anonymous vs file-backed), page faults, CUDA allocator figures; "
               "memory_timeline.json", MemoryPayload),
    ProbeEntry("io", "loadprof.probes.io:IOProbe", "worker", True,
               "per phase: bytes read from storage (/proc/self/io read_bytes) and read() chars", IOPayload),
    ProbeEntry("allocations", "loadprof.probes.allocations:AllocationsProbe", "worker", True,
               "after the measured generate calls, one traced generate stopped at its first token (phase trace): "
               "what it allocated before that token, by call site", AllocationsPayload),
    ProbeEntry("cuda_snapshot", "loadprof.probes.cuda_snapshot:CudaSnapshotProbe", "worker", True,
               "opt-in CUDA memory history of the whole trial, written to cuda_snapshot.pickle "
               "(pytorch.org/memory_viz)", CudaSnapshotPayload),
    ProbeEntry("bandwidth", "loadprof.probes.bandwidth:BandwidthProbe", "worker", False,
               "device copy bandwidth and, on CUDA, host-to-device rates (phase membw; measured by a sweep's first "
               "trial on a device, reused by its later ones with membw_source); not selectable: runs whenever "
               "the strategy generates", BandwidthPayload),
    ProbeEntry("imports", "loadprof.probes.imports:ImportsProbe", "worker", False,
               "each import the workload triggers (the model's modeling module inside the first from_pretrained, a "
               "tokenizer's, your loader's), outermost ones only, as a child phase `lazy_import` of the phase it ran "
               "in; not selectable: always on", ImportsPayload),
    ProbeEntry("machine", "loadprof.probes.machine:MachineProbe", "parent", False,
               "how busy the machine was around each trial (others' CPU time, steal, load average from /proc); "
               "not selectable: runs for every trial", MachinePayload),
    ProbeEntry("sampling", "loadprof.probes.sampling:SamplingProbe", "parent", False,
               "py-spy sampling of the worker from outside: time by phase, top functions, your own functions; "
               "not selectable: turned on by sampling_hz (on by default for a custom loader)", SamplingPayload),
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


def payload_type(name: str) -> type[Payload] | None:
    """The payload type of the probe called ``name`` (None: no such probe in this version)."""
    return next((e.payload for e in REGISTRY if e.name == name), None)


def parent_probes() -> tuple[ProbeEntry, ...]:
    """The probes the runner runs beside the worker, in registry order (each decides if a strategy wants it)."""
    return tuple(e for e in REGISTRY if e.runs_in == "parent")


def worker_probes(selected: Iterable[str]) -> tuple[ProbeEntry, ...]:
    """The worker's probes for a ``probes:`` list: the selected ones in the list's order (each once), then
    every worker probe that is not selectable (always on), in registry order."""
    by_name = {e.name: e for e in REGISTRY if e.runs_in == "worker"}
    chosen = [by_name[n] for n in dict.fromkeys(selected) if n in by_name and by_name[n].selectable]
    return tuple(chosen + [e for e in by_name.values() if not e.selectable])
