"""Each probe's one payload type: built by the probe where it runs, carried as ``to_dict()`` on the events pipe
(or from the parent-side probes directly), read back by the parent with ``from_dict``, and held typed in
``TrialResult.probes`` (metrics-filed ones, the after-workload probes', read from the trial's metrics).
``loadprof.core.probe_registry`` links each probe's name to its type; docs/architecture.md says why here."""

from loadprof.core.payloads.allocations import AllocationSite, AllocationsPayload
from loadprof.core.payloads.bandwidth import BandwidthPayload
from loadprof.core.payloads.base import Payload, PayloadError, Record
from loadprof.core.payloads.cuda_snapshot import CudaSnapshotPayload
from loadprof.core.payloads.imports import ImportsPayload, TimedImport
from loadprof.core.payloads.io import IOPayload, PhaseIO
from loadprof.core.payloads.load_phases import FromPretrainedCall, LoadPhasesPayload
from loadprof.core.payloads.machine import MachinePayload
from loadprof.core.payloads.memory import MemoryPayload, MemoryTimeline, PhaseMemory
from loadprof.core.payloads.sampling import PhaseSamples, SamplingPayload, UserFunction

__all__ = ["AllocationSite", "AllocationsPayload", "BandwidthPayload", "CudaSnapshotPayload", "FromPretrainedCall",
           "ImportsPayload", "IOPayload", "LoadPhasesPayload", "MachinePayload", "MemoryPayload", "MemoryTimeline", "Payload",
           "PayloadError", "PhaseIO", "PhaseMemory", "PhaseSamples", "Record", "SamplingPayload", "TimedImport", "UserFunction"]
