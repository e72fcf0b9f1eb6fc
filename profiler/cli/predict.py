"""``loadprof predict TARGET``: what an untried model, dtype or placement will cost on this machine, before running it.

The command half: resolve TARGET through the one byte model (``loadprof.analysis.estimate.estimate_command``, as
``loadprof estimate`` does), read the ``--from`` runs through the one reader (``loadprof.results.report_file``),
fit the cost terms (``loadprof.analysis.calibrate``), predict (``loadprof.analysis.predict``) and render. What the
machine offers (free host and GPU memory; without ``--from`` its copy bandwidth and matmul rate, about half a
second) is read here, where measuring is allowed; analysis only computes.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from loadprof.core import units
from loadprof.reports.formats import FORMATS

COLUMNS = ("model", "dtype", "device_map", "figure", "predicted", "interval", "from")


def host_budgets(meminfo: str = "/proc/meminfo") -> dict[str, int]:
    """Free memory per device: each GPU's free bytes (torch.cuda.mem_get_info) first, then the host's
    MemAvailable."""
    out: dict[str, int] = {}
    try:
        import torch

        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            out[f"cuda:{i}"] = int(torch.cuda.mem_get_info(i)[0])
    except (ImportError, RuntimeError):
        pass
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                out["cpu"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def own_rss_bytes(status: str = "/proc/self/status") -> int | None:
    """This process's resident bytes: with torch and transformers imported for the byte model, the base any load
    starts from."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: safetensors header dtype codes -> torch's names (what ``Target.checkpoint_dtype`` compares with the load dtype)
SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def safetensors_bytes(folder: Path) -> tuple[int, str | None] | None:
    """The tensor bytes a checkpoint folder stores and the dtype most of them are in, from its safetensors headers
    only (None: no such files)."""
    by: dict[str, int] = {}
    found = False
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        found = True
        for k, v in header.items():
            if k != "__metadata__":
                by[v["dtype"]] = by.get(v["dtype"], 0) + v["data_offsets"][1] - v["data_offsets"][0]
    if not found:
        return None
    top = max(by, key=by.__getitem__, default=None)
    return sum(by.values()), SAFETENSORS_DTYPES.get(top, top.lower() if top else None)


def measured_machine() -> Any:
    """Without --from: the copy bandwidth and matmul rates measured now, in this process (the probes' own code)."""
    import time

    from loadprof.analysis.calibrate import MachineConstants
    from loadprof.probes.bandwidth import measure_copy_bandwidth, measure_matmul

    bw = measure_copy_bandwidth("cpu", time.monotonic_ns, nbytes=64 * 2**20, repeats=3)
    mm = measure_matmul("bfloat16", time.monotonic_ns)
    return MachineConstants(bw["membw_gb_s"], mm["matmul_gflops"], None, None,
                            "measured now by loadprof predict (no --from run)")


def calibration(runs: Sequence[Path], warn: Any = None) -> Any:
    """The cost terms fitted on every trial of ``runs`` (each read by the one validated reader)."""
    from loadprof.analysis.calibrate import calibrate
    from loadprof.results.report_file import read_report

    trials = []
    for run in runs:
        read = read_report(run)
        for note in read.notes if warn is not None else ():
            warn(note)
        trials += read.sweep.trials
    if not runs:
        return calibrate([], measured_machine())
    return calibrate(trials, runs=[str(r) for r in runs])


def targets(target: str, grid: Sequence[tuple[str, str]], device_maps: Sequence[str], checkpoint_dtype: str | None,
            gen: dict[str, int], budgets: dict[str, int]) -> list[Any]:
    """One Target per distinct estimate x device map; a checkpoint folder's stored bytes read from its headers."""
    from loadprof.analysis.estimate import estimate_command
    from loadprof.analysis.placement import device_of
    from loadprof.analysis.predict import Target, stored_bytes_for

    folder = Path(target)
    stored = safetensors_bytes(folder) if folder.is_dir() else None
    out = []
    for dtype, quantization in grid:
        for e in estimate_command(target, dtype=dtype, quantization=quantization, **gen):
            for dm in device_maps:
                s, cd = stored if stored is not None else (stored_bytes_for(e, checkpoint_dtype), checkpoint_dtype)
                t = Target(e, dm, s, device_of(dm, budgets), cd or (e.dtype if e.quantization == "none" else None))
                if t not in out:
                    out.append(t)
    return out


def rows(predictions: Sequence[Any]) -> list[tuple[str, ...]]:
    """One row per predicted figure (and one per note), formatted with the one value formatter."""
    out = []
    for p in predictions:
        t = p.target
        head = (t.estimate.model, t.dtype, t.device_map)
        for f in p.figures:
            name = f.figure.label + (f" ({f.condition})" if f.condition else "")
            basis = "; ".join(x.basis for x in f.terms) + "".join(f"; {n}" for n in f.notes)
            out.append(head + (name, units.value(f.value, f.figure.unit),
                               f"{units.value(f.lo, f.figure.unit)} .. {units.value(f.hi, f.figure.unit)}", basis))
        for n in p.notes:
            out.append(head + ("note", "", "", n))
    return out


def record(p: Any) -> dict[str, Any]:
    """One prediction as raw values (bytes, seconds, ms, tok/s under the catalogue's keys)."""
    t = p.target
    return {"model": t.estimate.model, "dtype": t.dtype, "device_map": t.device_map, "device": t.device,
            "batch_size": t.estimate.batch_size, "prompt_tokens": t.estimate.prompt_tokens,
            "max_new_tokens": t.estimate.max_new_tokens, "loaded_bytes": t.loaded_bytes,
            "stored_bytes": t.stored_bytes, "placement": dict(p.placement.bytes_by_device),
            "spilled": p.placement.spilled, "notes": list(p.notes),
            "figures": [{"figure": f.figure.key, "unit": f.figure.unit, "condition": f.condition, "value": f.value,
                         "lo": f.lo, "hi": f.hi, "notes": list(f.notes),
                         "terms": [{"term": x.name, "value": x.value, "basis": x.basis} for x in f.terms]}
                        for f in p.figures]}


def flat(p: Any) -> list[dict[str, Any]]:
    """A prediction as csv rows: one per figure."""
    r = record(p)
    head = {k: r[k] for k in ("model", "dtype", "device_map", "batch_size", "prompt_tokens", "max_new_tokens")}
    return [{**head, "figure": f["figure"], "condition": f["condition"], "value": f["value"], "lo": f["lo"],
             "hi": f["hi"], "unit": f["unit"]} for f in r["figures"]]


@click.command("predict")
@click.argument("target")
@click.option("--dtype", "dtypes", multiple=True, default=("auto",), show_default=True,
              help="auto, float32, float16, bfloat16 (or fp32, fp16, bf16; int8/int4); repeatable")
@click.option("--quantization", "quantizations", multiple=True, default=("none",), show_default=True,
              help="none, bnb-8bit, bnb-4bit-nf4, bnb-4bit-fp4 (or int8, int4); repeatable")
@click.option("--device-map", "device_maps", multiple=True, default=("cpu",), show_default=True,
              help="cpu, auto, cuda, cuda:N; repeatable (auto: what spills where given the free memory)")
@click.option("--checkpoint-dtype", default=None,
              help="how a shape's checkpoint is stored (default: as loaded); a folder's is read from its files")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--prompt-tokens", default=32, show_default=True, type=click.IntRange(1))
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(1))
@click.option("--from", "runs", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="a finished run (folder or report.json) to calibrate from; repeatable")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def predict(target: str, dtypes: tuple[str, ...], quantizations: tuple[str, ...], device_maps: tuple[str, ...],
            checkpoint_dtype: str | None, batch_size: int, prompt_tokens: int, max_new_tokens: int,
            runs: tuple[Path, ...], fmt: str) -> None:
    """What TARGET will cost on this machine before you run it: load cost (warm and cold page cache), peak memory
    (and what spills where under device_map=auto), TTFT and decode, each with an interval and what it came from.

    TARGET is resolved like `loadprof estimate TARGET` (a shape such as qwen2.5-1.5b, a checkpoint folder, a sweep
    YAML, a cached hub id). The cost terms are fitted on the finished trials of the --from runs on this machine;
    without one, only the machine's bounds are used (wide intervals, a lower bound on time).
    """
    from loadprof.analysis.estimate import dtype_grid
    from loadprof.analysis.predict import predict as predict_one

    gen = {"batch_size": batch_size, "prompt_tokens": prompt_tokens, "max_new_tokens": max_new_tokens}
    budgets = host_budgets()
    cal = calibration(runs, lambda note: click.echo(f"warning: {note}", err=True))
    found = targets(target, dtype_grid(dtypes, quantizations), device_maps, checkpoint_dtype, gen, budgets)
    base = own_rss_bytes()
    out = [predict_one(cal, t, budgets, base) for t in found]
    if fmt == "table":
        from rich.console import Console

        from loadprof.reports.formats import rich_table

        con = Console(highlight=False, width=None if sys.stdout.isatty() else 200)  # off a terminal: a wide page
        title = f"Predicted on this machine (from {', '.join(cal.runs) or 'machine bounds only'})"
        con.print(rich_table(title, COLUMNS, rows(out), right=("predicted", "interval")))
    elif fmt == "md":
        from loadprof.reports.formats import markdown

        click.echo(markdown(COLUMNS, rows(out)), nl=False)
    else:
        from loadprof.reports.formats import machine

        click.echo(machine([record(p) for p in out] if fmt in ("json", "jsonl") else [r for p in out for r in flat(p)],
                           fmt), nl=False)
