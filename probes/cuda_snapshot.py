"""Opt-in CUDA memory-history snapshot (``probes: [..., cuda_snapshot]``).

Records every CUDA allocation with its stack for the whole trial and writes
``cuda_snapshot.pickle`` into the trial folder: drop it on pytorch.org/memory_viz
to see which phase allocated what. Recording costs time, so it is off by
default. Skipped, with the reason, where CUDA is not available.
"""

from __future__ import annotations

from pathlib import Path

from loadprof.core.payloads import CudaSnapshotPayload
from loadprof.probes.base import Probe, ProbeContext, ProbeResult

MAX_ENTRIES = 200_000
FILE = "cuda_snapshot.pickle"


class CudaSnapshotProbe(Probe):
    NAME = "cuda_snapshot"
    PAYLOAD = CudaSnapshotPayload

    def unavailable(self, ctx: ProbeContext) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        if not hasattr(torch.cuda.memory, "_record_memory_history"):
            return f"torch {torch.__version__} has no CUDA memory-history recorder"
        return None

    def start(self, ctx: ProbeContext) -> None:
        import torch

        self.ctx = ctx
        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES)

    def stop(self) -> ProbeResult:
        import torch

        path = Path(self.ctx.trial_dir) / FILE
        notes: tuple[str, ...] = ()
        artifacts: dict[str, str] = {}
        try:
            torch.cuda.memory._dump_snapshot(str(path))
            artifacts["cuda_snapshot"] = FILE
        except Exception as e:  # noqa: BLE001 - a failed dump must not fail the trial
            notes = (f"could not write the CUDA snapshot: {type(e).__name__}: {e}",)
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        return ProbeResult(CudaSnapshotPayload(max_entries=MAX_ENTRIES), notes=notes, artifacts=artifacts)
