"""What loadprof's probes cost: the same load with probes off, on, and with py-spy sampling.

Run on demand (not part of the tests):

    python benchmarks/probe_overhead.py [--shape qwen2.5-0.5b] [--dtype float32] [--pairs 5]

Each round runs the three configurations back to back in a rotated order (so none always
runs first), each in a fresh worker process on a warm page cache, and measures the `load`
phase on the worker's monotonic clock (perf_counter_ns). Printed: per configuration the
median load time over the rounds and the median of the per-round ratios to "off".
Targets: phases+memory+io <= 1.02x, + py-spy at 100 Hz <= 1.05x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadprof import filecache  # noqa: E402
from loadprof.runner import TrialPlan, run_trial  # noqa: E402
from loadprof.strategies import synthetic  # noqa: E402
from loadprof.strategies.model import LoadSpec, ModelSpec, Strategy, SyntheticSpec, Trial  # noqa: E402

CONFIGS = {
    "off": dict(probes=(), sampling_hz=0),
    "phases+memory+io": dict(probes=("phases", "memory", "io"), sampling_hz=0),
    "+ py-spy 50 Hz": dict(probes=("phases", "memory", "io"), sampling_hz=50),
    "+ py-spy 100 Hz": dict(probes=("phases", "memory", "io"), sampling_hz=100),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--stored-dtype", default="bfloat16", help="dtype the checkpoint is written in")
    ap.add_argument("--dtype", default="float32", help="load dtype (a conversion gives the load real work)")
    ap.add_argument("--pairs", type=int, default=5, help="rounds; each runs every configuration once")
    args = ap.parse_args()

    path = str(synthetic.make_model(SyntheticSpec(shape=args.shape, dtype=args.stored_dtype)))
    load_s: dict[str, list[float]] = {k: [] for k in CONFIGS}
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.pairs):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                s = Strategy(model=ModelSpec(path=path), load=LoadSpec(dtype=args.dtype), generate=None,
                             label=name, **CONFIGS[name])
                filecache.warm(path)
                res = run_trial(TrialPlan(Trial(s, r), path, Path(tmp) / f"{r}-{names.index(name)}"))
                if res.status != "ok":
                    print(f"{name}: trial {res.status}: {res.reason}", file=sys.stderr)
                    return 1
                load_s[name].append(res.metrics["load_s"])
                print(f"round {r + 1}/{args.pairs} {name:<18} load {res.metrics['load_s']:.3f} s", file=sys.stderr)

    base = load_s["off"]
    print(f"\nprobe overhead: {args.shape} stored {args.stored_dtype}, loaded as {args.dtype}, warm page cache, "
          f"{args.pairs} rounds, load phase on perf_counter_ns")
    print(f"{'configuration':<20}{'median load s':>15}{'min':>9}{'max':>9}{'ratio to off (median of rounds)':>34}")
    for name, xs in load_s.items():
        ratios = [x / b for x, b in zip(xs, base)]
        print(f"{name:<20}{statistics.median(xs):>15.3f}{min(xs):>9.3f}{max(xs):>9.3f}"
              f"{statistics.median(ratios):>33.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
