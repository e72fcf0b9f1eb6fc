"""Device memory bandwidth by a timed copy: the denominator of the decode roofline.

Decoding one token reads every weight (and the KV cache) once, so tokens/s can be no
better than bandwidth / bytes per step. The copy moves ``nbytes`` from one buffer to
another ``repeats`` times; bandwidth counts read + write (the STREAM "copy" convention).
On CUDA each timing is synchronised. Runs in its own phase ``membw``.
"""

from __future__ import annotations

from typing import Any, Callable

DEFAULT_BYTES = 256 * 2**20


def measure_copy_bandwidth(device: Any, now_ns: Callable[[], int], nbytes: int = DEFAULT_BYTES,
                           repeats: int = 5) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page in / allocate outside the timing
    sync()
    best = None
    for _ in range(repeats):
        t = now_ns()
        dst.copy_(src)
        sync()
        dt = now_ns() - t
        best = dt if best is None else min(best, dt)
    seconds = best / 1e9
    return {"membw_gb_s": 2 * nbytes / seconds / 1e9, "membw_bytes": nbytes, "membw_repeats": repeats,
            "membw_device": str(dev), "membw_method": "best of repeats, tensor copy, read+write bytes"}
