"""Device memory bandwidth by a timed copy: the denominator of the decode roofline.

Decoding one token reads every weight (and the KV cache) once, so tokens/s can be no
better than bandwidth / bytes per step. The copy moves ``nbytes`` from one buffer to
another ``repeats`` times; bandwidth counts read + write (the STREAM "copy" convention).
On CUDA each timing is synchronised. ``BandwidthProbe`` runs both in its own phase ``membw`` after the
measured generate calls, whenever the strategy generates (not selectable in ``probes:``).
"""

from __future__ import annotations

from typing import Any, Callable

from loadprof.probes.base import Probe, ProbeContext

DEFAULT_BYTES = 256 * 2**20


def best_copy_ns(copy: Callable[[], Any], sync: Callable[[], Any], now_ns: Callable[[], int], repeats: int) -> int:
    """The fastest of ``repeats`` timed copies, each waited for; one untimed copy first (page-in, allocation)."""
    copy()
    sync()
    times = []
    for _ in range(repeats):
        t = now_ns()
        copy()
        sync()
        times.append(now_ns() - t)
    return min(times)


def measure_copy_bandwidth(device: Any, now_ns: Callable[[], int], nbytes: int = DEFAULT_BYTES,
                           repeats: int = 5) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    seconds = best_copy_ns(lambda: dst.copy_(src), sync, now_ns, repeats) / 1e9
    return {"membw_gb_s": 2 * nbytes / seconds / 1e9, "membw_bytes": nbytes, "membw_repeats": repeats,
            "membw_device": str(dev), "membw_method": "best of repeats, tensor copy, read+write bytes"}


def measure_h2d_bandwidth(device: Any, now_ns: Callable[[], int], nbytes: int = DEFAULT_BYTES,
                          repeats: int = 5) -> dict[str, Any]:
    """Host -> device copy rate from pageable and from pinned host memory (best of ``repeats``, synchronised).

    The yardstick for the load's own CPU -> GPU transfer: a checkpoint is read into pageable memory, so a
    load can at best move weights at the pageable rate; pinned is what the link gives.
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return {}
    out: dict[str, Any] = {"h2d_bytes": nbytes, "h2d_repeats": repeats, "h2d_device": str(dev),
                           "h2d_method": "best of repeats, host tensor .to(device), synchronised"}
    dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    for kind, pin in (("pageable", False), ("pinned", True)):
        src = torch.ones(nbytes, dtype=torch.uint8, pin_memory=pin)
        best = best_copy_ns(lambda s=src, p=pin: dst.copy_(s, non_blocking=p),
                            lambda: torch.cuda.synchronize(dev), now_ns, repeats)
        out[f"h2d_{kind}_gb_s"] = nbytes / (best / 1e9) / 1e9
    return out


class BandwidthProbe(Probe):
    """Device copy bandwidth (the decode roofline's denominator) and, on CUDA, the host -> device rate (the
    yardstick for the load's own transfer), as trial metrics (``membw_*``, ``h2d_*``)."""

    NAME = "bandwidth"
    AFTER_WORKLOAD_PHASE = "membw"

    def after_workload(self, model: Any, ctx: ProbeContext) -> dict[str, Any]:
        device = getattr(model, "device", "cpu")
        device = "cpu" if str(device) == "meta" else device
        now = ctx.clock.now_ns
        return {**measure_copy_bandwidth(device, now), **measure_h2d_bandwidth(device, now)}

    def stop(self) -> None:
        return None  # nothing under probes: the metrics were filed by the worker after the copy
