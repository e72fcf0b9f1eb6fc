"""Checks a GPU kit run: reads each sweep's report.json (and the snapshot file) and verifies what the run
must show. Writes checks.json and checks.md; exits 1 if a required check fails, 0 otherwise.

Usage: python benchmarks/gpu/check.py WORK_DIR --md OUT/checks.md --json OUT/checks.json

Every check names its evidence (trial labels and figures), so the committed report says what was seen,
not only that it passed. The load.method and stopwatch checks live beside it (check_methods.py). Needs loadprof
installed (its shapes table and figures catalogue), plus torch for reading the CUDA snapshot.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

from loadprof.strategies.shapes import SHAPES, dims  # torch-free: the shapes table

from check_methods import METHOD_CHECKS, check_stopwatch  # noqa: E402 - beside this script

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
WEIGHTS_TOLERANCE = 0.05
KV_TOLERANCE = 0.02


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool | None, evidence: str, required: bool = True) -> None:
        """ok None: not checkable in this run (its sweep did not run); a required one then fails."""
        status = "pass" if ok else ("not run" if ok is None else "FAIL")
        self.rows.append({"check": name, "status": status, "required": required, "evidence": evidence})

    def skipped(self, name: str, evidence: str) -> None:
        """A required check whose subject loadprof skipped on this machine (a method's package did not import):
        said so, and failed like any check that did not pass."""
        self.rows.append({"check": name, "status": "skipped", "required": True, "evidence": evidence})

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["required"] and r["status"] != "pass"]


def load_sweeps(work: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for rep in sorted(work.glob("*/report.json")):
        d = json.loads(rep.read_text())
        d["_dir"] = rep.parent
        out[d["name"]] = d
    for plan in sorted(work.glob("*/sweep.json")):  # a sweep that started but wrote no report: it crashed
        if not (plan.parent / "report.json").exists():
            name = json.loads(plan.read_text()).get("name", plan.parent.name)
            out.setdefault(name, {"name": name, "trials": [], "interrupted": True, "_dir": plan.parent})
    return out


def on_cuda(t: dict[str, Any]) -> bool:
    return t["status"] == "ok" and any(str(k).startswith("cuda") for k in t["metrics"].get("bytes_by_device", {}))


def gb(x: float) -> str:
    return f"{x / 2**30:.3f} GiB"


def check_trials(c: Checks, sweeps: dict[str, Any]) -> None:
    bad = [f"{name}/{t['label']}: {t['status']} ({(t.get('reason') or '')[:160]})"
           for name, s in sweeps.items() for t in s["trials"] if t["status"] != "ok"]
    for name, s in sweeps.items():
        planned = planned_trials(s["_dir"])
        if s.get("interrupted") or (planned is not None and planned > len(s["trials"])):
            bad.append(f"{name}: interrupted, {len(s['trials'])} of {planned if planned is not None else '?'} "
                       f"planned trials ran")
    n = sum(planned_trials(s["_dir"]) or len(s["trials"]) for s in sweeps.values())
    n_ok = sum(t["status"] == "ok" for s in sweeps.values() for t in s["trials"])
    c.add("every trial ran ok on the GPU", not bad and n > 0,
          f"{n_ok}/{n} planned trials ok" + ("; " + "; ".join(bad) if bad else ""))


def planned_trials(sweep_dir: Path) -> int | None:
    """Strategies x repeats the sweep planned (its sweep.json), so a sweep cut short cannot pass as complete."""
    try:
        plan = json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return None
    return len(plan.get("strategies", [])) * max(1, int(plan.get("repeat") or 1))


def check_cuda_peaks(c: Checks, sweeps: dict[str, Any]) -> None:
    rows = []
    for s in sweeps.values():
        for t in filter(on_cuda, s["trials"]):
            per = t["probes"].get("memory", {}).get("per_phase", {})
            peaks = {p: per[p].get("peak_cuda_allocated_bytes") for p in ("load", "warmup", "generate") if p in per}
            if peaks and all(v for v in peaks.values()):
                rows.append((s["name"], t["label"], peaks))
    ev = "; ".join(f"{lbl}: " + ", ".join(f"{p} {gb(v)}" for p, v in pk.items()) for _, lbl, pk in rows[:4])
    c.add("CUDA allocator peak per phase (load, warmup, generate)", bool(rows) or None,
          f"{len(rows)} CUDA trials with per-phase peaks; {ev}")


def check_weights(c: Checks, sweeps: dict[str, Any]) -> None:
    seen: dict[str, list[str]] = {}
    ok_all = True
    for name in ("gpu-quantization", "gpu-placement"):
        for t in sweeps.get(name, {}).get("trials", []):
            if not on_cuda(t) or len(t["metrics"].get("bytes_by_device", {})) > 1:
                continue  # offloaded trials hold part of the weights elsewhere
            est = t["metrics"].get("estimate") or {}
            m = t["metrics"]
            on_gpu = sum(v for k, v in m["bytes_by_device"].items() if k.startswith("cuda"))
            got = on_gpu + m.get("quant_state_bytes", 0)
            want = est.get("tensor_bytes", est.get("weights_bytes", 0)) + (est.get("quant_state_bytes", 0)
                                                                             if m.get("quant_state_bytes") else 0)
            load_phase = t["probes"].get("memory", {}).get("per_phase", {}).get("load", {})
            load_alloc = load_phase.get("end_cuda_allocated_bytes")
            ratio = got / want if want else math.inf
            ok = abs(ratio - 1) <= WEIGHTS_TOLERANCE
            ok_all &= ok
            strat = t["strategy"]
            mode = f"{strat['model']['synthetic']['shape']} {strat['load']['dtype']} {strat['load']['quantization']}"
            alloc = f", allocator after load {load_alloc / want:.3f}x" if load_alloc and want else ""
            seen.setdefault(mode, []).append(f"{mode}: {got:,} B on GPU vs {want:,} B estimated ({ratio:.4f}x{alloc})")
    c.add(f"weight bytes on the GPU = estimate within {WEIGHTS_TOLERANCE:.0%}, every dtype and bnb mode",
          (ok_all and bool(seen)) if seen else None, "; ".join(v[0] for v in seen.values()))


def _slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    ss_res = sum((y - (my + b * (x - mx))) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return b, (1 - ss_res / ss_tot) if ss_tot else 1.0


def check_static_kv(c: Checks, sweeps: dict[str, Any]) -> None:
    s = sweeps.get("gpu-max-new-tokens")
    pts: dict[str, list[tuple[int, int]]] = {}
    formula = None
    for t in (s or {}).get("trials", []):
        if t["status"] != "ok" or t["metrics"].get("generate_start_alloc_bytes") is None:
            continue
        g = t["strategy"]["generate"]
        alloc = t["metrics"]["generate_start_alloc_bytes"]
        pts.setdefault(g["cache_implementation"], []).append((g["max_new_tokens"], alloc))
        d = dims(SHAPES[t["strategy"]["model"]["synthetic"]["shape"]])
        dtype_bytes = DTYPE_BYTES[t["strategy"]["load"]["dtype"]]
        formula = 2 * d["layers"] * d["kv_heads"] * d["head_dim"] * dtype_bytes * g["batch_size"]
    static = sorted(pts.get("static", []))
    if len(static) < 3 or formula is None:
        c.add("static KV bytes per token of cap = 2 x layers x kv_heads x head_dim x dtype bytes x batch", None,
              f"{len(static)} static-cache trials with a traced generate start (need 3)")
        return
    slope, r2 = _slope([x for x, _ in static], [y for _, y in static])
    dyn = sorted(pts.get("dynamic", []))
    dyn_txt = (f"; dynamic cache: {dyn[0][1]:,} B at cap {dyn[0][0]} vs {dyn[-1][1]:,} B at cap {dyn[-1][0]}"
               if len(dyn) >= 2 else "")
    c.add("static KV bytes per token of cap = 2 x layers x kv_heads x head_dim x dtype bytes x batch",
          abs(slope / formula - 1) <= KV_TOLERANCE,
          f"fit over caps {[x for x, _ in static]}: {slope:,.1f} B per token of cap (R^2 {r2:.4f}) vs formula "
          f"{formula:,} B{dyn_txt}")


def check_offload(c: Checks, sweeps: dict[str, Any]) -> None:
    s = sweeps.get("gpu-placement")
    if not s:
        c.add("offload finding names the layers on CPU and on disk", None, "placement sweep did not run")
        return
    found = [f for f in s["findings"] if f["kind"] == "offload"]
    titles = " ".join(f["title"] for f in found)  # the title itself must say it, not a strategy's label
    c.add("offload finding names the layers on CPU and on disk", " on cpu" in titles and " on disk" in titles,
          "; ".join(f"{f['title']} ({f.get('label', '')})" for f in found) or "no offload finding")


def _figures(sweeps: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, dict[str, float]]]:
    out = []
    for s in sweeps.values():
        for t in filter(on_cuda, s["trials"]):
            if all(t["metrics"].get(k) is not None for k in keys):
                out.append((t["label"], {k: t["metrics"][k] for k in keys}))
    return out


def check_transfer(c: Checks, sweeps: dict[str, Any]) -> None:
    rows = _figures(sweeps, ("load_h2d_gb_s", "h2d_pageable_gb_s", "h2d_pinned_gb_s"))
    ev = "; ".join(f"{lbl}: load placed weights at {m['load_h2d_gb_s']:.2f} GB/s vs pageable "
                   f"{m['h2d_pageable_gb_s']:.1f} / pinned {m['h2d_pinned_gb_s']:.1f} GB/s" for lbl, m in rows[:4])
    c.add("host->device transfer in GB/s against the measured H2D bandwidth", bool(rows) or None, ev)


def check_roofline(c: Checks, sweeps: dict[str, Any]) -> None:
    rows = _figures(sweeps, ("roofline_fraction", "membw_gb_s", "decode_tok_s", "roofline_tok_s"))
    sane = all(0 < m["roofline_fraction"] <= 1.2 for _, m in rows)
    ev = "; ".join(f"{lbl}: {m['decode_tok_s']:.0f} tok/s = {m['roofline_fraction']:.1%} of {m['roofline_tok_s']:.0f} "
                   f"(device copy {m['membw_gb_s']:.0f} GB/s)" for lbl, m in rows[:4])
    c.add("decode roofline against the measured device bandwidth", (bool(rows) and sane) if rows else None, ev)


def check_nvml(c: Checks, sweeps: dict[str, Any]) -> None:
    rows = []
    for s in sweeps.values():
        for t in filter(on_cuda, s["trials"]):
            per = t["probes"].get("memory", {}).get("per_phase", {})
            got = {p: r["end_nvml_used_bytes"] for p, r in per.items() if "/" not in p and "end_nvml_used_bytes" in r}
            if "load" in got:
                rows.append((t["label"], got))
    ev = "; ".join(f"{lbl}: " + ", ".join(f"{p} {gb(v)}" for p, v in g.items()) for lbl, g in rows[:2])
    c.add("NVML device-used per phase", bool(rows) or None, ev)


def check_snapshot(c: Checks, sweeps: dict[str, Any]) -> None:
    s = sweeps.get("gpu-snapshot")
    files = list(s["_dir"].glob("trials/*/cuda_snapshot.pickle")) if s else []
    if not files:
        c.add("CUDA snapshot readable by torch.cuda._memory_viz", None, "no cuda_snapshot.pickle")
        return
    try:
        from torch.cuda import _memory_viz

        with open(files[0], "rb") as f:
            snap = pickle.load(f)
        html = _memory_viz.trace_plot(snap)
        seg = _memory_viz.segment_plot(snap)
        events = sum(len(tr) for tr in snap.get("device_traces", []))
        ok = bool(snap.get("segments")) and events > 0 and len(html) > 1000 and len(seg) > 1000
        c.add("CUDA snapshot readable by torch.cuda._memory_viz", ok,
              f"{files[0].name}: {files[0].stat().st_size:,} B, {len(snap.get('segments', []))} segments, "
              f"{events} trace events; trace_plot {len(html):,} chars, segment_plot {len(seg):,} chars")
    except Exception as e:  # noqa: BLE001 - a reader failure is the finding
        c.add("CUDA snapshot readable by torch.cuda._memory_viz", False, f"{type(e).__name__}: {e}")


def check_compile(c: Checks, sweeps: dict[str, Any]) -> None:
    s = sweeps.get("gpu-max-new-tokens")
    rows = [(t["label"], t["metrics"]) for t in (s or {}).get("trials", [])
            if on_cuda(t) and t["strategy"]["generate"]["cache_implementation"] == "static"
            and t["metrics"].get("cold_call_extra_s") is not None]
    ev = "; ".join(f"{lbl}: cold call +{m['cold_call_extra_s']:.2f} s ({m.get('cold_call_extra_includes', '-')})"
                   for lbl, m in rows[:4])
    c.add("cold first call (torch.compile with a static cache) reported apart", bool(rows) or None, ev)


def check_cleanup(c: Checks, sweeps: dict[str, Any]) -> None:
    rows = [(t["label"], t["metrics"]) for t in sweeps.get("gpu-quantization", {}).get("trials", [])
            if on_cuda(t) and t["metrics"].get("cleanup_cuda_allocated_after_bytes") is not None]
    ev = "; ".join(f"{lbl}: {m['cleanup_cuda_allocated_after_bytes'] / 2**20:.1f} MiB still allocated after cleanup "
                   f"(weights {m['weights_bytes'] / 2**20:.0f} MiB)" for lbl, m in rows[:6])
    c.add("cleanup phase measured (GPU memory left after the model is dropped)", bool(rows) or None, ev,
          required=False)


CHECKS: tuple[Callable[[Checks, dict[str, Any]], None], ...] = (
    check_trials, check_cuda_peaks, check_weights, check_static_kv, check_offload, check_transfer,
    check_roofline, check_nvml, check_snapshot, check_compile, check_cleanup)


def render_md(c: Checks, sweeps: dict[str, Any]) -> str:
    lines = ["# GPU kit checks", ""]
    envs = [t["env"] for s in sweeps.values() for t in s["trials"] if t.get("env")]
    env = next((e for e in envs if "bitsandbytes" in e), envs[0] if envs else {})
    if env:
        lines += [f"Device: {env.get('cuda_device', '?')}, CUDA {env.get('cuda_version', '?')}, torch "
                  f"{env.get('torch', '?')}, transformers {env.get('transformers', '?')}, bitsandbytes "
                  f"{env.get('bitsandbytes', 'not loaded')}", ""]
    lines += ["| check | status | evidence |", "|---|---|---|"]
    for r in c.rows:
        req = "" if r["required"] else " (info)"
        lines.append(f"| {r['check']}{req} | {r['status']} | {r['evidence'].replace('|', '/')} |")
    lines += ["", f"Sweeps read: {', '.join(sweeps) or 'none'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    sweeps = load_sweeps(args.work)
    c = Checks()
    for fn, arg in [*((f, sweeps) for f in (*CHECKS, *METHOD_CHECKS)), (check_stopwatch, args.work)]:
        try:
            fn(c, arg)
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            c.add(fn.__name__, False, f"the check itself failed: {type(e).__name__}: {e}")
    args.md.write_text(render_md(c, sweeps))
    args.json.write_text(json.dumps({"checks": c.rows, "failed": len(c.failed)}, indent=1))
    print(render_md(c, sweeps))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
