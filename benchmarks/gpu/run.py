"""The GPU verification kit: one prepared run on a bare, offline CUDA machine.

    python benchmarks/gpu/run.py OUT            # on the GPU machine, from the repository root
    python benchmarks/gpu/run.py OUT --dry-run  # anywhere: validate the GPU YAMLs, check the wheels

Steps, each under its own timeout and all under one budget (default 450 s, so a 10-minute call has room
for the machine's start):
  install  the carried wheels (py-spy, bitsandbytes; see prepare.sh) and loadprof, with no network
  env      CUDA device, torch/transformers/bitsandbytes versions, py-spy, NVML
  synth    the synthetic checkpoints the sweeps use, built in parallel before any trial is timed
  sweeps   strategies/examples/gpu/*.yaml, one `loadprof compare` each, four at a time by default (each
           sweep one trial at a time); a sweep that would overrun its time or the budget is interrupted
           (SIGINT: its finished trials are kept and reported)
  check    benchmarks/gpu/check.py: what the run must show (allocator peaks, weights vs estimate, KV
           per token, offload finding, H2D transfer, roofline, NVML, snapshot, compile), pass/fail each
  pack     OUT/report.md (checks + every sweep's report), OUT/checks.json, OUT/env.json, OUT/kit.log,
           OUT/runs.tar.gz (every sweep folder: report.json/md/html/csv, results, trial logs, snapshot);
           a handful of files, each under 16 MiB

Standard library only: it runs before loadprof is installed.
"""

from __future__ import annotations

import argparse
import json
import os
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
#: (yaml stem, sweep timeout s), longest first: with sweeps running side by side the max_new_tokens sweep
#: (8 fresh processes, 4 of them compiling a static cache for ~25 s each on an H200) is the critical path
SWEEPS = (("max_new_tokens", 330), ("placement", 240), ("quantization", 180), ("snapshot", 60),
          ("batch_scaling", 120))
#: sweeps at a time: on an H200 a fresh trial spends 10-16 s importing, so 27 trials one at a time (~640 s)
#: do not fit a 10-minute call; four side by side should (~350 s). --parallel 1 for clean timings.
DEFAULT_PARALLEL = 4
NEEDED_WHEELS = ("py_spy", "bitsandbytes")
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
    return [w for w in NEEDED_WHEELS if not any(h.startswith(w) for h in have)]


def yaml_files(only: set[str] = frozenset()) -> list[Path]:
    return [YAML_DIR / f"{stem}.yaml" for stem, _ in SWEEPS if not only or stem in only]


def dry_run() -> int:
    """On any machine: every GPU YAML expands and validates; the wheels the device needs are here."""
    rc = 0
    for y in yaml_files():
        p = subprocess.run([*loadprof_cmd(), "expand", "--json", str(y)],
                           capture_output=True, text=True, cwd=ROOT)
        n = len(json.loads(p.stdout)["strategies"]) if p.returncode == 0 else 0
        print(f"{'ok ' if p.returncode == 0 else 'BAD'} {y.relative_to(ROOT)}: "
              f"{f'{n} strategies' if p.returncode == 0 else p.stderr.strip()[-300:]}")
        rc |= p.returncode != 0
    missing = wheels_present()
    print(f"{'BAD' if missing else 'ok '} wheels in {WHEELS.relative_to(ROOT)}: "
          + (f"missing {', '.join(missing)} (run benchmarks/gpu/prepare.sh)" if missing else "py-spy, bitsandbytes"))
    return 1 if rc or missing else 0


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


def run_sweeps(kit: Kit, work: Path, only: list[str], parallel: int, resume_from: Path | None) -> None:
    """Every sweep, ``parallel`` at a time (each still one trial at a time), in priority order. A sweep found
    in ``resume_from`` (a folder of an earlier, interrupted kit run) is copied in and resumed, not redone."""
    caps = dict(SWEEPS)
    queue = [(stem, caps[stem]) for stem in only] if only else list(SWEEPS)
    running: list[tuple[str, subprocess.Popen, float]] = []
    if parallel > 1:
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


def pack(kit: Kit, work: Path, only: list[str], parallel: int) -> None:
    parts = [(kit.out / "checks.md").read_text() if (kit.out / "checks.md").exists() else "# GPU kit: no checks\n"]
    if parallel > 1:
        parts[0] += (f"\nSweeps ran {parallel} at a time on the one GPU (each sweep one trial at a time): their "
                     f"timings were taken beside other trials and are not clean single-trial figures.\n")
    for stem, _ in SWEEPS:
        rep = work / stem / "report.md"
        if rep.exists():
            parts.append(rep.read_text())
        elif not only or stem in only:
            parts.append(f"# {stem}: no report (the sweep did not finish; see kit.log)\n")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="loadprof GPU verification kit")
    ap.add_argument("out", type=Path, nargs="?", default=None, help="output folder (e.g. $OUT on the device)")
    ap.add_argument("--dry-run", action="store_true", help="validate the GPU YAMLs and check the wheels, run nothing")
    ap.add_argument("--budget-s", type=float, default=450.0, help="whole-kit wall budget (default 450)")
    ap.add_argument("--only", default="", help="comma-separated sweeps to run (default all): "
                    + ", ".join(s for s, _ in SWEEPS))
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
    only = [s for s in args.only.split(",") if s]  # also the order to run them in
    unknown = [s for s in only if s not in dict(SWEEPS)]
    if unknown:
        ap.error(f"unknown sweep {unknown[0]!r}; known: {', '.join(s for s, _ in SWEEPS)}")
    if not args.skip_install:
        missing = wheels_present()
        if missing:
            kit.log(f"missing wheels {missing}: run benchmarks/gpu/prepare.sh on the CPU machine and carry "
                    f"benchmarks/gpu/wheels")
        pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q"]
        kit.step("install wheels", pip + [str(w) for w in sorted(WHEELS.glob("*.whl"))], 120)
        kit.step("install loadprof", pip + ["--no-build-isolation", "-e", str(ROOT)], 120)
    env = kit.step("env", [sys.executable, "-c", ENV_CHECK], 60)
    if env and env.returncode == 0:
        (args.out / "env.json").write_text(env.stdout.strip().splitlines()[-1] + "\n")
    if args.parallel == 1:
        synth_models(kit, set(only))  # else each sweep builds its own, overlapping the other sweeps' trials
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    run_sweeps(kit, work, only, args.parallel, args.resume_from)
    chk = kit.step("check", [sys.executable, str(KIT / "check.py"), str(work), "--md", str(args.out / "checks.md"),
                             "--json", str(args.out / "checks.json")], 60)
    pack(kit, work, only, args.parallel)
    kit.log(f"done in {time.monotonic() - kit.t0:.0f} s; checks exit {chk.returncode if chk else '?'}")
    return chk.returncode if chk else 1


if __name__ == "__main__":
    sys.exit(main())
