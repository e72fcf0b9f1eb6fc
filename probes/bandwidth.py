"""Device memory bandwidth by a timed copy: the denominator of the decode roofline.

Decoding one token reads every weight (and the KV cache) once, so tokens/s can be no
better than bandwidth / bytes per step. The copy moves ``nbytes`` from one buffer to
another ``repeats`` times; bandwidth counts read + write (the STREAM "copy" convention).
On CUDA each timing is synchronised. ``BandwidthProbe`` runs both in its own phase ``membw`` after the
measured generate calls, whenever the strategy generates (not selectable in ``probes:``). For a float16 or
bfloat16 model on CPU it also times a small square matmul in float32 and in the model's dtype (about 0.1 s):
a CPU without fast half-precision kernels runs the half type slower than float32, whatever the bytes saved.

The copy rates belong to the device, not to the trial: the first trial of a sweep on a device measures them
(and files ``membw_scope``: the device on this host, behind its CUDA_VISIBLE_DEVICES), later trials receive
them through ``ProbeContext.constants`` (loadprof.run.runner.SweepConstants) and skip the copies (about 1 s on
CPU), filing the same figures with ``membw_source`` / ``h2d_source`` = "trial <id>" that measured them. The
``membw`` phase is still opened (near zero then), so a trial's phases are the same either way.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Callable, Mapping

from loadprof.core.payloads import BandwidthPayload
from loadprof.probes.base import Probe, ProbeContext

DEFAULT_BYTES = 256 * 2**20


def best_copy_ns(copy: Callable[[], Any], sync: Callable[[], Any], now_ns: Callable[[], int], repeats: int,
                 budget_ns: int | None = None) -> int:
    """The fastest of ``repeats`` timed copies, each waited for; one untimed copy first (page-in, allocation).
    With ``budget_ns``, repeating stops once the timed copies have taken that long (at least one is timed)."""
    copy()
    sync()
    times: list[int] = []
    for _ in range(repeats):
        t = now_ns()
        copy()
        sync()
        times.append(now_ns() - t)
        if budget_ns is not None and sum(times) >= budget_ns:
            break
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


HALF_DTYPES = ("float16", "bfloat16")
MATMUL_N = 384  # 2 x 384^3 = 0.11 GFLOP per call: tens of ms where a half type has no fast CPU kernel
MATMUL_BUDGET_NS = 25_000_000  # timed calls per dtype stop after this long


def floating_dtype(model: Any) -> str | None:
    """The floating-point dtype holding most of the model's parameter bytes (None: no floating parameters)."""
    by_dtype: dict[str, int] = {}
    for p in getattr(model, "parameters", lambda: ())():
        if p.is_floating_point():
            name = str(p.dtype).removeprefix("torch.")
            by_dtype[name] = by_dtype.get(name, 0) + p.numel() * p.element_size()
    return max(by_dtype, key=by_dtype.__getitem__) if by_dtype else None


def measure_matmul(dtype: str, now_ns: Callable[[], int], n: int = MATMUL_N, repeats: int = 10) -> dict[str, Any]:
    """CPU square matmul rate in float32 and in ``dtype`` (best of up to ``repeats`` torch.mm after one untimed
    call, within a time budget per dtype): whether this CPU has fast kernels for the model's half type. Many short
    calls, best kept: beside a busy neighbour one call of a few ms can wait a whole time slice for a thread, and a
    float32 rate read from such a call would hide a slow half type."""
    import torch

    rates = {}
    for name in ("float32", dtype):
        a = torch.ones(n, n, dtype=getattr(torch, name))
        b = torch.ones(n, n, dtype=a.dtype)
        best = best_copy_ns(lambda: torch.mm(a, b), lambda: None, now_ns, repeats, MATMUL_BUDGET_NS)
        rates[name] = 2 * n**3 / (max(best, 1) / 1e9) / 1e9
    return {"matmul_gflops": rates, "matmul_method": f"torch.mm {n}x{n} on CPU, best of up to {repeats} calls "
            f"within {MATMUL_BUDGET_NS / 1e6:.0f} ms after one untimed call, 2 x n^3 flops, "
            f"{torch.get_num_threads()} threads"}


def device_scope(device: Any) -> str:
    """The device a copy rate belongs to: never reused for another machine, or another GPU behind the same index."""
    dev = str(device)
    scope = f"{dev}@{platform.node()}"
    if dev.startswith("cuda"):
        scope += f" CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
    return scope


def reused(known: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier trial's copy rates ({"trial": id, "figures": {...}}) as this trial's metrics, saying whence."""
    figures = dict(known["figures"])
    source = f"trial {known['trial']}"
    figures["membw_source"] = source
    if any(k.startswith("h2d_") for k in figures):
        figures["h2d_source"] = source
    return figures


class BandwidthProbe(Probe):
    """Device copy bandwidth (the decode roofline's denominator) and, on CUDA, the host -> device rate (the
    yardstick for the load's own transfer), as trial metrics (``membw_*``, ``h2d_*``), or an earlier trial's on the
    same device; for a float16/bfloat16 model on CPU also the matmul rate in that dtype against float32
    (``matmul_*``, per trial: it depends on the model's dtype)."""

    NAME = "bandwidth"
    PAYLOAD = BandwidthPayload  # filed as trial metrics by the worker after the copy
    AFTER_WORKLOAD_PHASE = "membw"

    def after_workload(self, model: Any, ctx: ProbeContext) -> BandwidthPayload:
        device = getattr(model, "device", "cpu")
        device = "cpu" if str(device) == "meta" else device
        now = ctx.clock.now_ns
        scope = device_scope(device)
        known = (ctx.constants.get("bandwidth") or {}).get(scope)
        if known:  # measured by an earlier trial of this sweep on this device
            out = reused(known)
        else:
            out = {**measure_copy_bandwidth(device, now), **measure_h2d_bandwidth(device, now), "membw_scope": scope}
        dtype = floating_dtype(model) if str(device) == "cpu" else None
        if dtype in HALF_DTYPES:  # a half type on CPU: does it run at float32's rate here? (measured, not assumed)
            out.update(measure_matmul(dtype, now))
        return BandwidthPayload.from_dict(out, self.NAME)
