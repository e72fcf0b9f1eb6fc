"""Does loadprof measure what a user's stopwatch measures? Real load cost, TTFT and decode, side by side.

Run on demand, on a quiet machine (not part of the tests):

    python benchmarks/stopwatch.py [--models gpt2,qwen2.5-0.5b,qwen2.5-1.5b] [--dtypes float32,bfloat16]
                                   [--repeats 3] [--prompt-tokens 32] [--new-tokens 32] [--out DIR]

For each model shape and dtype, loadprof's synthetic checkpoint builder makes the checkpoint first (stored in
that dtype; ``loadprof.strategies.synthetic``, cached), then each round runs, in alternating order:

- the stopwatch: a fresh ``python -P -c <STOPWATCH>`` that imports nothing of loadprof. It imports torch and
  ``transformers.AutoModelForCausalLM`` (what a script imports before it loads; untimed), then times
  ``from_pretrained(path, dtype=<dtype>, device_map=<device>)`` plus the first forward (batch 1, 16 seeded random
  tokens: loadprof's warmup forward) on ``time.perf_counter`` (on CUDA synchronised before each stamp, as loadprof
  synchronises at its phase edges): the real load cost as a user sees it. Then
  one untimed warmup ``generate`` and one timed one (greedy, EOS ignored, the same seeded prompt), a
  ``BaseStreamer`` stamping each new token: TTFT = call to first token, decode = (tokens - 1) / first to last.
- loadprof: ``loadprof compare`` on an equivalent generated YAML (the same folder, ``device_map: <device>``, that
  dtype, warm page cache, ``isolation: fresh`` (``--isolation auto``: the default's forked trials), ``generate: {prompt_tokens, max_new_tokens, warmup: 1,
  repeats: 1}``, default probes, no sampling): its ``load_cost_s`` (load + validation + first forward),
  ``ttft_ms`` and ``decode_tok_s`` from report.json.

``--device cuda`` (default ``cpu``) puts both sides on the GPU (the GPU kit, benchmarks/gpu/run.py, runs it so).

Both with ``OMP_NUM_THREADS=1`` and the same offline environment; the page cache is warmed before each
stopwatch process, as loadprof warms it before each trial. Printed per model and dtype: median and spread
(min..max) over the rounds, the ratio loadprof / stopwatch of the medians, and pass/fail at 5% (the target on
an idle machine), with the 1-minute load average before and after beside it: on a busy machine the
spread, not the verdict, is the answer. Everything is written under ``--out`` (the loadprof runs, the
stopwatch's raw figures, ``stopwatch.json`` and ``table.txt``, both rewritten after each round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadprof.run.filecache import warm  # noqa: E402
from loadprof.run.runner import WORKER_ENV  # noqa: E402
from loadprof.strategies.model import SyntheticSpec  # noqa: E402
from loadprof.strategies.synthetic import make_model  # noqa: E402

TARGET = 0.05  # |loadprof / stopwatch - 1| at most this on an idle machine
WARMUP_FORWARD_TOKENS = 16  # loadprof's first forward: batch 1, 16 tokens (worker.trial.DEFAULT_WARMUP)
#: figure -> (stopwatch key, loadprof metric, unit)
FIGURES = {"real load cost": ("load_cost_s", "load_cost_s", "s"), "TTFT": ("ttft_ms", "ttft_ms", "ms"),
           "decode": ("decode_tok_s", "decode_tok_s", "tok/s")}

#: the timed child: plain torch + transformers, nothing of loadprof (argv: path dtype prompt new out device)
STOPWATCH = r'''
import json, sys, time
import torch
from transformers import AutoModelForCausalLM

path, dtype, prompt, new, out, device = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
                                         sys.argv[6])
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)


def ids(vocab, n):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, vocab, (1, n), generator=g)
    return {"input_ids": t.to(device), "attention_mask": torch.ones_like(t).to(device)}


t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), device_map=device)
sync()
t1 = time.perf_counter()
vocab = int(model.config.vocab_size)
with torch.inference_mode():
    model(**ids(vocab, %(forward)d))
sync()
t2 = time.perf_counter()

from transformers.generation.streamers import BaseStreamer  # after the load: imported by it already


class Stamps(BaseStreamer):
    def __init__(self):
        self.prompt_seen, self.t = False, []

    def put(self, value):  # generate hands it tokens already copied to the CPU: the stamp follows the GPU
        if self.prompt_seen:
            self.t.append(time.perf_counter())
        self.prompt_seen = True

    def end(self):
        pass


def generate():
    s = Stamps()
    kw = dict(max_new_tokens=new, do_sample=False, eos_token_id=None, streamer=s,
              pad_token_id=getattr(model.generation_config, "pad_token_id", None) or 0)
    inputs = ids(vocab, prompt)
    sync()
    with torch.inference_mode():
        t = time.perf_counter()
        model.generate(**inputs, **kw)
    return t, s.t


generate()  # warmup, as loadprof's generate.warmup: 1
t_call, stamps = generate()
json.dump({"from_pretrained_s": t1 - t0, "first_forward_s": t2 - t1, "load_cost_s": t2 - t0,
           "ttft_ms": (stamps[0] - t_call) * 1e3, "new_tokens": len(stamps),
           "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0])}, open(out, "w"))
''' % {"forward": WARMUP_FORWARD_TOKENS}


def child_env() -> dict[str, str]:
    return {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": "1"}


def run_stopwatch(path: Path, dtype: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    warm(path)  # as loadprof does before a warm trial
    cmd = [sys.executable, "-P", "-c", STOPWATCH, str(path), dtype, str(args.prompt_tokens), str(args.new_tokens),
           str(out), args.device]
    with open(out.with_suffix(".log"), "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=out.parent).returncode
    if rc != 0:
        raise SystemExit(f"stopwatch process failed (exit {rc}): see {out.with_suffix('.log')}")
    return json.loads(out.read_text())


def sweep_yaml(path: Path, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    """The loadprof sweep equivalent to the stopwatch: same folder, dtype, placement, prompt and tokens."""
    return {"name": f"stopwatch-{path.name}", "description": "benchmarks/stopwatch.py", "repeat": 1,
            "model": {"path": str(path)},
            "base": {"load": {"device_map": args.device, "dtype": dtype, "file_cache": "warm"},
                     "generate": {"prompt_tokens": args.prompt_tokens, "max_new_tokens": args.new_tokens,
                                  "warmup": 1, "repeats": 1},
                     "isolation": args.isolation, "sampling_hz": 0, "timeout_s": 3600}}


def loadprof_cli() -> list[str]:
    """The ``loadprof`` script beside this interpreter or on PATH, else the CLI module through this interpreter (a
    user install, as on the GPU kit's machine, may put the script off PATH)."""
    beside = Path(sys.executable).with_name("loadprof")
    found = str(beside) if beside.exists() else shutil.which("loadprof")
    return [found] if found else [sys.executable, "-m", "loadprof.cli.main"]


def run_loadprof(path: Path, dtype: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    out.mkdir(parents=True)
    spec = out / "sweep.yaml"
    spec.write_text(yaml.safe_dump(sweep_yaml(path, dtype, args), sort_keys=False))
    runs = out / "run"
    with open(out / "compare.log", "w") as log:
        rc = subprocess.run([*loadprof_cli(), "compare", str(spec), "--out", str(runs), "--no-progress"],
                            stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=out).returncode
    report = json.loads((runs / "report.json").read_text()) if (runs / "report.json").exists() else {}
    trials = [t for t in report.get("trials", []) if t.get("status") == "ok"]
    if rc != 0 or len(trials) != 1:
        raise SystemExit(f"loadprof compare failed (exit {rc}): see {out / 'compare.log'}")
    m = trials[0]["metrics"]
    return {k: m.get(k) for k in ("load_cost_s", "load_import_s", "load_s", "import_s", "ttft_ms", "decode_tok_s")}


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.4g} ({min(xs):.4g}..{max(xs):.4g})" if xs else "-"


def verdicts(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict[str, Any]]:
    """One row per model, dtype and figure: both sides' values, the ratio of the medians, pass within ``TARGET``
    (what the table prints and stopwatch.json keeps for the GPU kit's check)."""
    rows = []
    for key, sides in results.items():
        model, dtype = key.split("|")
        for fig, (sw_key, lp_key, unit) in FIGURES.items():
            sw = [r[sw_key] for r in sides["stopwatch"] if r.get(sw_key) is not None]
            lp = [r[lp_key] for r in sides["loadprof"] if r.get(lp_key) is not None]
            ratio = statistics.median(lp) / statistics.median(sw) if sw and lp else float("nan")
            rows.append({"model": model, "dtype": dtype, "figure": fig, "unit": unit, "stopwatch": sw,
                         "loadprof": lp, "ratio": ratio, "pass": abs(ratio - 1) <= TARGET})
    return rows


def table(results: dict[str, dict[str, list[dict[str, float]]]], load: tuple[float, float], n: int,
          device: str = "cpu") -> str:
    """One row per model, dtype and figure; ratio of the medians and pass/fail at ``TARGET``."""
    head = (f"{'model':<14} {'dtype':<9} {'figure':<17} {'stopwatch median (min..max)':<30} "
            f"{'loadprof median (min..max)':<30} {'ratio':>6}  verdict")
    lines = [f"{n} fresh processes per side and configuration, device_map {device}; medians and spreads "
             f"(min..max); ratio = loadprof / stopwatch; pass within {TARGET:.0%}",
             f"machine: {os.cpu_count()} CPUs, 1-min load average {load[0]:.2f} before, {load[1]:.2f} after "
             "(the 5% target holds on an idle machine only)", "", head, "-" * len(head)]
    rows = verdicts(results)
    for key, sides in results.items():
        model, dtype = key.split("|")
        for r in (r for r in rows if (r["model"], r["dtype"]) == (model, dtype)):
            lines.append(f"{model:<14} {dtype:<9} {r['figure'] + ', ' + r['unit']:<17} {spread(r['stopwatch']):<30} "
                         f"{spread(r['loadprof']):<30} {r['ratio']:>6.3f}  {'pass' if r['pass'] else 'FAIL'}")
        imp = [r["load_import_s"] for r in sides["loadprof"] if r.get("load_import_s") is not None]
        if imp:
            lines.append(f"{'':<14} {'':<9} {'  of which the load imported, s (load_import_s)':<48} {spread(imp)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2,qwen2.5-0.5b,qwen2.5-1.5b", help="synthetic shapes, comma-separated")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="stored and loaded dtype, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side and configuration")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--isolation", choices=("fresh", "auto"), default="fresh",
                    help="loadprof's trials: fresh interpreters, or the default (auto: forked, the load's lazy "
                         "import measured once per round in a sub-zygote and shared)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="device_map of both sides (cuda: the GPU kit's check)")
    ap.add_argument("--out", type=Path, default=Path("stopwatch-runs") / time.strftime("%Y%m%d-%H%M%S"))
    args = ap.parse_args()
    if args.new_tokens < 2:
        ap.error("--new-tokens must be at least 2 (decode needs two tokens)")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    load0 = os.getloadavg()[0]
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            path = make_model(SyntheticSpec(shape=model, dtype=dtype))
            sides: dict[str, list[dict[str, float]]] = {"stopwatch": [], "loadprof": []}
            results[f"{model}|{dtype}"] = sides
            for r in range(args.repeats):
                where = args.out / f"{model}-{dtype}-r{r}"
                where.mkdir(parents=True, exist_ok=True)
                order = ("stopwatch", "loadprof") if r % 2 == 0 else ("loadprof", "stopwatch")
                for side in order:
                    fig = (run_stopwatch(path, dtype, args, where / "stopwatch.json") if side == "stopwatch"
                           else run_loadprof(path, dtype, args, where / "loadprof"))
                    sides[side].append(fig)
                    print(f"{model} {dtype} round {r + 1}/{args.repeats} {side}: real load cost "
                          f"{fig['load_cost_s']:.3f} s, TTFT {fig['ttft_ms']:.1f} ms, decode "
                          f"{fig['decode_tok_s']:.1f} tok/s", file=sys.stderr)
                write(args, results, load0)
    print(write(args, results, load0))
    return 0


def write(args: argparse.Namespace, results: dict[str, dict[str, list[dict[str, float]]]], load0: float) -> str:
    """table.txt and stopwatch.json from the rounds done so far: rewritten after each round, so a run stopped
    early (the GPU kit's budget) keeps what it measured. Returns the table."""
    load = (load0, os.getloadavg()[0])
    rounds = min((len(v) for sides in results.values() for v in sides.values()), default=0)
    text = table(results, load, rounds, args.device)
    (args.out / "table.txt").write_text(text + "\n")
    (args.out / "stopwatch.json").write_text(json.dumps({"results": results, "verdicts": verdicts(results),
                                                         "rounds": rounds, "device": args.device, "loadavg": load,
                                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return text


if __name__ == "__main__":
    sys.exit(main())
