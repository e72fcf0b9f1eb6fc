"""The GPU kit's checks of ``load.method`` (the gpu-loading-methods sweep) and of the stopwatch step; check.py runs
them with its own and renders them in one table.

- each method: every trial ok on CUDA and, for the state-dict methods, logits equal to from_pretrained's to the bit;
  a method loadprof skipped (its package did not import there) is reported ``skipped`` with loadprof's reason, and
  fails like any check that did not pass;
- every trial of the sweep held against its read bound (``load_gb_s``, ``load_bound_fraction``), the state-dict
  methods with their bytes per step (``load_bytes_by_step``);
- the place step (runai reads into CPU memory) against the pageable host -> device rate measured in the same trial
  (``load_place_fraction``), and no place step for the readers that read straight onto the GPU;
- the stopwatch (benchmarks/stopwatch.py --device cuda): loadprof's real load cost, TTFT and decode against a plain
  script's, informational (a timing ratio of 3 fresh processes a side is not a gate).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from loadprof.core import figures  # torch-free: the catalogue of figures
from run import STOPWATCH  # beside this file: the stopwatch step's folder under WORK (standard library only)

if TYPE_CHECKING:
    from check import Checks

METHODS_SWEEP = "gpu-loading-methods"
#: the methods the sweep runs, in its order: one check each, so a method that never ran cannot pass unseen
KIT_METHODS = ("from_pretrained", "safetensors", "fastsafetensors", "runai", "instanttensor")
#: methods whose reader puts the tensors straight onto the target device: no ``place`` step
DIRECT = ("safetensors", "fastsafetensors", "instanttensor")
LOGITS_EQUAL = "equal to from_pretrained"  # loadprof.strategies.loaders.check_logits


def method_of(t: dict[str, Any]) -> str:
    return t["strategy"]["load"].get("method") or "from_pretrained"


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "-"


def check_method(c: Checks, sweep: dict[str, Any] | None, method: str) -> None:
    """One method's trials: all ok, logits equal to from_pretrained's (state-dict methods), or skipped/failed."""
    name = f"load.method {method}: every trial ok on CUDA" + (
        "" if method == "from_pretrained" else ", logits equal to from_pretrained's")
    trials = [t for t in (sweep or {}).get("trials", []) if method_of(t) == method]
    if not trials:
        c.add(name, None, "the loading_methods sweep did not run" if sweep is None else f"no {method} trial ran")
        return
    skipped = [t for t in trials if t["status"] == "skipped"]
    if skipped:
        c.skipped(name, f"{len(skipped)}/{len(trials)} trials skipped by loadprof: {skipped[0].get('reason') or '?'}")
        return
    ok = [t for t in trials if t["status"] == "ok"]
    bad = [f"{t['label']}: {t['status']} ({(t.get('reason') or '')[:200]})" for t in trials if t["status"] != "ok"]
    if method != "from_pretrained":
        bad += [f"{t['label']}: logits_check {t['metrics'].get('logits_check')!r}" for t in ok
                if t["metrics"].get("logits_check") != LOGITS_EQUAL]
    diffs = [t["metrics"]["logits_max_abs_diff"] for t in ok if t["metrics"].get("logits_max_abs_diff") is not None]
    costs = [v for t in ok if (v := figures.LOAD_COST_S.read(t["metrics"])) is not None]
    ev = (f"{len(ok)}/{len(trials)} trials ok ({', '.join(sorted({t['strategy']['load']['file_cache'] for t in ok}))})"
          + (f", logits {LOGITS_EQUAL} (max |diff| {max(diffs):g})" if diffs else "")
          + f", real load cost median {_median(costs)} s")
    c.add(name, not bad, ev + ("; " + "; ".join(bad) if bad else ""))


def check_methods(c: Checks, sweeps: dict[str, Any]) -> None:
    for method in KIT_METHODS:
        check_method(c, sweeps.get(METHODS_SWEEP), method)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and x > 0 and math.isfinite(x)


def check_load_bounds(c: Checks, sweeps: dict[str, Any]) -> None:
    """Every ok trial of the sweep: load GB/s and its fraction of the read bound; bytes per step for the
    state-dict methods (read and assign at least)."""
    name = "load.method: load GB/s against the read bound (load_gb_s, load_bound_fraction), bytes per step"
    ok = [t for t in sweeps.get(METHODS_SWEEP, {}).get("trials", []) if t["status"] == "ok"]
    if not ok:
        c.add(name, None, "no ok trial of the loading_methods sweep")
        return
    bad, ev, seen = [], [], set()
    for t in ok:
        m = t["metrics"]
        rate, frac = figures.LOAD_GB_S.read(m), figures.LOAD_BOUND_FRACTION.read(m)
        steps = m.get("load_bytes_by_step") or {}
        if not (_positive(rate) and _positive(frac)):
            bad.append(f"{t['label']}: load_gb_s {rate}, load_bound_fraction {frac}")
        if method_of(t) != "from_pretrained" and not {"read", "assign"} <= set(steps):
            bad.append(f"{t['label']}: load_bytes_by_step {steps}")
        if t["label"] not in seen and _positive(rate) and _positive(frac):
            seen.add(t["label"])
            by_step = ", ".join(f"{k} {v:.1f}" for k, v in (m.get("load_gb_s_by_step") or {}).items())
            ev.append(f"{t['label']}: {rate:.2f} GB/s = {frac:.1%} of {m.get('load_bound', '?')} "
                      f"{m.get('load_bound_gb_s', 0):.1f} GB/s (steps GB/s: {by_step or '-'})")
    c.add(name, not bad, "; ".join(bad + ev))


def check_place_step(c: Checks, sweeps: dict[str, Any]) -> None:
    """The place step (a reader that left the tensors in CPU memory) against the pageable H2D rate; the direct
    readers have none."""
    name = "load.method: place step against the measured pageable H2D rate (load_place_fraction)"
    ok = [t for t in sweeps.get(METHODS_SWEEP, {}).get("trials", []) if t["status"] == "ok"]
    placed = [t for t in ok if "place" in (t["metrics"].get("load_bytes_by_step") or {})]
    bad = [f"{t['label']}: placed {t['metrics']['load_bytes_by_step']['place']:,} B in a place step, but "
           f"{method_of(t)} reads straight onto the device" for t in placed if method_of(t) in DIRECT]
    bad += [f"{t['label']}: load_place_fraction {t['metrics'].get('load_place_fraction')}" for t in placed
            if not _positive(t["metrics"].get("load_place_fraction"))]
    if not placed and not bad:
        c.add(name, None, "no ok trial with a place step (runai did not run, or was skipped)")
        return
    ev = [f"{t['label']}: place {(t['metrics'].get('load_gb_s_by_step') or {}).get('place', 0):.2f} GB/s = "
          f"{t['metrics']['load_place_fraction']:.1%} of pageable H2D {t['metrics'].get('h2d_pageable_gb_s', 0):.1f} "
          f"GB/s ({t['metrics']['load_bytes_by_step']['place']:,} B)" for t in placed[:2]
          if _positive(t["metrics"].get("load_place_fraction"))]
    direct = sorted({method_of(t) for t in ok if method_of(t) in DIRECT} - {method_of(t) for t in placed})
    c.add(name, not bad, "; ".join(bad + ev + ([f"no place step: {', '.join(direct)}"] if direct else [])))


def check_stopwatch(c: Checks, work: Path) -> None:
    """The stopwatch step's verdicts (informational): ratio loadprof / stopwatch per figure, pass within 5%."""
    name = "stopwatch on CUDA: loadprof's load cost, TTFT, decode vs a plain script's (within 5%)"
    out = work / STOPWATCH  # run.py's stopwatch step: stopwatch.json and table.txt, or skipped.txt
    if not (out / "stopwatch.json").exists():
        why = (out / "skipped.txt").read_text().strip() if (out / "skipped.txt").exists() else "no stopwatch.json"
        c.add(name, None, why, required=False)
        return
    got = json.loads((out / "stopwatch.json").read_text())
    rows = got.get("verdicts", [])
    ratios = "; ".join(f"{r['model']} {r['dtype']} {r['figure']}: {r['ratio']:.3f}{'' if r['pass'] else ' FAIL'}"
                       for r in rows)
    c.add(name, bool(rows) and all(r["pass"] for r in rows),
          f"{got.get('rounds', '?')} rounds on {got.get('device', '?')}, loadprof / stopwatch: {ratios or 'none'}",
          required=False)


#: the checks of sweeps (``fn(checks, sweeps)``), run after check.py's own
METHOD_CHECKS: tuple[Callable[[Checks, dict[str, Any]], None], ...] = (check_methods, check_load_bounds,
                                                                          check_place_step)
