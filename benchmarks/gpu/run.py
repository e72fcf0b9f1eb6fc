"""The GPU verification kit: one prepared run on a bare, offline CUDA machine.

    python benchmarks/gpu/run.py OUT            # on the GPU machine, from the repository root
    python benchmarks/gpu/run.py OUT --dry-run  # anywhere: validate the GPU YAMLs, check the wheels

Steps, each under its own timeout and all under one budget (default 540 s: a 10-minute call, timeout_s 590,
holds it and the pack):
  install  the carried wheels (see prepare.sh: py-spy, bitsandbytes, the load.method loaders and their
           dependencies) and loadprof, with no network; a dependency wheel only where the machine lacks it
  env      CUDA device, torch/transformers/bitsandbytes/loader versions, py-spy, NVML
  synth    (--parallel 1 only) the synthetic checkpoints the sweeps use, built before any trial is timed
  sweeps   strategies/examples/gpu/*.yaml, one `loadprof compare` each, five at a time by default (each
           sweep one trial at a time); a sweep that would overrun its time or the budget is interrupted
           (SIGINT: its finished trials are kept and reported)
  stopwatch  benchmarks/stopwatch.py --device cuda (loadprof's load cost, TTFT and decode against a plain
           script's, fresh processes side by side), alone on the GPU after the sweeps, if the budget allows
  check    benchmarks/gpu/check.py: what the run must show (allocator peaks, weights vs estimate, KV
           per token, offload finding, H2D transfer, roofline, NVML, snapshot, compile, loading methods
           and their bounds, stopwatch), pass/fail each
  pack     OUT/report.md (checks + every sweep's report + the stopwatch table), OUT/checks.json,
           OUT/env.json, OUT/kit.log, OUT/runs.tar.gz (every sweep folder: report.json/md/html/csv, results,
           trial logs, snapshot; the stopwatch's runs); a handful of files, each under 16 MiB

Standard library only: it runs before loadprof is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "benchmarks" / "gpu"
WHEELS = KIT / "wheels"
YAML_DIR = ROOT / "strategies" / "examples" / "gpu"
#: (yaml stem, sweep timeout s), longest first: with sweeps running side by side the loading_methods sweep
#: (14 fresh processes of a 3 GB load, each loaded twice for the logits check) and the max_new_tokens sweep
#: (8 fresh processes, 4 of them compiling a static cache for ~25 s each on an H200) are the critical path
SWEEPS = (("loading_methods", 360), ("max_new_tokens", 330), ("placement", 240), ("quantization", 180),
          ("snapshot", 60), ("batch_scaling", 120))
#: sweeps at a time: on an H200 a fresh trial spends 10-16 s importing, so 41 trials one at a time (~900 s)
#: do not fit a 10-minute call; five side by side should (~370 s). --parallel 1 for clean timings.
DEFAULT_PARALLEL = 5
#: the stopwatch step's name (also for --only) and its arguments: one model on CUDA, 3 rounds of two fresh
#: processes (~20 s each on a GPU image), run alone after the sweeps when STOPWATCH_NEED_S (two rounds) of budget
#: is left; stopped at the budget, it keeps the rounds it finished (it rewrites its table after each)
STOPWATCH = "stopwatch"
STOPWATCH_ARGS = ("--models", "qwen2.5-0.5b", "--dtypes", "bfloat16", "--repeats", "3", "--device", "cuda")
STOPWATCH_NEED_S = 100
#: wheels installed whatever the machine has (prepare.sh fetches them); every other wheel in WHEELS is a
#: dependency (DEPENDENCY_WHEELS: runai-model-streamer imports humanize), installed only where its project is
#: missing, so a carried wheel never replaces the image's own
NEEDED_WHEELS = ("py_spy", "bitsandbytes", "fastsafetensors", "runai_model_streamer", "instanttensor")
DEPENDENCY_WHEELS = ("humanize",)
#: the third-party load.method packages the environment check imports (module -> distribution)
METHOD_PACKAGES = {"fastsafetensors": "fastsafetensors", "runai_model_streamer": "runai-model-streamer",
                   "instanttensor": "instanttensor"}
MAX_FILE_BYTES = 15 * 2**20

ENV_CHECK = r"""
import json, shutil, subprocess, sys
out = {"python": sys.version.split()[0]}
import torch, transformers, accelerate, safetensors
out.update(torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__,
           accelerate=accelerate.__version__, safetensors=safetensors.__version__,
           cuda_available=torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(device=p.name, device_memory_bytes=p.total_memory, sm_count=p.multi_processor_count)
try:
    import bitsandbytes as bnb
    out["bitsandbytes"] = bnb.__version__
    x = torch.randn(64, 64, device="cuda", dtype=torch.float16)
    q, state = bnb.functional.quantize_4bit(x)
    out["bitsandbytes_cuda_roundtrip_max_err"] = float((bnb.functional.dequantize_4bit(q, state) - x).abs().max())
except Exception as e:
    out["bitsandbytes_error"] = f"{type(e).__name__}: {e}"
spy = shutil.which("py-spy") or str(__import__("pathlib").Path(sys.executable).parent / "py-spy")
try:
    out["py_spy"] = subprocess.run([spy, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
except Exception as e:
    out["py_spy_error"] = f"{type(e).__name__}: {e}"
try:
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    out["nvml_used_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
    out["nvml_driver"] = str(pynvml.nvmlSystemGetDriverVersion())
except Exception as e:
    out["nvml_error"] = f"{type(e).__name__}: {e}"
import importlib, importlib.metadata
for mod, dist in {**METHOD_PACKAGES, "numpy": "numpy", "humanize": "humanize"}.items():
    try:
        importlib.import_module(mod)
        out[mod] = importlib.metadata.version(dist)
    except Exception as e:
        out[f"{mod}_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


class Kit:
    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.log_f = open(out / "kit.log", "a", buffering=1)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        self.log_f.write(line + "\n")

    def start(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        self.log(f"{name}: {' '.join(cmd)[:200]}")
        log = open(self.out / f".{name.replace(' ', '_')}.log", "w")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)

    def finish(self, name: str, proc: subprocess.Popen, deadline: float) -> subprocess.CompletedProcess:
        """Wait for ``proc`` until ``deadline`` (monotonic); past it send SIGINT (a sweep keeps its finished
        trials and writes its report), then SIGKILL the group after 20 s. Its output goes to kit.log."""
        t = time.monotonic()
        try:
            proc.wait(timeout=max(1.0, deadline - t))
        except subprocess.TimeoutExpired:
            self.log(f"{name}: out of time, interrupting (finished trials are kept)")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log = self.out / f".{name.replace(' ', '_')}.log"
        out = log.read_text(errors="replace") if log.exists() else ""
        log.unlink(missing_ok=True)
        self.log_f.write(out)
        self.log(f"{name}: exit {proc.returncode}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def step(self, name: str, cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` to the end or ``timeout`` s (never past the budget less 40 s kept for check and pack)."""
        deadline = time.monotonic() + max(5.0, min(timeout, self.left() - 40))
        return self.finish(name, self.start(name, cmd, **kw), deadline)


def wheels_present() -> list[str]:
    have = [p.name for p in WHEELS.glob("*.whl")] if WHEELS.is_dir() else []
    return [w for w in (*NEEDED_WHEELS, *DEPENDENCY_WHEELS) if not any(h.startswith(w + "-") for h in have)]


def project(name: str) -> str:
    """The normalised project name (PEP 503) of a distribution or wheel file name."""
    return re.sub(r"[-_.]+", "-", name.split("-")[0] if name.endswith(".whl") else name).lower()


def wheels_to_install() -> tuple[list[Path], list[str]]:
    """(wheels to install, projects left as the machine has them): every wheel of NEEDED_WHEELS, and each
    dependency wheel whose project this Python lacks (--no-deps installs nothing it was not given)."""
    have = {project(d.metadata["Name"] or "") for d in importlib.metadata.distributions()}
    needed = {project(w) for w in NEEDED_WHEELS}
    install, kept = [], []
    for w in sorted(WHEELS.glob("*.whl")):
        name = project(w.name)
        if name in needed or name not in have:
            install.append(w)
        else:
            kept.append(name)
    return install, kept


def yaml_files(only: set[str] = frozenset()) -> list[Path]:
    return [YAML_DIR / f"{stem}.yaml" for stem, _ in SWEEPS if not only or stem in only]


def dry_run() -> int:
    """On any machine: every GPU YAML expands and validates; the wheels the device needs are here."""
    rc = 0
    for y in yaml_files():
        p = subprocess.run([*loadprof_cmd(), "expand", "--json", str(y)],
                           capture_output=True, text=True, cwd=ROOT)
        plan = json.loads(p.stdout) if p.returncode == 0 else {}
        n, rep = len(plan.get("strategies", [])), plan.get("repeat") or 1
        print(f"{'ok ' if p.returncode == 0 else 'BAD'} {y.relative_to(ROOT)}: "
              f"{f'{n} strategies x {rep} = {n * rep} trials' if p.returncode == 0 else p.stderr.strip()[-300:]}")
        rc |= p.returncode != 0
    p = subprocess.run([*stopwatch_cmd(ROOT / "stopwatch-dry-run"), "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    print(f"{'ok ' if p.returncode == 0 else 'BAD'} benchmarks/stopwatch.py {' '.join(STOPWATCH_ARGS)}"
          + ("" if p.returncode == 0 else f": {p.stderr.strip()[-300:]}"))
    rc |= p.returncode != 0
    missing = wheels_present()
    print(f"{'BAD' if missing else 'ok '} wheels in {WHEELS.relative_to(ROOT)}: "
          + (f"missing {', '.join(missing)} (run benchmarks/gpu/prepare.sh)" if missing
             else ", ".join((*NEEDED_WHEELS, *DEPENDENCY_WHEELS))))
    return 1 if rc or missing else 0


def stopwatch_cmd(out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "stopwatch.py"), *STOPWATCH_ARGS, "--out", str(out)]


def run_stopwatch(kit: Kit, work: Path) -> None:
    """benchmarks/stopwatch.py on CUDA, alone on the GPU after the sweeps, if the budget holds it; a skip leaves
    its reason in WORK/stopwatch/skipped.txt for the check to report."""
    out = work / STOPWATCH
    out.mkdir(parents=True, exist_ok=True)
    if kit.left() - 40 < STOPWATCH_NEED_S:
        why = (f"skipped: {kit.left():.0f} s of budget left after the sweeps; the stopwatch needs about "
               f"{STOPWATCH_NEED_S} s for two rounds, plus 40 s kept for check and pack (run.py --only {STOPWATCH} "
               f"runs it alone)")
        (out / "skipped.txt").write_text(why + "\n")
        kit.log(f"stopwatch: {why}")
        return
    kit.step("stopwatch", stopwatch_cmd(out), kit.left(), cwd=ROOT)


def loadprof_cmd() -> list[str]:
    """The CLI through this interpreter: found whether or not its scripts folder is on PATH."""
    return [sys.executable, "-m", "loadprof.cli.main"]


def synth_models(kit: Kit, only: set[str]) -> None:
    """Build every synthetic checkpoint of the sweeps at once, before any trial runs."""
    models = set()
    for y in yaml_files(only):
        p = kit.step(f"expand {y.name}", loadprof_cmd() + ["expand", "--json", str(y)], 30)
        if p and p.returncode == 0:
            for s in json.loads(p.stdout[p.stdout.index("{"):])["strategies"]:
                syn = s["model"].get("synthetic")
                if syn:
                    models.add((syn["shape"], syn["dtype"], syn["seed"], syn["max_shard_size"]))
    t = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "loadprof.strategies.synthetic", "--shape", sh, "--dtype", dt,
                               "--seed", str(seed), "--max-shard-size", mss], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for sh, dt, seed, mss in sorted(models)]
    for (sh, dt, *_), p in zip(sorted(models), procs):
        try:
            out, _ = p.communicate(timeout=max(10, 180 - (time.monotonic() - t)))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        kit.log(f"synth {sh} {dt}: exit {p.returncode} {out.strip()[-300:]}")
    kit.log(f"synth: {len(models)} checkpoints in {time.monotonic() - t:.1f} s")


def run_sweeps(kit: Kit, work: Path, sweeps: list[str], parallel: int, resume_from: Path | None) -> None:
    """The ``sweeps``, ``parallel`` at a time (each still one trial at a time), in that order. A sweep found
    in ``resume_from`` (a folder of an earlier, interrupted kit run) is copied in and resumed, not redone."""
    caps = dict(SWEEPS)
    queue = [(stem, caps[stem]) for stem in sweeps]
    running: list[tuple[str, subprocess.Popen, float]] = []
    if parallel > 1 and queue:
        kit.log(f"sweeps run {parallel} at a time: their timings were taken beside each other on one GPU")
    while queue or running:
        while queue and len(running) < parallel:
            stem, cap = queue.pop(0)
            if kit.left() < 60:
                kit.log(f"{stem}: skipped, {kit.left():.0f} s of budget left")
                continue
            cmd = [*loadprof_cmd(), "compare", str(YAML_DIR / f"{stem}.yaml"), "--out", str(work / stem),
                   "--no-progress"]
            if resume_from is not None and (resume_from / stem / "results.jsonl").exists():
                shutil.copytree(resume_from / stem, work / stem)
                cmd.append("--resume")
            # Side by side, a sweep's serial time cap does not hold (the first run lost a quantization trial to
            # it at 180 s while the whole kit finished in 291 s): then only the whole budget bounds a sweep.
            deadline = time.monotonic() + (min(cap, kit.left() - 40) if parallel == 1 else kit.left() - 40)
            running.append((stem, kit.start(f"sweep {stem}", cmd, cwd=work), deadline))
        if not running:
            break
        stem, proc, deadline = min(running, key=lambda r: r[2])
        done = [r for r in running if r[1].poll() is not None]
        if done:
            stem, proc, deadline = done[0]
        elif time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        kit.finish(f"sweep {stem}", proc, deadline)
        running = [r for r in running if r[1] is not proc]


def stopwatch_section(work: Path) -> str:
    """The stopwatch step's table for report.md, or why there is none."""
    out = work / STOPWATCH
    for name, say in (("table.txt", "```\n{}```\n"), ("skipped.txt", "{}")):
        if (out / name).exists():
            return f"# stopwatch on CUDA (benchmarks/stopwatch.py {' '.join(STOPWATCH_ARGS)})\n\n" + say.format(
                (out / name).read_text())
    return "# stopwatch on CUDA: no table (the step did not finish; see kit.log)\n"


def pack(kit: Kit, work: Path, selected: list[str], parallel: int) -> None:
    parts = [(kit.out / "checks.md").read_text() if (kit.out / "checks.md").exists() else "# GPU kit: no checks\n"]
    if parallel > 1:
        parts[0] += (f"\nSweeps ran {parallel} at a time on the one GPU (each sweep one trial at a time): their "
                     f"timings were taken beside other trials and are not clean single-trial figures.\n")
    for stem, _ in SWEEPS:
        rep = work / stem / "report.md"
        if rep.exists():
            parts.append(rep.read_text())
        elif stem in selected:
            parts.append(f"# {stem}: no report (the sweep did not finish; see kit.log)\n")
    if STOPWATCH in selected:
        parts.append(stopwatch_section(work))
    (kit.out / "report.md").write_text("\n\n---\n\n".join(parts))
    tar_path = kit.out / "runs.tar.gz"
    skip_big = False
    while True:
        with tarfile.open(tar_path, "w:gz") as tar:
            for f in sorted(work.rglob("*")):
                if not f.is_file() or "offload" in f.relative_to(work).parts[:-1] or f.stat().st_size > MAX_FILE_BYTES:
                    continue  # disk-offloaded weights are copies of the checkpoint, not results
                if skip_big and f.stat().st_size > 2 * 2**20 and f.suffix != ".pickle":
                    continue
                tar.add(f, arcname=str(f.relative_to(work.parent)))
        if tar_path.stat().st_size <= MAX_FILE_BYTES or skip_big:
            break
        skip_big = True  # too large: leave out big logs and timelines, keep reports and the snapshot
    kit.log(f"pack: runs.tar.gz {tar_path.stat().st_size / 2**20:.1f} MiB")


def install(kit: Kit) -> None:
    """The carried wheels and loadprof, with no network (see wheels_to_install for which wheels)."""
    missing = wheels_present()
    if missing:
        kit.log(f"missing wheels {missing}: run benchmarks/gpu/prepare.sh on the CPU machine and carry "
                f"benchmarks/gpu/wheels")
    wheels, kept = wheels_to_install()
    if kept:
        kit.log(f"install wheels: the machine has {', '.join(kept)} already; those wheels are left out")
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q"]
    if wheels:
        kit.step("install wheels", pip + [str(w) for w in wheels], 120)
    kit.step("install loadprof", pip + ["--no-build-isolation", "-e", str(ROOT)], 120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="loadprof GPU verification kit")
    ap.add_argument("out", type=Path, nargs="?", default=None, help="output folder (e.g. $OUT on the device)")
    ap.add_argument("--dry-run", action="store_true", help="validate the GPU YAMLs and check the wheels, run nothing")
    ap.add_argument("--budget-s", type=float, default=540.0, help="whole-kit wall budget (default 540)")
    ap.add_argument("--only", default="", help="comma-separated steps to run (default all), sweeps in that order: "
                    + ", ".join([*(s for s, _ in SWEEPS), STOPWATCH]))
    ap.add_argument("--work", type=Path, default=Path("/tmp/loadprof-gpu"), help="where sweeps run")
    ap.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                    help=f"sweeps at a time (default {DEFAULT_PARALLEL}; 1 gives clean single-trial timings)")
    ap.add_argument("--resume-from", type=Path, default=None,
                    help="a folder of sweep folders from an earlier run: those sweeps resume instead of restarting")
    ap.add_argument("--skip-install", action="store_true", help="loadprof and the wheels are installed already")
    args = ap.parse_args(argv)
    if args.dry_run:
        return dry_run()
    if args.out is None:
        ap.error("OUT is required unless --dry-run")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                      LOADPROF_CACHE=os.environ.get("LOADPROF_CACHE", "/tmp/loadprof-cache"))
    kit = Kit(args.out, args.budget_s)
    selected = [s for s in args.only.split(",") if s] or [*(s for s, _ in SWEEPS), STOPWATCH]
    unknown = [s for s in selected if s not in dict(SWEEPS) and s != STOPWATCH]
    if unknown:
        ap.error(f"unknown step {unknown[0]!r}; known: {', '.join([*(s for s, _ in SWEEPS), STOPWATCH])}")
    sweeps = [s for s in selected if s in dict(SWEEPS)]  # also the order to run them in
    if not args.skip_install:
        install(kit)
    env = kit.step("env", [sys.executable, "-c", f"METHOD_PACKAGES = {METHOD_PACKAGES!r}\n" + ENV_CHECK], 60)
    if env and env.returncode == 0:
        (args.out / "env.json").write_text(env.stdout.strip().splitlines()[-1] + "\n")
    if args.parallel == 1 and sweeps:
        synth_models(kit, set(sweeps))  # else each sweep builds its own, overlapping the other sweeps' trials
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    run_sweeps(kit, work, sweeps, args.parallel, args.resume_from)
    if STOPWATCH in selected:
        run_stopwatch(kit, work)
    chk = kit.step("check", [sys.executable, str(KIT / "check.py"), str(work), "--md", str(args.out / "checks.md"),
                             "--json", str(args.out / "checks.json")], 60)
    pack(kit, work, selected, args.parallel)
    kit.log(f"done in {time.monotonic() - kit.t0:.0f} s; checks exit {chk.returncode if chk else '?'}")
    return chk.returncode if chk else 1


if __name__ == "__main__":
    sys.exit(main())
