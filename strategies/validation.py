"""Post-load meta-device validation, the way users' ModelManagers do it.

The user's notes: a loader that walked *every* module checking for parameters
left on the meta device cost ~170 s of a 181 s load; sampling the first and
last 10 modules cost nothing measurable. The modes here reproduce those
choices so their cost can be measured side by side:

- ``none``      no check.
- ``sample:k``  the first k and last k modules (k = 10 when omitted).
- ``full``      every module and every parameter/buffer (device check only).
- ``deep``      like full, and touches each tensor's data (forces every page in).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class ValidationReport:
    mode: str
    modules_checked: int
    tensors_checked: int
    meta_tensors: tuple[str, ...]
    bytes_touched: int
    per_module_median_ns: int
    per_module_max_ns: int
    total_ns: int

    def to_metrics(self) -> dict[str, Any]:
        return {
            "validation_mode": self.mode,
            "validation_modules_checked": self.modules_checked,
            "validation_tensors_checked": self.tensors_checked,
            "validation_meta_tensors": len(self.meta_tensors),
            "validation_meta_examples": list(self.meta_tensors[:10]),
            "validation_bytes_touched": self.bytes_touched,
            "validation_per_module_median_ms": self.per_module_median_ns / 1e6,
            "validation_per_module_max_ms": self.per_module_max_ns / 1e6,
            "validation_total_ms": self.total_ns / 1e6,
        }


def mapped_device(name: str, device_map: Mapping[str, Any]) -> str | None:
    """The device_map entry that covers ``name`` (longest matching prefix; '' covers everything)."""
    best, best_len = None, -1
    for prefix, dev in device_map.items():
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = str(dev), len(prefix)
    return best


def offloaded(name: str, device_map: Mapping[str, Any]) -> bool:
    """Is ``name`` offloaded, so that its tensor lives on the meta device by design?

    accelerate keeps an offloaded module's weights out of the module (in a weights map on CPU or on disk) and
    brings them in at each forward: true for every "disk" entry, and for "cpu" entries of a map that also
    names a GPU (seen on an H200 with transformers 5.17: all 277 tensors of 23 CPU layers were on meta). A map
    of CPU entries alone is no offload: those tensors hold their data.
    """
    target = mapped_device(name, device_map)
    if target == "disk":
        return True
    has_gpu = any(str(d) not in ("cpu", "disk", "meta") for d in device_map.values())
    return target == "cpu" and has_gpu


def select_modules(named: list[tuple[str, Any]], mode: str, k: int) -> list[tuple[str, Any]]:
    if mode == "sample":
        if len(named) <= 2 * k:
            return named
        return named[:k] + named[-k:]
    return named


def validate(model: Any, mode: str, k: int, now_ns: Callable[[], int]) -> ValidationReport:
    """Check ``model`` per ``mode``; per-module timings come from the trial clock ``now_ns``."""
    import torch

    dm = getattr(model, "hf_device_map", None) or {}
    named = list(model.named_modules())
    chosen = select_modules(named, mode, k)
    deep = mode == "deep"
    recurse = mode == "sample"  # a sampled module is checked with its subtree, as users' samplers do
    meta: list[str] = []
    tensors = touched = 0
    costs: list[int] = []
    t_start = now_ns()
    with torch.inference_mode():
        for name, module in chosen:
            t = now_ns()
            tensors_here = [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]
            for pname, p in tensors_here:
                tensors += 1
                full = f"{name}.{pname}" if name else pname
                if p.device.type == "meta":
                    if not (dm and offloaded(full, dm)):
                        meta.append(full)
                elif deep and p.numel():
                    p.detach().view(-1)[:: max(1, 4096 // max(1, p.element_size()))].sum().item()
                    touched += p.numel() * p.element_size()
            costs.append(now_ns() - t)
    total = now_ns() - t_start
    return ValidationReport(
        mode=f"{mode}:{k}" if mode == "sample" else mode,
        modules_checked=len(chosen),
        tensors_checked=tensors,
        meta_tensors=tuple(sorted(set(meta))),
        bytes_touched=touched,
        per_module_median_ns=int(statistics.median(costs)) if costs else 0,
        per_module_max_ns=max(costs) if costs else 0,
        total_ns=total,
    )
