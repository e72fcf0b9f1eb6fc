"""How long a whole small sweep takes with loadprof's defaults: ``loadprof compare`` on benchmarks/sixteen_tiny.yaml
(16 warm tiny GPT-2 trials, no isolation setting), timed from the outside.

Run on demand (not part of the tests), on an otherwise idle machine:

    python benchmarks/sweep_wall.py [--yaml benchmarks/sixteen_tiny.yaml] [--jobs N] [--rounds 1] [--json OUT.json]

Each round runs ``loadprof compare YAML --out <tmp> --no-progress --format json`` as a subprocess and times it
with time.monotonic (interpreter start, the synthetic model's build when not cached, the zygote, every trial,
analysis and every report). Printed per round: the wall, and over the round's trials the harness cost per trial
(``harness.parent_wall_s`` - (``wall_s`` - ``import_s``): spawn or fork, the import phase, exit to reaping), the
isolation each ran under, how many traced their allocations, and the 1-minute load average before and after.
Goal (loadprof issue 28): under 20 s on an idle 2-core machine, harness cost in the tens of ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 20.0


def run_once(yaml_file: Path, out: Path, jobs: int) -> tuple[float, int, list[dict[str, Any]]]:
    """Wall seconds of one ``loadprof compare``, its exit code, and its trials as results.jsonl has them."""
    cmd = [sys.executable, "-m", "loadprof.cli.main", "compare", str(yaml_file), "--out", str(out),
           "--no-progress", "--format", "json", "--jobs", str(jobs)]
    t = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"loadprof compare exited {proc.returncode}: {proc.stderr[-2000:]}")
    lines = (out / "results.jsonl").read_text().splitlines()
    return wall, proc.returncode, [json.loads(x) for x in lines if x.strip()]


def harness_ms(t: dict[str, Any]) -> float | None:
    h, m = t.get("harness") or {}, t.get("metrics") or {}
    if t.get("status") != "ok" or "parent_wall_s" not in h or t.get("wall_s") is None:
        return None
    return 1e3 * (h["parent_wall_s"] - (t["wall_s"] - m.get("import_s", 0.0)))


def summary(wall: float, code: int, trials: list[dict[str, Any]], load: tuple[float, float]) -> dict[str, Any]:
    costs = [c for t in trials if (c := harness_ms(t)) is not None]
    return {"wall_s": wall, "exit_code": code, "trials": len(trials),
            "ok": sum(t.get("status") == "ok" for t in trials),
            "isolation": dict(Counter((t.get("harness") or {}).get("isolation", "?") for t in trials)),
            "traced": sum(any(p.get("name") == "trace" for p in t.get("phases") or []) for t in trials),
            "harness_ms_median": statistics.median(costs) if costs else None,
            "harness_ms_max": max(costs) if costs else None,
            "loadavg_1m_before": load[0], "loadavg_1m_after": load[1]}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--yaml", type=Path, default=REPO / "benchmarks" / "sixteen_tiny.yaml")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            before = os.getloadavg()[0]
            wall, code, trials = run_once(args.yaml, Path(tmp) / f"r{r}", args.jobs)
            s = summary(wall, code, trials, (before, os.getloadavg()[0]))
            rounds.append(s)
            print(f"round {r + 1}/{args.rounds}: {s['wall_s']:.1f} s wall for {s['trials']} trials ({s['ok']} ok, "
                  f"--jobs {args.jobs}); harness per trial median {_ms(s['harness_ms_median'])}, max "
                  f"{_ms(s['harness_ms_max'])}; isolation {s['isolation']}; {s['traced']} traced; loadavg 1 min "
                  f"{s['loadavg_1m_before']:.2f} -> {s['loadavg_1m_after']:.2f} ({os.cpu_count()} CPUs)")
    walls = [s["wall_s"] for s in rounds]
    print(f"{args.yaml.name}: median wall {statistics.median(walls):.1f} s over {len(walls)} round(s); goal < "
          f"{GOAL_S:.0f} s on an idle 2-core machine")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
