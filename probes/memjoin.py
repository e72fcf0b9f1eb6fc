"""Which user call added the memory: the memory probe's anonymous-RSS timeline joined with the sampled stacks on
the trial's clock.

The memory probe reads anon RSS every 10 ms (``memory_timeline.json`` in the trial folder, every reading; the
payload keeps a thinned copy); each sampled main-thread stack says which user function and call ran at its
time. Each timeline step's growth is given to the call sampled nearest the step's middle (none when no sample is
within ``max_gap_s``: growth in a gap is left unattributed rather than guessed). ``added_bytes``: the positive
steps given to a call. ``held_bytes``: of that, what the phase never gave back after the call began (the lowest
anon RSS from the call's last growth to the phase's end, minus the anon RSS before its first growth, capped by
what it added); RSS cannot tell whose bytes a later free returned, so when a later call also grew and then an
earlier copy was freed, ``held_bytes`` is an upper bound. Where CUDA was initialised the timeline also holds the
allocator's bytes over every device, joined the same way (``added_cuda_bytes`` / ``held_cuda_bytes``).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from loadprof.probes.callees import Breakdown

MAX_GAP_S = 0.05


def timeline_series(trial_dir: str | Path | None, received: Iterable[Mapping[str, Any]]
                    ) -> dict[str, list[tuple[float, int]]]:
    """(t_s, bytes) readings per memory kind: ``anon`` (anonymous RSS) always, ``cuda`` (allocator bytes, every
    device) where the timeline has that column: the trial folder's full timeline, else the probe's thinned one."""
    path = Path(trial_dir) / "memory_timeline.json" if trial_dir else None
    doc: Mapping[str, Any] = {}
    try:
        if path is not None and path.is_file():
            doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, Mapping) or not doc.get("rows"):
        ev = next((e for e in received if e.get("type") == "probe" and e.get("name") == "memory"), None)
        doc = ((ev or {}).get("payload") or {}).get("timeline") or {}
    rows, columns = doc.get("rows") or (), list(doc.get("columns") or ())
    out = {"anon": [(float(r[0]), int(r[1])) for r in rows if len(r) >= 2]}
    if "cuda_allocated_bytes" in columns:
        i = columns.index("cuda_allocated_bytes")
        out["cuda"] = [(float(r[0]), int(r[i])) for r in rows if len(r) > i]
    return out


def join(bd: Breakdown, timed: Sequence[tuple[float, Any, tuple[str, int]]], rows: Sequence[tuple[float, int]],
         phase_end: Mapping[str, float], max_gap_s: float = MAX_GAP_S, kind: str = "anon") -> None:
    """Fill the added/held bytes of ``kind`` (``anon``: RSS, ``cuda``: the allocator) of ``bd``'s rows from
    ``rows``; ``timed``: (t_s, (function key, phase), call) per main-thread sample with a user frame, any order;
    ``phase_end``: each top phase's end."""
    if len(rows) < 2 or not timed:
        return
    timed = sorted(timed, key=lambda x: x[0])
    times = [t for t, _, _ in timed]
    seen: dict[tuple[Any, tuple[str, int]], list[int]] = {}  # -> [added, first step index, last step index]
    for i in range(1, len(rows)):
        delta = rows[i][1] - rows[i - 1][1]
        if delta <= 0:
            continue
        mid = (rows[i - 1][0] + rows[i][0]) / 2
        j = bisect.bisect_left(times, mid)
        near = min((k for k in (j - 1, j) if 0 <= k < len(times)), key=lambda k: abs(times[k] - mid))
        if abs(times[near] - mid) > max_gap_s + (rows[i][0] - rows[i - 1][0]) / 2:
            continue
        _, key, call = timed[near]
        acc = seen.setdefault((key, call), [0, i, i])
        acc[0] += delta
        acc[2] = i
    ts = [r[0] for r in rows]
    for (key, call), (added, first, last) in seen.items():
        row = bd.rows[key][call]
        end = bisect.bisect_right(ts, phase_end.get(key[1], ts[-1]))
        low = min((r[1] for r in rows[last:max(end, last + 1)]), default=rows[last][1])
        row.memory[kind] = (added, max(0, min(added, low - rows[first - 1][1])))
