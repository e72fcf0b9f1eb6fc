"""The sampled breakdown shared by the file reports: per trial and phase, the wall seconds the samples saw,
running vs waiting (by kind), and the library areas the running time was in (loadprof.probes.attribution)."""

from __future__ import annotations

from loadprof.core.payloads import SamplingPayload
from loadprof.reports.sections import Table, trial_name
from loadprof.results.model import SweepResult

AREAS_SHOWN = 3


def sampled_table(sweep: SweepResult) -> Table | None:
    """One row per sampled trial and phase (load, warmup, generate and its prefill / decode); None when no
    trial was sampled."""
    rows = []
    for t in sweep.trials:
        sv = t.payload(SamplingPayload)
        for phase, areas in ((sv.areas if sv is not None else None) or {}).items():
            total = sum(areas.values())
            if total <= 0:
                continue
            waits = {k.removeprefix("waiting: "): v for k, v in areas.items() if k.startswith("waiting: ")}
            running = {k: v for k, v in areas.items() if not k.startswith("waiting: ")}
            top = sorted(running.items(), key=lambda kv: -kv[1])[:AREAS_SHOWN]
            rows.append((trial_name(t), phase, f"{total:.2f}", f"{sum(running.values()):.2f}",
                         ", ".join(f"{k} {v:.2f}" for k, v in sorted(waits.items(), key=lambda kv: -kv[1])) or "-",
                         ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top) or "-"))
    if not rows:
        return None
    columns = ("trial", "phase", "sampled s", "running s", "waiting s (kind)", "running in (share of sampled)")
    return Table("where the sampled time went", columns, rows, (False, False, True, True, False, False),
                 "main thread, wall seconds from py-spy stacks joined with /proc thread states",
                 ["areas name the deepest frame's library: 'your code' is your files; 'torch ops' kernels and "
                  "their Python wrappers; 'generation utils' transformers' generate loop"])
