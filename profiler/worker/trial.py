"""Child side of one trial: import, load, validate, warm up, generate, with probes attached.

Run as ``python -m loadprof.worker.trial --events-fd N``; the trial spec arrives as
JSON on stdin, events leave on fd N (stdout/stderr belong to transformers and
the user's loader; the runner captures them into the trial's logs). t0 is
read before anything heavy is imported, so ``import`` (loadprof's own: torch,
transformers' top level, its probes) is a measured phase of its own. What
the load imports lazily (the model's modeling module, transformers'
modeling_utils, a tokenizer's or the user's loader's modules) a user's first
load pays, so it stays in ``load``, each outermost import named there as a
child phase ``lazy_import`` (loadprof.probes.imports).
"""

from __future__ import annotations

from loadprof.core.clock import DEFAULT_CLOCK as CLOCK

T0_NS = CLOCK.now_ns()

import argparse  # noqa: E402
import faulthandler  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

from loadprof.probes._hooks import HookSet  # noqa: E402
from loadprof.probes.base import Probe, ProbeContext  # noqa: E402
from loadprof.core import events, figures  # noqa: E402
from loadprof.core import lifetime  # noqa: E402
from loadprof.core.errors import describe_exception  # noqa: E402
from loadprof.core.phases import PhaseRecorder  # noqa: E402
from loadprof.core.probe_registry import REGISTRY, WORKER_STEP_PHASES, worker_probes  # noqa: E402
from loadprof.strategies.model import GenerateSpec, Strategy  # noqa: E402

#: loadprof's own modules the steps import lazily: imported in loadprof's ``import`` phase (and by the forkserver's
#: zygote), never inside a workload phase
HARNESS_MODULES = ("loadprof.strategies.loaders", "loadprof.strategies.validation", "loadprof.probes.generation",
                   "loadprof.probes.precision", "loadprof.analysis.estimate")
#: the first forward's input: small and fixed, so it measures touching the weights, not a batch's compute
DEFAULT_WARMUP = GenerateSpec(prompt_tokens=16, max_new_tokens=1)


def import_stack(model_path: str) -> dict[str, Any]:
    """Import what loadprof itself needs before the load, and what a user's script imports before it loads:
    torch and transformers' top level (``AutoModelForCausalLM``). Nothing a ``from_pretrained`` would import
    lazily (the model's modeling module, ``transformers.modeling_utils``, accelerate, tokenizers): the
    user's first load pays those, so the trial's ``load`` does too."""
    import torch  # noqa: F401
    import transformers
    from transformers import AutoModelForCausalLM  # noqa: F401

    for name in HARNESS_MODULES:
        importlib.import_module(name)
    info: dict[str, Any] = {"transformers": transformers.__version__}
    cfg_file = Path(model_path) / "config.json"
    if cfg_file.is_file():
        try:
            info["model_type"] = json.loads(cfg_file.read_text()).get("model_type")
        except (ValueError, AttributeError):
            pass
    return info


def environment() -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
                           "cuda_available": torch.cuda.is_available(), "platform": platform.platform()}
    from importlib import metadata

    for mod in ("accelerate", "safetensors", "bitsandbytes"):
        try:  # the installed version, read without importing (bitsandbytes is imported only by a bnb load)
            env[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
        env["cuda_capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    return env


def model_facts(model: Any) -> dict[str, Any]:
    """Parameter count, bytes per dtype and per device, placement per device_map entry, tensors left on meta."""
    import torch

    from loadprof.strategies.validation import mapped_device, offloaded

    dm = {k: v for k, v in (getattr(model, "hf_device_map", None) or {}).items()}
    seen: set[tuple[str, int]] = set()
    by_dtype: dict[str, int] = {}
    by_device: dict[str, int] = {}
    placed: dict[str, dict[str, int]] = {}
    params = 0
    meta: list[str] = []
    for kind, it in (("param", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in it:
            key = (str(t.device), t.data_ptr() if t.device.type != "meta" else id(t))
            if key in seen:
                continue  # tied weights share storage: count once
            seen.add(key)
            nbytes = t.numel() * t.element_size()
            params += t.numel() if kind == "param" else 0
            dt = str(t.dtype).removeprefix("torch.")
            by_dtype[dt] = by_dtype.get(dt, 0) + nbytes
            by_device[str(t.device)] = by_device.get(str(t.device), 0) + nbytes
            target = mapped_device(name, dm) if dm else None
            if target is not None:
                placed.setdefault(target, {"bytes": 0, "layers": 0, "entries": 0})["bytes"] += nbytes
            if t.device.type == "meta" and not (dm and offloaded(name, dm)):
                meta.append(name)
    facts: dict[str, Any] = {"param_count": params, "weights_bytes": sum(by_dtype.values()),
                             "bytes_by_dtype": by_dtype, "bytes_by_device": by_device,
                             "meta_tensors": len(meta), "meta_tensor_examples": meta[:10]}
    if dm:
        facts["hf_device_map"] = {k: str(v) for k, v in dm.items()}
        for dev in dm.values():
            placed.setdefault(str(dev), {"bytes": 0, "layers": 0, "entries": 0})["entries"] += 1
        for name, module in model.named_modules():  # decoder layers: the children of ModuleLists
            if isinstance(module, torch.nn.ModuleList):
                for i in range(len(module)):
                    dev = mapped_device(f"{name}.{i}", dm)
                    if dev is not None:
                        placed.setdefault(dev, {"bytes": 0, "layers": 0, "entries": 0})["layers"] += 1
        facts["placement"] = placed
    qstate = quant_state_bytes(model)
    if qstate:
        facts["quant_state_bytes"] = qstate
    return facts


def quant_state_bytes(model: Any) -> int:
    """bitsandbytes statistics held as attributes of quantized weights, not as parameters or buffers:
    8-bit row scales (SCB), 4-bit absmax/code/offset and the nested level of double quantization."""
    seen: dict[int, int] = {}
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        qs = getattr(w, "quant_state", None)
        parts = [getattr(w, "SCB", None)]
        if qs is not None:
            parts += [getattr(qs, "absmax", None), getattr(qs, "code", None), getattr(qs, "offset", None)]
            nested = getattr(qs, "state2", None)
            if nested is not None:
                parts += [getattr(nested, "absmax", None), getattr(nested, "code", None)]
        for t in parts:
            if t is not None and hasattr(t, "data_ptr"):
                seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def step_estimate(model: Any, strategy: Strategy, facts: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """What the model should need, from its config on the meta device (no weights read), and the comparison
    with what this trial measured. Runs last, as its own phase, so it never colours the measured ones."""
    from loadprof.analysis.estimate import estimate_from_config, estimate_vs_measured

    g = strategy.generate
    est = estimate_from_config(
        model.config, dtype=strategy.load.dtype, quantization=strategy.load.quantization,
        batch_size=g.batch_size if g else 1, prompt_tokens=g.prompt_tokens if g else 0,
        max_new_tokens=g.max_new_tokens if g else 0, stop_after=g.stop_after if g else None,
        cache_implementation=g.cache_implementation if g else "dynamic", model=strategy.model.label)
    return est.to_dict(), estimate_vs_measured(est, facts)


_STEP_PHASES = dict(WORKER_STEP_PHASES)


def phase_of(step: Callable[..., Any]) -> str:
    """The top-level phase a step function runs in, from the table the parent's sampler attributes frames by
    (loadprof.core.probe_registry.WORKER_STEP_PHASES): renaming a step without the table fails here, loudly."""
    return _STEP_PHASES[step.__name__]


def build_probes(names: tuple[str, ...]) -> list[Probe]:
    """The registry's worker probes for a ``probes:`` list: the selected ones, then the always-on ones."""
    return [e.load()() for e in worker_probes(names)]


def run_after_workload(model: Any, probes: Sequence[tuple[Probe, ProbeContext]], rec: PhaseRecorder,
                       metric: Callable[[str, Any], None], note: Callable[[str], None]) -> None:
    """Each probe's after-workload step in its own top-level phase, in registry order, after the measured
    generate calls (so their timings are untouched); its figures become trial metrics. A failing step is
    a note, not a failed trial: the measured workload is complete by then."""
    order = {e.name: i for i, e in enumerate(REGISTRY)}
    for p, ctx in sorted(probes, key=lambda pc: order.get(pc[0].NAME, len(order))):
        phase = p.AFTER_WORKLOAD_PHASE
        if phase is None:
            continue
        with rec.phase(phase):
            try:
                out = p.after_workload(model, ctx)
            except Exception as e:  # a probe never decides the trial's fate
                note(f"probe {p.NAME} failed in phase {phase}: {type(e).__name__}: {e}")
                continue
        for key, v in (out.to_dict() if out is not None else {}).items():
            metric(key, v)


def run_spec(spec: dict[str, Any], rec: PhaseRecorder, emit: Callable[[dict[str, Any]], None]) -> None:
    strategy = Strategy.from_dict(spec["strategy"])
    model_path = spec["model_path"]
    trial_dir = Path(spec["trial_dir"])
    metric = lambda k, v: emit(events.make("metric", key=k, value=v))  # noqa: E731
    note = lambda text: emit(events.make("note", text=text))  # noqa: E731

    from loadprof.strategies import loaders

    probes: list[tuple[Probe, ProbeContext]] = []
    with rec.phase(phase_of(import_stack)):
        import_stack(model_path)
        # probes hook what is imported already now, and what the load imports as it imports it (never ahead)
        for p in build_probes(strategy.probes):
            ctx = ProbeContext(clock=CLOCK, hooks=HookSet(), phase=rec.phase, trial_dir=trial_dir, strategy=strategy,
                               t0_ns=T0_NS, pid=os.getpid(), emit=emit, constants=spec.get("constants") or {})
            reason = p.unavailable(ctx)
            if reason:
                note(f"probe {p.NAME} not run: {reason}")
                continue
            p.start(ctx)
            if type(p).on_phase is not Probe.on_phase:  # an after-workload-only probe hears no edges
                rec.add_listener(p.on_phase)
            probes.append((p, ctx))
    emit(events.make("env", info=environment()))
    shared = spec.get("shared_import")
    if shared:  # the load's lazy import, done and timed once for this repeat round (loadprof.worker.shared_import)
        metric(figures.SHARED_IMPORT_S.key, float(shared["seconds"]))
        metric("shared_import", shared)
    try:
        reason = loaders.skip_reason(strategy.load)
        if reason:
            raise loaders.SkipTrial(reason)
        run_steps(strategy, model_path, trial_dir, rec, metric, note, probes)
    finally:
        for p, ctx in reversed(probes):
            rec.remove_listener(p.on_phase)
            try:
                res = p.stop()
                if res is not None:
                    emit(res.event(p.NAME))
            except Exception as e:  # a probe never decides the trial's fate
                note(f"probe {p.NAME} failed to stop: {type(e).__name__}: {e}")
            finally:
                ctx.hooks.undo()


def run_steps(strategy: Strategy, model_path: str, trial_dir: Path, rec: PhaseRecorder,
              metric: Callable[[str, Any], None], note: Callable[[str], None],
              probes: Sequence[tuple[Probe, ProbeContext]] = ()) -> None:
    """The trial's steps, one function per top-level phase (the sampling probe maps stack frames by these names),
    then the probes' after-workload steps."""
    with rec.phase(phase_of(step_load)):
        loaded = step_load(strategy, model_path, trial_dir, rec)
    model = loaded.model
    for key, v in {"loader": loaded.loader, **loaded.metrics}.items():
        metric(key, v)
    if loaded.kwargs:
        metric("from_pretrained_kwargs", {k: repr(v) if not isinstance(v, (str, int, float, bool, dict)) else v
                                          for k, v in loaded.kwargs.items()})
    facts = model_facts(model)
    for k, v in facts.items():
        metric(k, v)
    try:  # stored vs loaded dtype per tensor: evidence for findings, never the trial's fate
        from loadprof.probes.precision import compare_precision

        metric("precision", compare_precision(model_path, model))
    except Exception as e:
        note(f"no precision comparison: {type(e).__name__}: {e}")
    mode, k = strategy.load.validation_mode
    if mode != "none":
        with rec.phase(phase_of(step_validate)):
            report = step_validate(model, mode, k)
        for key, v in report.to_metrics().items():
            metric(key, v)
    gen = strategy.generate
    with rec.phase(phase_of(step_warmup)):
        calls = step_warmup(model, gen, rec)
    if gen is not None:
        with rec.phase(phase_of(step_generate)):
            calls += step_generate(model, gen, rec)
        from loadprof.probes.generation import summarize

        for key, v in summarize(calls, gen.warmup, gen.batch_size).items():
            metric(key, v)
        if calls and calls[-1].new_tokens < gen.expected_new_tokens:
            note(f"generated {calls[-1].new_tokens} tokens, expected {gen.expected_new_tokens}")
        run_after_workload(model, probes, rec, metric, note)  # trace (allocations), membw (bandwidth)
    if strategy.load.check_logits and loaded.metrics.get("load_method") not in (None, "parallel"):
        from loadprof.strategies.loaders import check_logits

        with rec.phase("check"):  # a second, plain load: after the workload, never in a measured figure
            for key, v in check_logits(model, strategy, model_path, str(trial_dir)).items():
                metric(key, v)
    try:
        with rec.phase("estimate"):
            estimate, rows = step_estimate(model, strategy, facts)
        metric("estimate", estimate)
        metric("estimate_vs_measured", rows)
    except Exception as e:  # an architecture the estimator does not know must not fail a finished trial
        note(f"no estimate for this model: {type(e).__name__}: {e}")
    with rec.phase("cleanup"):  # what letting go of the model costs and frees (the benchmark's fifth phase)
        del model, loaded  # the last references: the model can now be collected
        for key, v in step_cleanup().items():
            metric(key, v)


def step_cleanup() -> dict[str, Any]:
    """Collect the dropped model and hand cached GPU blocks back; what stays allocated afterwards is a leak."""
    import gc

    import torch

    gc.collect()
    out: dict[str, Any] = {}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        out["cleanup_cuda_allocated_after_bytes"] = torch.cuda.memory_allocated()
        out["cleanup_cuda_reserved_after_bytes"] = torch.cuda.memory_reserved()
    from loadprof.probes.memory import read_status

    rss = read_status().get("rss")
    if rss is not None:
        out["cleanup_rss_after_bytes"] = rss
    return out


def step_load(strategy: Strategy, model_path: str, trial_dir: Path, rec: PhaseRecorder) -> Any:
    from loadprof.strategies import loaders

    return loaders.load(strategy, model_path, str(trial_dir), rec.phase)


def step_validate(model: Any, mode: str, k: int) -> Any:
    from loadprof.strategies.validation import validate

    return validate(model, mode, k, CLOCK.now_ns)


def step_warmup(model: Any, gen: GenerateSpec | None, rec: PhaseRecorder) -> list[Any]:
    """The first forward and the warmup generate calls.

    The forward uses a fixed small input (batch 1, 16 tokens) whatever the strategy: it is there to touch every
    weight once, so lazily mapped reads land here and are not mixed with a large batch's compute.
    """
    import torch

    from loadprof.probes.generation import make_inputs, run_generate

    with rec.phase("forward"), torch.inference_mode():
        model(**make_inputs(model, DEFAULT_WARMUP))
    return [run_generate(model, gen, rec) for _ in range(gen.warmup)] if gen else []


def step_generate(model: Any, gen: GenerateSpec, rec: PhaseRecorder) -> list[Any]:
    from loadprof.probes.generation import run_generate

    return [run_generate(model, gen, rec) for _ in range(gen.repeats)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadprof.worker.trial")
    ap.add_argument("--events-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, default=None, help="die with it (PDEATHSIG + a watchdog)")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop after this long, whatever the parent does")
    args = ap.parse_args(argv)
    lifetime.guard_worker(args.parent_pid, args.events_fd, args.deadline_s)  # before anything slow
    return serve(args.events_fd, lambda: json.loads(sys.stdin.read()))


def _traceback() -> str:
    try:
        return traceback.format_exc()[-8000:]
    except BaseException as inner:  # noqa: BLE001 - formatting calls the exception's own methods
        return f"<traceback not formatted: {type(inner).__name__}>"


def serve(events_fd: int, read_spec: Callable[[], dict[str, Any]], t0_ns: int | None = None) -> int:
    """Run one trial, reporting on ``events_fd``: a fresh worker's life once guarded, and a forkserver child's
    (loadprof.worker.forkserver), whose trial clock starts at its fork (``t0_ns``), not at the zygote's imports."""
    global T0_NS
    T0_NS = T0_NS if t0_ns is None else t0_ns
    faulthandler.enable()  # a segfault leaves a Python stack in the trial's stderr log
    if os.getcwd() not in sys.path:  # started with -P: the user's modules in the cwd stay importable, after loadprof
        sys.path.append(os.getcwd())
    writer = events.EventWriter(events_fd)
    emit = lifetime.exit_on_broken_pipe(writer.emit)
    emit(events.make("hello", pid=os.getpid(), t_ns=0, t0_abs_ns=T0_NS, protocol=events.PROTOCOL_VERSION))
    rec = PhaseRecorder(CLOCK, emit, T0_NS)
    rc = 0
    try:
        run_spec(read_spec(), rec, emit)
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes silently
        from loadprof.strategies.loaders import SkipTrial

        if isinstance(e, SkipTrial):
            emit(events.make("skip", reason=describe_exception(e)))
        else:
            emit(events.make("error", kind=type(e).__name__, message=describe_exception(e)[:2000], traceback=_traceback()))
            rc = 1
    emit(events.make("done", t_ns=CLOCK.now_ns() - T0_NS))
    writer.close()
    return rc


if __name__ == "__main__":
    code = main()
    # Everything is reported; skip interpreter teardown (~1 s of torch module cleanup that would
    # otherwise count as harness overhead) after flushing what the trial printed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
