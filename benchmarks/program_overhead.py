"""What ``loadprof run`` costs a program: the same script run plainly and under ``loadprof run``, side by side.

Run on demand (not part of the tests):

    python benchmarks/program_overhead.py [--rounds 5] [--sampling-hz 50] [--until exit] [--json OUT.json]
                                          [-- python my_app.py ARGS]

Without a command the script is tests/fixtures/programs/load_only.py on a synthesized tiny checkpoint (load, one
forward, exit). Each round runs the command twice, plainly and as ``python -m loadprof.cli.main run --out TMP
[--sampling-hz N] [--until U] -- CMD``, in alternating order (plain first in even rounds, loadprof first in odd
ones) so slow drift on a busy machine falls on both. Clock: time.monotonic around each whole process, from spawn
to exit; loadprof's wall includes its own start, the hooks in the program, py-spy, and writing the reports (what a
user waits for); the program's own spawn-to-exit under loadprof (the trial's ``parent_wall_s``) is what the hooks,
probes and sampling cost the program itself. Printed: each side's median, min and max, and the per-round ratio loadprof / plain as median,
min, max and half the interquartile range, with the load average before and after. A ratio claims an overhead
only beyond that spread.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_command() -> list[str]:
    from loadprof.strategies import synthetic
    from loadprof.strategies.model import SyntheticSpec

    model = synthetic.make_model(SyntheticSpec(shape="tiny", dtype="bfloat16", seed=0))
    return [sys.executable, str(REPO / "tests" / "fixtures" / "programs" / "load_only.py"), str(model)]


def timed(cmd: list[str]) -> float:
    """Seconds from spawn to exit of ``cmd`` (its output discarded; a failure stops the benchmark)."""
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:6]}... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


def _program_wall(out: Path) -> float:
    """The program's own spawn-to-exit under loadprof (the trial's ``harness.parent_wall_s``: the same edges as the
    plain run's clock), without loadprof's own start, analysis and report writing."""
    trial = json.loads((out / "report.json").read_text())["trials"][0]
    return float(trial["harness"]["parent_wall_s"])


def spread(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "half_iqr": (q[2] - q[0]) / 2}


def run(cmd: list[str], rounds: int, sampling_hz: int, until: str) -> dict[str, Any]:
    plain, hooked, ratios, inside, inside_ratios = [], [], [], [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="loadprof-overhead-") as tmp:
        for r in range(rounds):
            wrapped = [sys.executable, "-m", "loadprof.cli.main", "run", "--out", f"{tmp}/r{r}",
                       "--sampling-hz", str(sampling_hz), "--until", until, "--", *cmd]
            first, second = (cmd, wrapped) if r % 2 == 0 else (wrapped, cmd)
            a, b = timed(first), timed(second)
            p, h = (a, b) if r % 2 == 0 else (b, a)
            plain.append(p)
            hooked.append(h)
            ratios.append(h / p)
            own = _program_wall(Path(f"{tmp}/r{r}"))
            inside.append(own)
            inside_ratios.append(own / p)
            print(f"round {r + 1}/{rounds}: plain {p:.2f} s, loadprof run {h:.2f} s (ratio {h / p:.2f}); the program "
                  f"itself under loadprof {own:.2f} s (ratio {own / p:.2f})", flush=True)
    return {"command": cmd, "rounds": rounds, "sampling_hz": sampling_hz, "until": until,
            "plain_s": spread(plain), "loadprof_s": spread(hooked), "ratio": spread(ratios),
            "program_under_loadprof_s": spread(inside), "program_ratio": spread(inside_ratios),
            "raw": {"plain_s": plain, "loadprof_s": hooked}, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sampling-hz", type=int, default=50)
    ap.add_argument("--until", default="exit")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the program (after --); default: load_only.py")
    args = ap.parse_args(argv)
    cmd = [c for c in args.cmd if c != "--"] or default_command()
    out = run(cmd, max(1, args.rounds), args.sampling_hz, args.until)
    for key, what in (("plain_s", "plain"), ("loadprof_s", "loadprof run"), ("program_under_loadprof_s", "the program")):
        s = out[key]
        print(f"{what:>13}: median {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f})")
    for key, what in (("program_ratio", "the program's own time under loadprof / plain"),):
        r = out[key]
        print(f"{what}: median {r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}, ± {r['half_iqr']:.2f})")
    r = out["ratio"]
    print(f"        ratio: median {r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}, ± {r['half_iqr']:.2f} "
          f"half IQR) over {out['rounds']} rounds; load average {out['loadavg_before'][0]:.1f} -> "
          f"{out['loadavg_after'][0]:.1f} on {out['cpu_count']} cores")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
