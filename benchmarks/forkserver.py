"""What a pre-imported forkserver saves: harness cost per trial and a whole study's wall, fresh vs forkserver.

Run on demand (not part of the tests):

    python benchmarks/forkserver.py [--study strategies/examples/max_new_tokens.yaml] [--rounds 3]
                                    [--caps "32..2048*2"] [--json OUT.json]

Each round runs the study twice, once per isolation (``fresh``: a new ``python -m loadprof.worker.trial`` per trial;
``forkserver``: trials forked from a zygote that imported torch, transformers and loadprof once, run under
``--forked`` isolation: ``auto`` by default, whose built-in loads share their lazy import per repeat round), in
alternating order (fresh first in even rounds, forkserver first in odd ones), each as a whole ``Session`` into
its own folder: model preparation, every trial, analysis and the reports. Clock: time.monotonic for the study
wall; the trials' own figures are on the parent's and the worker's perf_counter_ns (both CLOCK_MONOTONIC).

Per trial, harness cost = ``harness.parent_wall_s`` - (``wall_s`` - ``import_s``): everything the parent waited
for that is not the trial's own work after its imports, i.e. interpreter start or fork (``startup_s``), the
import phase, and exit to reaping. The zygote's own start (once per sweep: ``harness.forkserver_start_s``) is
outside every trial's parent wall and inside the study wall. Both modes reuse the device copy bandwidth after a
sweep's first trial (loadprof.run.constants); the ``membw`` phase of the measuring and of the reusing trials is
printed too. Printed: median, min and max over rounds (study wall) or over all trials (per trial), the median of
the per-round ratios forkserver / fresh, and how busy the machine was (median ``others_cpu_cores`` of the trials,
loadavg before and after). Target: forkserver harness cost <= 50 ms per trial.

Measured phases, fresh vs forked side by side (what ``isolation: auto`` relies on when it forks warm CPU
trials): per configuration, the median over its trials of each figure in ``PHASE_FIGURES`` (load, load cost,
TTFT, decode rate, peak RSS) in each mode, and the ratio forkserver / fresh; printed as the median ratio over
configurations (min..max), beside the noise of the same figure within one mode (per configuration, max / min
over its trials in that mode; needs ``--rounds`` >= 2 or a sweep with ``repeat`` >= 2). Within noise: the
ratio's distance from 1 is no larger than the noise's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadprof.core.payloads import MachinePayload  # noqa: E402
from loadprof.analysis import derive  # noqa: E402
from loadprof.core import figures  # noqa: E402
from loadprof.run.session import Session  # noqa: E402
from loadprof.strategies.expand import Sweep, expand  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = ("fresh", "forkserver")
#: the measured phases compared fresh vs forked
PHASE_FIGURES = (figures.LOAD_S, figures.LOAD_COST_S, figures.TTFT_MS, figures.DECODE_TOK_S,
                 figures.PEAK_RSS_BYTES)


def study(path: Path, caps: str | None, isolation: str) -> Sweep:
    """The study YAML (its caps replaced by ``caps`` when given) with every strategy in ``isolation``."""
    doc = yaml.safe_load(path.read_text())
    if caps:
        doc["matrix"]["generate"]["max_new_tokens"] = caps
    sweep = expand(doc, str(path), path.parent)
    return dataclasses.replace(sweep, strategies=tuple(dataclasses.replace(s, isolation=isolation)
                                                        for s in sweep.strategies))


def per_trial(result: Any) -> list[dict[str, float]]:
    """The harness figures of each ok trial."""
    rows = []
    for t in result.trials:
        h, m = t.harness, t.metrics
        if t.status != "ok" or "parent_wall_s" not in h or t.wall_s is None:
            continue
        rows.append({"harness_s": h["parent_wall_s"] - (t.wall_s - m.get("import_s", 0.0)),
                     "startup_s": h.get("startup_s", float("nan")), "import_s": m.get("import_s", 0.0),
                     "exit_s": h.get("overhead_s", 0.0) - h.get("startup_s", 0.0),
                     "membw_s": m.get("membw_s", 0.0), "membw_reused": "membw_source" in m,
                     "zygote_start_s": h.get("forkserver_start_s"),
                     "others_cpu_cores": getattr(t.payload(MachinePayload), "others_cpu_cores", None),
                     "config": dataclasses.replace(t.strategy, isolation="auto").id,  # one key for both modes
                     "isolation": h.get("isolation", "fresh"),
                     **{f.key: derive.value(t, f) for f in PHASE_FIGURES}})
    return rows


def run_once(path: Path, caps: str | None, mode: str, out: Path,
             forked: str = "auto") -> tuple[float, list[dict[str, float]]]:
    """One whole study; the forked mode runs under ``forked`` isolation (``auto``: what users get, the load's lazy
    import shared per repeat round; ``forkserver``: forked, every trial paying its own import)."""
    sweep = study(path, caps, forked if mode == "forkserver" else mode)
    t = time.monotonic()
    result = Session(sweep, out).run()
    wall = time.monotonic() - t
    bad = [f"{x.label}: {x.status} {x.reason}" for x in result.trials if x.status != "ok"]
    if bad or result.interrupted:
        raise SystemExit(f"{mode}: interrupted or trials not ok: {bad}")
    return wall, per_trial(result)


def spread(xs: list[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    xs = [x * scale for x in xs if x is not None and x == x]
    if not xs:
        return "-"
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}..{max(xs):{fmt}}, n={len(xs)})"


def report(walls: dict[str, list[float]], rows: dict[str, list[dict]], load: tuple[float, float]) -> dict[str, Any]:
    print("\nstudy wall, s (median (min..max, n) over rounds; time.monotonic around Session.run)")
    for mode in MODES:
        print(f"  {mode:<11} {spread(walls[mode], fmt='.1f')}")
    ratios = [b / a for a, b in zip(walls["fresh"], walls["forkserver"])]
    print(f"  forkserver / fresh, median of per-round ratios: {statistics.median(ratios):.3f}x "
          f"({min(ratios):.3f}..{max(ratios):.3f})")
    print("\nper trial, ms (median (min..max, n) over every ok trial of every round)")
    for key, what in (("harness_s", "harness cost = parent wall - (trial wall - import)"),
                      ("startup_s", "spawn or fork -> trial clock starts"), ("import_s", "import phase"),
                      ("exit_s", "trial done -> reaped")):
        print(f"  {what}")
        for mode in MODES:
            print(f"    {mode:<11} {spread([r[key] for r in rows[mode]], 1e3, '.1f')}")
    print("  membw phase: measuring trials / reusing trials (per-sweep constants, both modes)")
    for mode in MODES:
        own = [r["membw_s"] for r in rows[mode] if not r["membw_reused"]]
        reused = [r["membw_s"] for r in rows[mode] if r["membw_reused"]]
        print(f"    {mode:<11} {spread(own, 1e3, '.1f')} / {spread(reused, 1e3, '.2f')}")
    ratios = phase_ratios(rows)
    starts = [r["zygote_start_s"] for r in rows["forkserver"] if r["zygote_start_s"] is not None]
    print(f"  zygote start (once per sweep, outside the trials' parent wall), s: {spread(starts, fmt='.2f')}")
    busy = [r["others_cpu_cores"] for m in MODES for r in rows[m] if r["others_cpu_cores"] is not None]
    print(f"\nmachine: {os.cpu_count()} CPUs; others' CPU use during the trials (cores, median (min..max)): "
          f"{spread(busy, fmt='.2f')}; loadavg 1 min before {load[0]:.2f}, after {load[1]:.2f}")
    return ratios


def _by_config(rows: list[dict], key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and v > 0:
            out.setdefault(r["config"], []).append(float(v))
    return out


def phase_ratios(rows: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    """Per measured figure: forkserver / fresh per configuration (medians over its trials), and each mode's
    noise (max / min over a configuration's trials); printed, and returned for --json."""
    out: dict[str, dict[str, list[float]]] = {}
    isolated = {m: sorted({r["isolation"] for r in rows[m]}) for m in MODES}
    print(f"\nmeasured phases, forkserver / fresh per configuration (median over its trials); trials ran as "
          f"{isolated['fresh']} / {isolated['forkserver']}")
    for f in PHASE_FIGURES:
        fresh, forked = _by_config(rows["fresh"], f.key), _by_config(rows["forkserver"], f.key)
        ratios = [statistics.median(forked[c]) / statistics.median(fresh[c]) for c in fresh if c in forked]
        noise = [max(v) / min(v) for m in MODES for v in _by_config(rows[m], f.key).values() if len(v) > 1]
        out[f.key] = {"ratios": ratios, "noise": noise}
        print(f"  {f.label + ' (' + f.unit + ')':<22} ratio {spread(ratios)}; noise within a mode (max/min) "
              f"{spread(noise)}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=REPO / "strategies" / "examples" / "max_new_tokens.yaml")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs the study once per isolation")
    ap.add_argument("--caps", default=None, help='replace the study\'s max_new_tokens (e.g. "32..256*2")')
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    ap.add_argument("--forked", choices=("auto", "forkserver"), default="auto",
                    help="the forked mode's isolation: auto (the default's shared lazy import) or forkserver")
    args = ap.parse_args()
    walls: dict[str, list[float]] = {m: [] for m in MODES}
    rows: dict[str, list[dict]] = {m: [] for m in MODES}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                wall, trials = run_once(args.study, args.caps, mode, Path(tmp) / f"{r}-{mode}", args.forked)
                walls[mode].append(wall)
                rows[mode] += trials
                print(f"round {r + 1}/{args.rounds} {mode:<11} study wall {wall:.1f} s, {len(trials)} trials, "
                      f"median harness {statistics.median(x['harness_s'] for x in trials) * 1e3:.0f} ms",
                      file=sys.stderr)
    load = (load0, os.getloadavg()[0])
    print(f"\nforkserver benchmark: {args.study.name}" + (f" with max_new_tokens {args.caps}" if args.caps else "")
          + f", {args.rounds} rounds, modes alternating")
    ratios = report(walls, rows, load)
    if args.json:
        args.json.write_text(json.dumps({"walls": walls, "trials": rows, "loadavg": load, "phase_ratios": ratios},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
