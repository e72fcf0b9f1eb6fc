"""Where ``device_map`` puts a model's bytes: per device, module by module (pure: sizes from the byte model).

Why: ``loadprof predict`` answers "will ``device_map=auto`` spill, and where?" before anything is loaded; the
order and headroom follow accelerate's own placement, so the bytes per device are what a real load would put there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from loadprof.analysis.estimate import SizeEstimate

#: a budget leaves this share of a device's free memory unused (accelerate's own headroom for activations)
HEADROOM = 0.10


@dataclass(frozen=True)
class Placement:
    """Bytes per device under the device map (``disk``: offloaded), and whether it had to spill."""

    bytes_by_device: Mapping[str, int]
    spilled: bool
    note: str = ""



def modules(e: SizeEstimate) -> list[tuple[str, int]]:
    """The model as a device map places it, in order: input embeddings, each decoder layer, the rest (final norm,
    an untied lm_head); sizes from the byte model."""
    layers = max(e.num_layers, 0)
    emb = e.embedding_bytes
    rest = max(e.weight_bytes + e.buffers_bytes - emb - layers * e.per_layer_bytes, 0)
    return [("embed", emb)] + [(f"layer.{i}", e.per_layer_bytes) for i in range(layers)] + [("rest", rest)]


def place(e: SizeEstimate, device_map: str, budgets: Mapping[str, int]) -> Placement:
    """Bytes per device under ``device_map``: one device takes everything (``cpu``, ``cuda:N``); ``auto`` fills the
    GPUs, then the host, then disk, module by module in order, each up to (1 - HEADROOM) of its free memory
    (``budgets``: free bytes per device, GPUs first), reserving the largest module on the first GPU when anything
    spills (accelerate keeps room to bring an offloaded layer in)."""
    total = e.weight_bytes + e.buffers_bytes
    if device_map != "auto":
        dev = "cuda:0" if device_map == "cuda" else device_map
        free = budgets.get(dev)
        note = (f"needs {total:,} B, {free:,} B free on {dev}: will not fit" if free is not None and total > free
                else "")
        return Placement({dev: total}, False, note)
    mods = modules(e)
    room = {d: int(b * (1 - HEADROOM)) for d, b in budgets.items()}
    gpus = [d for d in room if d.startswith("cuda")]
    if gpus and total > sum(room[d] for d in gpus):
        room[gpus[0]] -= max(b for _, b in mods)
    out: dict[str, int] = {}
    order = list(room) + ["disk"]
    i = 0
    for _, size in mods:
        while order[i] != "disk" and room[order[i]] < size:
            i += 1
        dev = order[i]
        out[dev] = out.get(dev, 0) + size
        if dev != "disk":
            room[dev] -= size
    spilled = len(out) > 1 or "disk" in out
    note = ", ".join(f"{d} {b:,} B" for d, b in out.items()) if spilled else ""
    return Placement(out, spilled, f"spills: {note}" if note else "")


def device_of(device_map: str, budgets: Mapping[str, int]) -> str:
    """Where the compute runs: cuda when the map names a GPU, or is ``auto`` with a GPU present."""
    if device_map.startswith("cuda") or (device_map == "auto" and any(d.startswith("cuda") for d in budgets)):
        return "cuda"
    return "cpu"
