"""Generate-time phases from per-step timestamps.

A StoppingCriteria runs once after every generated token, in the main thread,
so its call times are the token boundaries: the first call ends ``prefill``
(time to first token) and starts ``decode``; the last one ends ``decode``;
what generate() does after it is ``finish``. Hooks that fire inside
generate (cache pre-allocation) nest under prefill. On CUDA each step
synchronises first so a timestamp is when the token exists, not when it was
queued. The same criteria enforces ``stop_after`` (a forced early stop that
models an EOS after k tokens while max_new_tokens stays large).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from loadprof.core import figures
from loadprof.core.phases import PhaseRecorder
from loadprof.strategies.model import GenerateSpec


@dataclass
class CallTiming:
    t_call_ns: int
    t_return_ns: int
    steps_ns: list[int] = field(default_factory=list)
    new_tokens: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # effective_settings at the call
    prompt_tokens: int = 0  # the prompt's length (0: not known, e.g. a program's call)

    @property
    def ttft_ms(self) -> float | None:
        return (self.steps_ns[0] - self.t_call_ns) / 1e6 if self.steps_ns else None

    @property
    def per_token_ms(self) -> list[float]:
        return [(b - a) / 1e6 for a, b in zip(self.steps_ns, self.steps_ns[1:])]

    @property
    def decode_s(self) -> float:
        return (self.steps_ns[-1] - self.steps_ns[0]) / 1e9 if len(self.steps_ns) > 1 else 0.0

    @property
    def generate_s(self) -> float:
        return (self.t_return_ns - self.t_call_ns) / 1e9


def make_inputs(model: Any, spec: GenerateSpec, seed: int = 0) -> dict[str, Any]:
    """Seeded random prompt ids of the requested shape, on the model's first device."""
    import torch

    vocab = int(getattr(model.config, "vocab_size", None) or model.get_input_embeddings().num_embeddings)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (spec.batch_size, spec.prompt_tokens), generator=g)
    device = getattr(model, "device", torch.device("cpu"))
    if getattr(device, "type", "cpu") == "meta":
        device = torch.device("cpu")
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def generate_kwargs(model: Any, spec: GenerateSpec, stopping_criteria: Any) -> dict[str, Any]:
    """The generate() kwargs of a strategy: greedy, the cap, the cache kind, EOS ignored unless asked."""
    kwargs: dict[str, Any] = dict(
        max_new_tokens=spec.max_new_tokens, do_sample=False, stopping_criteria=stopping_criteria,
        pad_token_id=getattr(model.generation_config, "pad_token_id", None) or 0,
    )
    if not spec.stop_at_eos:
        kwargs["eos_token_id"] = None  # random weights must not end early by chance; stop_after models an EOS
    if spec.cache_implementation == "static":
        kwargs["cache_implementation"] = "static"
    return kwargs


#: generation-config fields that change what each step computes or keeps
SETTINGS = ("num_beams", "num_return_sequences", "do_sample", "use_cache", "cache_implementation",
            "output_attentions", "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate")
#: the model's shape, for what per-step outputs a call returns (config attribute -> setting key)
SHAPE = (("num_hidden_layers", "num_layers"), ("hidden_size", "hidden_size"),
         ("num_attention_heads", "num_heads"), ("vocab_size", "vocab_size"))


def _autocast(torch: Any, device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except (TypeError, RuntimeError, AttributeError):  # an older torch without the device argument
        return False


def effective_settings(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What generate() will run with: the model's generation config under the call's kwargs (a wrapper the
    loader put around ``model.generate`` may add more, unseen here), the attention implementation, torch's
    threads against the cores this process may use, whether the model is in training mode with dropout or under
    autocast, its dtype and the shape facts that size the per-step outputs a call can return."""
    import os

    import torch

    gc = getattr(model, "generation_config", None)
    out: dict[str, Any] = {k: kwargs.get(k, getattr(gc, k, None)) for k in SETTINGS}
    out = {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for k, v in out.items()}
    config = getattr(model, "config", None)
    out["attn_implementation"] = getattr(config, "_attn_implementation", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr, key in SHAPE:  # GPT-2 spells them n_layer, n_embd, n_head: transformers' attribute_map answers both
        v = getattr(text, attr, None)
        out[key] = v if isinstance(v, int) and not isinstance(v, bool) else None
    dtype = getattr(model, "dtype", None)
    out["model_dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else None
    out["autocast"] = any(_autocast(torch, d) for d in ("cpu", "cuda"))
    out["torch_threads"] = torch.get_num_threads()
    out["usable_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out["training"] = bool(getattr(model, "training", False))
    out["dropout_active"] = out["training"] and any(
        isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) if hasattr(model, "modules") else False
    return out


def run_generate(model: Any, spec: GenerateSpec, rec: PhaseRecorder, seed: int = 0) -> CallTiming:
    """One generate() call under the current phase, split into prepare/prefill/decode/finish."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    clock = rec.clock
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    with rec.phase("prepare"):
        inputs = make_inputs(model, spec, seed)
        steps: list[int] = []

        class _Steps(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if sync is not None:
                    sync()
                t = clock.now_ns()
                steps.append(t)
                if len(steps) == 1:
                    rec.close("prefill", t)
                    rec.open("decode", t)
                stop = spec.stop_after is not None and len(steps) >= spec.stop_after
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        kwargs = generate_kwargs(model, spec, StoppingCriteriaList([_Steps()]))
        settings = effective_settings(model, kwargs)
    t_call = clock.now_ns()
    rec.open("prefill", t_call)
    try:
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        if sync is not None:
            sync()
    finally:
        t_ret = clock.now_ns()
        if steps:
            rec.close("decode", steps[-1])
            rec.open("finish", steps[-1])
            rec.close("finish", t_ret)
        elif rec.current.endswith("prefill"):
            rec.close("prefill", t_ret)
    return CallTiming(t_call_ns=t_call, t_return_ns=t_ret, steps_ns=list(steps),
                      new_tokens=int(_sequences(out).shape[-1] - inputs["input_ids"].shape[-1]), settings=settings,
                      prompt_tokens=int(inputs["input_ids"].shape[-1]))


def _sequences(out: Any) -> Any:
    """The token ids a generate call returned: the tensor itself, or its ``sequences`` where the generation config
    asks for a dict (return_dict_in_generate)."""
    return getattr(out, "sequences", out)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(calls: list[CallTiming], warm_from: int, batch_size: int) -> dict[str, Any]:
    """Metrics over the measured (warm) calls, plus the cold first call reported apart."""
    measured = calls[warm_from:] or calls
    m: dict[str, Any] = {}
    if calls and calls[0].ttft_ms is not None:
        m["cold_ttft_ms"] = calls[0].ttft_ms
        m["cold_generate_s"] = calls[0].generate_s
    ttfts = [c.ttft_ms for c in measured if c.ttft_ms is not None]
    per_tok = [x for c in measured for x in c.per_token_ms]
    rates = [(len(c.steps_ns) - 1) / c.decode_s for c in measured if c.decode_s > 0]
    m["generate_calls_measured"] = len(measured)
    m["generate_calls_warmup"] = warm_from
    m["new_tokens"] = measured[-1].new_tokens if measured else 0
    m[figures.GENERATE_CALL_S.key] = statistics.median(c.generate_s for c in measured) if measured else None
    if ttfts:
        m[figures.TTFT_MS.key] = statistics.median(ttfts)
    if rates:
        m[figures.DECODE_TOK_S_PER_SEQ.key] = statistics.median(rates)
        m[figures.DECODE_TOK_S.key] = m[figures.DECODE_TOK_S_PER_SEQ.key] * batch_size
    if measured and measured[-1].settings:
        m["generate_settings"] = dict(measured[-1].settings)
    m.update(step_growth(measured))
    for q in (0.5, 0.9, 0.99):
        v = percentile(per_tok, q)
        if v is not None:
            m[f"per_token_ms_p{int(q * 100)}"] = v
    return m


#: decode steps needed before their growth with position is read
GROWTH_MIN_STEPS = 16


def step_growth(calls: list[CallTiming]) -> dict[str, float]:
    """How decode steps slow down with position (no KV cache: each step recomputes the whole sequence):
    ``decode_step_growth``, the last quarter's median step over the first quarter's; ``decode_excess_s``, the
    median call's seconds of steps beyond its first quarter's median step (what flat steps would save); and
    ``decode_recompute_s``, what the growth says recomputing costs: the time per position (the slope from the first
    quarter's median step to the last's) times the positions each step handles beyond its one new token (prompt +
    earlier tokens), summed over the steps, at most the steps' time. Without a cache that is what a cache saves;
    with one it is the attention's growth, near 0."""
    growth, excess, recompute = [], [], []
    for c in calls:
        steps = c.per_token_ms
        if len(steps) < GROWTH_MIN_STEPS:
            continue
        q = len(steps) // 4
        first, last = statistics.median(steps[:q]), statistics.median(steps[-q:])
        if first > 0:
            growth.append(last / first)
            excess.append(sum(max(0.0, x - first) for x in steps) / 1e3)
            per_position = max(0.0, last - first) / (len(steps) - q)  # ms; quarter centres are n - q steps apart
            extra = sum(c.prompt_tokens + i for i in range(len(steps)))  # step i also handles prompt + i tokens
            recompute.append(min(sum(steps), per_position * extra) / 1e3)
    if not growth:
        return {}
    return {"decode_step_growth": statistics.median(growth), "decode_excess_s": statistics.median(excess),
            "decode_recompute_s": statistics.median(recompute)}
