"""The sampling probe's payload (parent side, loadprof.probes.sampling + attribution): py-spy samples joined with
thread states, attributed to phases, library areas and the user's own functions. Seconds are wall seconds.

Not sampled (py-spy missing, ptrace refused) or not attributed: ``ok`` False and every attribution field None.
Tables analysis does not read (threads, top functions, worker threads) are typed as plain JSON objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from loadprof.core.payloads.base import Payload, Record


@dataclass(frozen=True)
class Callee(Record):
    """One call a user function made outside the user's own files (loadprof.probes.callees), with the user's
    line that makes it: the seconds it held, and the anonymous memory it added (loadprof.probes.memjoin)."""

    name: str                    # public name: `copy.deepcopy`, `AutoModel.from_config`, `torch.Tensor.clone`
    line: int                    # the user's line that makes the call
    seconds: float
    samples: int = 0
    module: str = ""             # the callee's module where it was a sampled Python frame
    how: str = "frame"           # 'frame': a sampled Python frame; 'line': read off the user's source line
    own_s: float = 0.0           # the part outside named sub-phases (as UserFunction.own_s)
    decode_s: float = 0.0        # the part inside generate's decode steps (as UserFunction.decode_s)
    running_s: float = 0.0
    waits: Mapping[str, float] | None = None
    cpu_wait_s: float | None = None  # runnable, not on a CPU (another process held it); None in older files
    added_bytes: int | None = None  # None: no memory timeline joined
    held_bytes: int | None = None   # of added_bytes, still resident at the end of the phase (an upper bound)
    added_cuda_bytes: int | None = None  # the CUDA allocator's bytes the call added (every device); None: no CUDA
    held_cuda_bytes: int | None = None   # of those, still allocated at the end of the phase (an upper bound)

    @property
    def waiting_s(self) -> float:
        return sum((self.waits or {}).values())


@dataclass(frozen=True)
class UserFunction(Record):
    """One function of the user's code in one top-level phase, from the samples whose deepest user frame it is
    (its own time plus the library code it called), running or waiting."""

    name: str
    file: str
    line: int | None
    phase: str                   # top-level phase
    samples: int
    seconds: float
    own_s: float                 # outside every named sub-phase (in the load: outside transformers' steps)
    running_s: float
    waiting_s: float | None = None  # None: thread states were not read (files before they were)
    waits: Mapping[str, float] | None = None  # wait kind -> seconds
    unknown_state_s: float | None = None
    cpu_wait_s: float | None = None  # runnable, not on a CPU: another process held it (None in older files)
    inclusive_s: float | None = None
    decode_s: float | None = None
    share_of_phase: float | None = None      # of the phase's wall time
    own_share_of_phase: float | None = None
    share_of_decode: float | None = None     # of generate's decode wall time
    hottest_line: int | str | None = None
    callees: tuple[Callee, ...] | None = None  # most seconds first; None in files before the breakdown

    @property
    def main_wait(self) -> str | None:
        waits = self.waits or {}
        return max(waits, key=lambda k: waits[k]) if waits else None


@dataclass(frozen=True)
class PhaseSamples(Record):
    """What the main thread's samples saw in one phase path, outside its child phases."""

    seconds: float
    samples: int
    inclusive_s: float
    running_s: float
    waiting_s: float
    waits: Mapping[str, float]
    unknown_state_s: float
    top: tuple[Mapping[str, Any], ...]  # [{function, state, seconds}], most seconds first
    cpu_wait_s: float | None = None       # runnable, not on a CPU (another process held it); None in older files
    wall_s: float | None = None           # None: no phase of the tree at this path
    share_of_phase: float | None = None


@dataclass(frozen=True)
class SamplingPayload(Payload):
    PROBE = "sampling"

    ok: bool
    wall_s: float | None = None  # py-spy's own run, start to exit
    rate_hz: float | None = None
    samples_total: int | None = None
    main_thread_samples: int | None = None
    main_thread_s: float | None = None
    effective_rate_hz: float | None = None
    states_known: bool | None = None
    phase_source: str | None = None
    threads: tuple[Mapping[str, Any], ...] | None = None
    materialize_lines: Mapping[str, Mapping[str, int]] | None = None
    phases: Mapping[str, PhaseSamples] | None = None
    worker_threads: Mapping[str, Mapping[str, Any]] | None = None
    areas: Mapping[str, Mapping[str, float]] | None = None  # phase -> library area -> seconds
    top_functions: Mapping[str, tuple[Mapping[str, Any], ...]] | None = None
    user_functions: tuple[UserFunction, ...] | None = None

    def user_functions_in(self, phase: str) -> tuple[UserFunction, ...]:
        return tuple(u for u in self.user_functions or () if u.phase == phase)
