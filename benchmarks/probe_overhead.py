"""What loadprof's probes cost: the same load and generate with probes off, on, and sampled.

Run on demand (not part of the tests):

    python benchmarks/probe_overhead.py [--shape qwen2.5-0.5b] [--dtype float32] [--pairs 5] [--max-new-tokens 16]

Each round runs every configuration back to back in a rotated order (so none always runs first), each in a
fresh worker process on a warm page cache, and measures on the worker's monotonic clock (perf_counter_ns) the
`load` phase and the decode of the measured generate calls (seconds per token = 1 / decode tok/s, median over
the trial's calls). Sampling is py-spy (--idle) plus the parent-side /proc thread-state poller, at the rate
named. Printed: per configuration the median over the rounds (with min and max) and the median of the
per-round ratios to "off", for load and for decode. Targets: probes <= 1.02x, sampling at the default rate
<= 1.05x, on load and on decode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadprof.analysis.derive import enrich  # noqa: E402
from loadprof.run import filecache  # noqa: E402
from loadprof.run.runner import TrialPlan, run_trial  # noqa: E402
from loadprof.strategies import synthetic  # noqa: E402
from loadprof.strategies.model import (DEFAULT_SAMPLING_HZ, GenerateSpec, LoadSpec, ModelSpec, Strategy,  # noqa: E402
                                       SyntheticSpec, Trial)

CONFIGS = {
    "off": dict(probes=(), sampling_hz=0),
    "phases+memory+io": dict(probes=("phases", "memory", "io"), sampling_hz=0),
    f"+ sampling {DEFAULT_SAMPLING_HZ} Hz": dict(probes=("phases", "memory", "io"), sampling_hz=DEFAULT_SAMPLING_HZ),
    "+ sampling 100 Hz": dict(probes=("phases", "memory", "io"), sampling_hz=100),
}
FIGURES = (("load", "load s", lambda m: m["load_s"]), ("decode", "s/token", lambda m: 1.0 / m["decode_tok_s"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--stored-dtype", default="bfloat16", help="dtype the checkpoint is written in")
    ap.add_argument("--dtype", default="float32", help="load dtype (a conversion gives the load real work)")
    ap.add_argument("--pairs", type=int, default=5, help="rounds; each runs every configuration once")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens per measured generate call")
    ap.add_argument("--repeats", type=int, default=3, help="measured generate calls per trial")
    args = ap.parse_args()
    gen = GenerateSpec(prompt_tokens=32, max_new_tokens=args.max_new_tokens, warmup=1, repeats=args.repeats)

    path = str(synthetic.make_model(SyntheticSpec(shape=args.shape, dtype=args.stored_dtype)))
    got: dict[str, dict[str, list[float]]] = {f: {k: [] for k in CONFIGS} for f, _, _ in FIGURES}
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.pairs):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                s = Strategy(model=ModelSpec(path=path), load=LoadSpec(dtype=args.dtype), generate=gen,
                             label=name, **CONFIGS[name])
                filecache.warm(path)
                res = enrich(run_trial(TrialPlan(Trial(s, r), path, Path(tmp) / f"{r}-{names.index(name)}")))
                if res.status != "ok":
                    print(f"{name}: trial {res.status}: {res.reason}", file=sys.stderr)
                    return 1
                for fig, _, value in FIGURES:
                    got[fig][name].append(value(res.metrics))
                print(f"round {r + 1}/{args.pairs} {name:<20} load {res.metrics['load_s']:.3f} s, decode "
                      f"{res.metrics['decode_tok_s']:.2f} tok/s", file=sys.stderr)

    print(f"\nprobe overhead: {args.shape} stored {args.stored_dtype}, loaded as {args.dtype}, warm page cache, "
          f"{args.pairs} rounds; load phase and decode ({args.repeats} calls x {args.max_new_tokens} tokens, median) "
          "on perf_counter_ns")
    for fig, unit, _ in FIGURES:
        base = got[fig]["off"]
        print(f"\n{fig:<22}{'median ' + unit:>15}{'min':>9}{'max':>9}{'ratio to off (median of rounds)':>34}")
        for name, xs in got[fig].items():
            ratios = [x / b for x, b in zip(xs, base)]
            print(f"{name:<22}{statistics.median(xs):>15.4f}{min(xs):>9.4f}{max(xs):>9.4f}"
                  f"{statistics.median(ratios):>33.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
