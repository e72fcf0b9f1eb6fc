"""Precision findings: the checkpoint's stored dtype against the dtype the weights were loaded in.

Evidence comes from the trial metric ``precision`` (loadprof.probes.precision: per (stored, loaded) dtype pair the
tensors, bytes and groups), ``bytes_by_dtype`` / ``bytes_by_device`` / ``weights_bytes`` (the loaded model), the
derived ``load_convert_thread_s``, the bandwidth probe's ``matmul_gflops`` (CPU, half-precision models only) and
the worker's ``env.cuda_capability``. No measurement, no finding: every rule stays quiet without its evidence.

The rules build ``Finding`` objects with the same signature as ``loadprof.analysis.findings._f`` but do not import
that module: findings lists these rules, so importing it back would make a cycle.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from loadprof.core import figures
from loadprof.analysis.derive import decode_call_s
from loadprof.analysis.calibrate import prefill_flops
from loadprof.core.payloads import LoadPhasesPayload, SamplingPayload
from loadprof.results.model import Finding, TrialResult
from loadprof.core.units import bytes_h, pct, seconds

#: bytes per element of the floating dtypes (the ones an upcast or downcast moves between)
FLOAT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
QUANTIZED_DTYPES = ("int8", "uint8", "float8_e4m3fn", "float8_e5m2")
HALF_DTYPES = ("float16", "bfloat16")
UPCAST_SHARE_HIGH = 0.25  # bytes added >= this share of the loaded weights: high severity
HALF_MATMUL_SLOW = 0.9  # half-precision matmul below this share of float32's rate (beyond timing noise)
FLOAT32_SHARE = 0.5  # float32 holds at least this share of the weights on a tensor-core GPU
QUANTIZED_SHARE_LOW = 0.5  # a quantization config that quantized less than this share of the weight bytes
TENSOR_CORES = {"float16": (7, 0), "bfloat16": (8, 0)}
LINEAR_GROUPS = ("attention", "mlp")
RISK = {"float16": "float16 tops out at 65504: activations that were fine in {s} can overflow to inf/NaN",
        "bfloat16": "bfloat16 keeps {s}'s range but only 8 bits of mantissa (about 3 significant digits)"}


_f = TrialResult.finding  # rules read as _f(trial, kind, severity, title, detail, fix, ...)


def _pairs(t: TrialResult) -> list[Mapping[str, Any]]:
    return [p for p in (t.metrics.get("precision") or {}).get("pairs") or () if isinstance(p, Mapping)]


def _groups(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{g} ({n})" for g, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _is_upcast(p: Mapping[str, Any]) -> bool:
    s, loaded = FLOAT_BYTES.get(p["stored"]), FLOAT_BYTES.get(p["loaded"])
    return s is not None and loaded is not None and loaded > s


def _on_gpu(t: TrialResult) -> bool:
    return any(str(d).startswith("cuda") for d in t.metrics.get("bytes_by_device") or {})


def _convert_seconds(t: TrialResult, pairs: list[Mapping[str, Any]], pair: Mapping[str, Any]
                     ) -> tuple[float | None, str]:
    """The upcast's share of the loader threads' convert time, and how it was found."""
    total = t.metrics.get("load_convert_thread_s")
    if total is None:
        lp = t.payload(LoadPhasesPayload)
        total = ((lp.materialize_worker_threads_busy_s if lp is not None else None) or {}).get("convert")
    if not total:
        return None, "cast seconds not measured (the phases probe times them under transformers 5)"
    gpu = _on_gpu(t)  # on a GPU every tensor goes through .to(device): all of them count as converted
    converted = sum(p.get("stored_numel", 0) for p in pairs if gpu or p["stored"] != p["loaded"])
    if not converted:
        return None, "cast seconds unknown: no converted elements counted"
    share = pair.get("stored_numel", 0) / converted
    what = "moved or cast" if gpu else "cast to another dtype"
    return total * share, (f"load_convert_thread_s x the upcast tensors' share of all elements {what} "
                           f"({pct(share)})")


def upcast(t: TrialResult) -> Iterable[Finding]:
    pairs = _pairs(t)
    weights = t.metrics.get("weights_bytes") or sum(p["loaded_bytes"] for p in pairs)
    for p in filter(_is_upcast, pairs):
        s, lo = p["stored"], p["loaded"]
        added = p["loaded_bytes"] - p["stored_bytes"]
        share = added / weights if weights else 0.0
        secs, secs_basis = _convert_seconds(t, pairs, p)
        cast = (f"; casting them took about {seconds(secs)} of loader-thread time" if secs is not None
                else f"; {secs_basis}")
        yield _f(t, "upcast", "high" if share >= UPCAST_SHARE_HIGH else "medium",
                 f"{s} checkpoint loaded as {lo}: +{bytes_h(added)}",
                 f"{p['tensors']} tensors stored as {s} were loaded as {lo} ({_groups(p['groups'])}; e.g. "
                 f"{', '.join(p.get('examples') or ())}): {bytes_h(p['stored_bytes'])} on disk became "
                 f"{bytes_h(p['loaded_bytes'])} in memory, +{bytes_h(added)} ({pct(share)} of the loaded weights){cast}. "
                 f"The extra precision adds nothing: the values were {s} to begin with.",
                 f'load with dtype="auto" (YAML load.dtype: auto) or dtype=torch.{s}, the dtype the checkpoint stores',
                 mistake=True, stake_s=secs, stake_bytes=added,
                 basis=f"bytes added = loaded - stored bytes of those tensors; seconds: {secs_basis}",
                 stored=s, loaded=lo, tensors=p["tensors"], groups=dict(p["groups"]), bytes_added=added,
                 share_of_weights=share, convert_s=secs, subject=f"{s}->{lo}")


def downcast(t: TrialResult) -> Iterable[Finding]:
    for p in _pairs(t):
        s, lo = p["stored"], p["loaded"]
        if not (s in FLOAT_BYTES and lo in FLOAT_BYTES and FLOAT_BYTES[lo] < FLOAT_BYTES[s]):
            continue
        saved = p["stored_bytes"] - p["loaded_bytes"]
        risk = RISK.get(lo, f"{lo} keeps fewer bits than {s}").format(s=s)
        yield _f(t, "downcast", "low", f"{s} checkpoint loaded as {lo}: {bytes_h(saved)} saved",
                 f"{p['tensors']} tensors stored as {s} were loaded as {lo} ({_groups(p['groups'])}), saving "
                 f"{bytes_h(saved)} of memory; the risk is quality: {risk}.",
                 f"check the outputs against a {s} load; where they differ, load with dtype=torch.{s} "
                 "(or bfloat16 rather than float16 for range)",
                 basis="nothing at stake in time or memory: the downcast saves bytes; the risk is numerical",
                 stored=s, loaded=lo, tensors=p["tensors"], groups=dict(p["groups"]), bytes_saved=saved,
                 subject=f"{s}->{lo}")


def _user_decode_share(t: TrialResult) -> float:
    """The share of generate's decode steps the user's own code held (a streamer's sink, a logits processor): time
    no matmul kernel spends."""
    sv = t.payload(SamplingPayload)
    shares = [u.share_of_decode or 0.0 for u in (sv.user_functions_in("generate") if sv is not None else ())]
    return min(1.0, max(0.0, sum(shares)))


def half_matmul_stake(t: TrialResult, half: float, f32: float) -> tuple[float | None, float | None]:
    """(at least, at most) seconds per generate call a half type without fast kernels costs against float32.

    At least: the decode's matmul FLOPs (2 per parameter per new token) at the measured half rate, less the same at
    the float32 rate; norms, activations and conversions come on top, so a lower bound. At most: the decode steps
    outside the user's own code, all at the half rate. A tiny model is dispatch-bound (nothing at stake); a large
    one is near the upper bound."""
    m = t.metrics
    decode = decode_call_s(m)
    most = decode * (1 - _user_decode_share(t)) * (1 - half / f32) if decode is not None else None
    params, n = m.get("param_count"), m.get("new_tokens")
    if not params or not n:
        return None, most
    flops = prefill_flops(params, 1, n)  # a forward over n tokens, whether a prompt or one token a step
    least = flops / (half * 1e9) - flops / (f32 * 1e9)
    return (min(least, most) if most is not None else least), most


def half_matmul_on_cpu(t: TrialResult) -> Iterable[Finding]:
    m = t.metrics
    rates = m.get("matmul_gflops") or {}
    f32 = rates.get("float32")
    dtype = next((d for d in rates if d in HALF_DTYPES), None)
    if not f32 or dtype is None or not rates[dtype]:
        return
    ratio = rates[dtype] / f32
    if ratio >= HALF_MATMUL_SLOW:
        return
    least, most = half_matmul_stake(t, rates[dtype], f32)
    bounds = [f"at least {seconds(least)}"] if least is not None else []
    bounds += [f"at most {seconds(most)}"] if most is not None else []
    cost = f"; per generate call that is {' and '.join(bounds)}" if bounds else ""
    yield _f(t, "half_matmul_slow_on_cpu", "medium", f"{dtype} matmul runs at {pct(ratio)} of float32 on this CPU",
             f"a square torch.mm ran at {rates[dtype]:.1f} GFLOP/s in {dtype} against {f32:.1f} GFLOP/s in float32 "
             f"({m.get('matmul_method', 'measured after the workload')}): this CPU has no fast {dtype} kernels, so "
             f"the halved weight bytes are paid for in compute{cost}.",
             "load in float32 on this CPU (dtype=torch.float32, twice the memory), or run on a CPU with "
             + ("AMX or AVX512-BF16" if dtype == "bfloat16" else "AMX-FP16 or AVX512-FP16"),
             mistake=True, stake_s=least if least is not None else most,
             basis=("at least: 2 x param_count x new_tokens FLOPs at the half rate less at the float32 rate; at most: "
                    f"decode time per call (new_tokens / {figures.DECODE_TOK_S.key}) outside the user's code x "
                    "(1 - half rate / float32 rate)"),
             dtype=dtype, ratio=ratio, half_gflops=rates[dtype], float32_gflops=f32, decode_s=decode_call_s(m),
             stake_least_s=least, stake_most_s=most)


def _capability(value: Any) -> tuple[int, int] | None:
    try:
        major, minor = str(value).split(".")[:2]
        return int(major), int(minor)
    except (ValueError, TypeError):
        return None


def _quantization(t: TrialResult) -> str | None:
    """The quantization asked for (the strategy's, else a from_pretrained call's quantization_config), or None."""
    if t.strategy.load.quantization != "none":
        return t.strategy.load.quantization
    lp = t.payload(LoadPhasesPayload)
    calls = lp.from_pretrained_calls if lp is not None else ()
    return "quantization_config" if any("quantization_config" in c.kwargs for c in calls) else None


def float32_on_tensor_cores(t: TrialResult) -> Iterable[Finding]:
    m = t.metrics
    cap = _capability(t.env.get("cuda_capability"))
    if cap is None or cap < TENSOR_CORES["float16"] or not _on_gpu(t) or _quantization(t):
        return
    upcast_f32 = sum(p["loaded_bytes"] for p in filter(_is_upcast, _pairs(t)) if p["loaded"] == "float32")
    f32 = (m.get("bytes_by_dtype") or {}).get("float32", 0) - upcast_f32  # an upcast is its own finding
    weights = m.get("weights_bytes") or 0
    if not weights or f32 < FLOAT32_SHARE * weights:
        return
    target = "bfloat16" if cap >= TENSOR_CORES["bfloat16"] else "float16"
    cap_s = t.env["cuda_capability"]
    yield _f(t, "float32_on_tensor_cores", "medium",
             f"{bytes_h(f32)} of float32 weights on a GPU with {target} tensor cores",
             f"{bytes_h(f32)} of the {bytes_h(weights)} loaded weights are float32 on a compute capability {cap_s} GPU "
             f"({t.env.get('cuda_device', 'CUDA')}), whose tensor cores run {target} matmuls many times faster than "
             f"float32; {target} would also halve the weights (-{bytes_h(f32 / 2)}) and the bytes every decode step reads.",
             f"load with dtype=torch.{target}" + ("" if target == "bfloat16" else " (this GPU predates bfloat16)"),
             mistake=True, stake_bytes=f32 / 2, basis=f"half the float32 weight bytes (what {target} saves)",
             float32_bytes=f32, weights_bytes=weights, cuda_capability=cap_s, target_dtype=target)


def _quantized_bytes(t: TrialResult) -> tuple[float, dict[str, float], str]:
    """Quantized bytes (without quant state), float bytes left per group, and how they were counted."""
    pairs = _pairs(t)
    if pairs:
        quant = sum(p["loaded_bytes"] for p in pairs if p["loaded"] in QUANTIZED_DTYPES
                    and (p["stored"] in FLOAT_BYTES or p["stored"] == p["loaded"]))
        left: dict[str, float] = {}
        for p in pairs:
            if p["loaded"] in FLOAT_BYTES and p["loaded"] not in QUANTIZED_DTYPES:
                for g, b in (p.get("group_loaded_bytes") or {}).items():
                    left[g] = left.get(g, 0) + b
        return quant, left, "loaded int8/uint8/float8 tensors matched to the checkpoint's floating ones"
    by = t.metrics.get("bytes_by_dtype") or {}
    return (sum(by.get(d, 0) for d in QUANTIZED_DTYPES), {},
            "int8/uint8/float8 bytes of the loaded model (no checkpoint headers to match)")


def quantization_left_float(t: TrialResult) -> Iterable[Finding]:
    q = _quantization(t)
    m = t.metrics
    qstate = m.get("quant_state_bytes") or 0
    weights = (m.get("weights_bytes") or 0) + qstate
    if q is None or not weights:
        return
    quant, left, how = _quantized_bytes(t)
    share = (quant + qstate) / weights
    if share >= QUANTIZED_SHARE_LOW:
        return
    largest = sorted(left.items(), key=lambda kv: -kv[1])[:3]
    linear = sum(left.get(g, 0) for g in LINEAR_GROUPS)
    mistake = bool(left) and linear > sum(left.values()) / 2  # layers the config meant to quantize stayed float
    names = ", ".join(f"{g} {bytes_h(b)}" for g, b in largest)
    yield _f(t, "quantization_left_float", "medium", f"{q} left {pct(1 - share)} of the weight bytes unquantized",
             f"of {bytes_h(weights)} of weights (bnb quant state included) only {bytes_h(quant + qstate)} are quantized"
             + (f"; the largest float groups: {names}" if names else "") + ". "
             + ("Attention/MLP layers stayed in float: the quantization config skipped them." if mistake else
                "Embeddings, lm_head and norms are never quantized by bitsandbytes: on a model this size they hold "
                "most of the bytes, so quantization buys little memory."),
             "check the config's skip list (llm_int8_skip_modules) and that the model's linear layers are "
             "nn.Linear" if mistake else "compare against an unquantized load: the saving may not pay for the "
             "slower dequantizing matmuls", mistake=mistake, stake_bytes=linear if mistake else None,
             basis=f"quantized bytes = {how} + bnb quant state; "
             + ("stake: float bytes of attention/MLP weights" if mistake else "nothing at stake beyond the share"),
             quantization=q, unquantized_share=1 - share, quantized_bytes=quant + qstate, weights_bytes=weights,
             largest_float_groups=dict(largest))


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (
    upcast, downcast, half_matmul_on_cpu, float32_on_tensor_cores, quantization_left_float,
)
