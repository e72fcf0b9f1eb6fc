"""Settings that cost: the generation and runtime settings each generate call really ran with
(``generate_settings``, recorded by loadprof.probes.generation at the call: the model's generation config under
the call's kwargs), judged with measured evidence: beam search multiplies the sequences every step computes
(the effective batch), no KV cache makes each step slower than the one before (``decode_step_growth``), fewer
torch threads than usable cores leave cores idle, training mode leaves dropout on, per-step outputs returned with
return_dict_in_generate hold memory by the model's shape.

Kept apart from loadprof.analysis.findings, which lists its rules, for the same reason as the precision rules.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from loadprof.analysis.busy import trial_busy
from loadprof.analysis.derive import decode_call_s
from loadprof.core import figures
from loadprof.core.units import bytes_h
from loadprof.results.model import Finding, TrialResult

#: per-step decode time growing by this factor from the first quarter of the steps to the last: no KV cache
GROWTH_NO_CACHE = 1.5
_f = TrialResult.finding


def settings(t: TrialResult) -> Mapping[str, Any]:
    return t.metrics.get("generate_settings") or {}


def effective_batch(t: TrialResult) -> int:
    """Sequences each decode step computes: batch x beams x returned sequences (batch where unrecorded)."""
    s = settings(t)
    batch = t.strategy.generate.batch_size if t.strategy.generate is not None else 1
    return batch * max(1, int(s.get("num_beams") or 1)) * max(1, int(s.get("num_return_sequences") or 1))


def beam_search(t: TrialResult) -> Iterable[Finding]:
    s = settings(t)
    beams, ret = int(s.get("num_beams") or 1), int(s.get("num_return_sequences") or 1)
    if beams <= 1 and ret <= 1:
        return
    eff = effective_batch(t)
    call = figures.GENERATE_CALL_S.read(t.metrics)
    decode = decode_call_s(t.metrics)
    stake = decode * (1 - 1 / eff) if decode else None
    yield _f(t, "beam_search", "medium", f"generate ran beam search: num_beams={beams}"
             + (f", num_return_sequences={ret}" if ret > 1 else "") + f", {eff} sequences per step",
             f"the model's generation config (or the call) set num_beams={beams}: every decode step computes {eff} "
             f"sequences for each prompt's one answer"
             + (f"; a generate call took {call:.2f} s" if call else "") + (f", {decode:.2f} s of it decoding"
                                                                          if decode else "") + ".",
             "set num_beams=1 (greedy or sampling) in generation_config unless beam search is wanted; it is rarely "
             "worth its cost for chat-style generation", mistake=True, stake_s=stake,
             basis="decode time per call x (1 - 1 / sequences per step): what one sequence per step saves where "
                   "a step's cost grows with the sequences it computes (an upper bound where it does not)",
             num_beams=beams, num_return_sequences=ret, effective_batch=eff)


def beyond_bound_s(m: Mapping[str, Any]) -> float | None:
    """Seconds per generate call the decode spends beyond its memory-bandwidth bound (None: no roofline)."""
    frac, decode = m.get("roofline_fraction"), decode_call_s(m)
    return decode * max(0.0, 1 - frac) if isinstance(frac, (int, float)) and decode is not None else None


def _no_cache_stake(t: TrialResult, off: bool) -> tuple[float | None, str]:
    """(seconds, basis) no_kv_cache puts at stake. With use_cache=False: the recompute the steps' growth gives,
    never on a busy trial (a neighbour's burst in the first or last quarter makes or hides a growth), and not when
    the steps did not grow (nothing measured at this length). The growth alone: its excess over the first steps."""
    m = t.metrics
    recompute, excess = m.get("decode_recompute_s"), m.get("decode_excess_s")
    if m.get("decode_step_growth") is None:
        return None, "nothing at stake measured: per-step times were not recorded"
    if off and trial_busy(t):
        return None, "nothing at stake measured: the machine was busy, so the steps' growth is a neighbour's too"
    if off and recompute is not None and recompute <= 0:
        return None, "nothing at stake measured at this length: the steps did not slow down yet"
    if off and recompute is not None:
        return recompute, ("per call: the time per position (first to last quarter's median step) x the positions "
                           "each step recomputes beyond its new token (prompt + earlier tokens)")
    return excess, "per call: sum of decode steps' time beyond the first quarter's median step (measured)"  # older files too


def no_kv_cache(t: TrialResult) -> Iterable[Finding]:
    """use_cache=False at the call is a mistake on its own (each step recomputes the whole sequence: the cost grows
    with the square of the length), stated with what it measurably cost here: at least the recompute the steps'
    growth with position gives (a step's cost is concave in the tokens it handles, so the line through the measured
    steps, taken down to one token, overstates a cached step), at most the decode's time beyond its bound (the
    roofline finding's gap, which this finding then explains: that one is not repeated). Per-step growth without the
    setting is an observation (something dropped the cache)."""
    s, m = settings(t), t.metrics
    growth, excess = m.get("decode_step_growth"), m.get("decode_excess_s")
    off, busy = s.get("use_cache") is False, trial_busy(t)
    grew = growth is not None and growth >= GROWTH_NO_CACHE
    if not off and (not grew or busy):
        return  # the symptom alone is a timing trend: on a busy machine a neighbour's burst makes one
    stake, basis = _no_cache_stake(t, off)
    most = beyond_bound_s(m) if off else None
    measured = ("per-step decode times were not recorded" if growth is None else
                f"per-step decode time went {growth:.2f}x from the first quarter of the steps to the last on a busy "
                "machine (not read)" if busy else
                f"per-step decode time grew {growth:.2f}x from the first quarter of the steps to the last")
    yield _f(t, "no_kv_cache", "medium", ("generate ran with use_cache=False" if off else
                                          "decode steps slow down with position")
             + (f": the last steps took {growth:.1f}x the first" if growth is not None and not busy else ""),
             measured + (" with use_cache=False in the generation config: each step recomputes the whole sequence, "
                         "so the cost grows with the square of the length" if off else " (as without a KV cache)")
             + (f"; recomputing the sequence cost at least {stake:.2f} s per call" if off and stake else
                f"; {excess:.2f} s per call went to steps slower than the first ones" if excess and not off else "")
             + (f"; at most {most:.2f} s per call (the decode's time beyond its memory-bandwidth bound, which "
                "assumes a cache)" if most is not None else "")
             + ("" if grew or not off or busy else "; at this length the growth is still small, it is not at longer "
                                                   "ones")
             + ".",
             "set use_cache=True (the default) in generation_config" if off else
             "check that generate keeps its KV cache (use_cache) and that no wrapper drops past_key_values",
             mistake=off, stake_s=stake, basis=basis, use_cache=s.get("use_cache"), growth=growth, excess_s=excess,
             recompute_s=m.get("decode_recompute_s"), stake_most_s=most,
             subject="use_cache=False" if off else "decode growth")  # the setting and the symptom: two findings


def threads_and_training(t: TrialResult) -> Iterable[Finding]:
    s = settings(t)
    threads, cores = s.get("torch_threads"), s.get("usable_cores")
    if threads and cores and threads < cores and not t.env.get("cuda_capability"):
        yield _f(t, "torch_threads", "low", f"torch used {threads} of {cores} usable cores",
                 f"torch.get_num_threads() was {threads} while this process may run on {cores} cores: CPU matmuls in "
                 "prefill and decode leave the rest idle.",
                 "leave torch's thread count at its default, or set it to the usable cores (torch.set_num_threads)",
                 basis="not measured: the thread count against the usable cores", torch_threads=threads,
                 usable_cores=cores)
    if s.get("dropout_active"):
        yield _f(t, "training_mode", "high", "generate ran in training mode: dropout is on",
                 "model.training was True at the generate call and the model has dropout with p > 0: every step "
                 "drops activations at random, so outputs differ from the model's.", "call model.eval() after loading",
                 mistake=True, basis="outputs are wrong, whatever the time", training=True)


#: bytes per element of the dtypes a model computes in (per-step hidden states and attentions are in it)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
#: the per-step outputs generate can return (setting -> what it is)
OUTPUTS = (("output_scores", "scores"), ("output_logits", "logits"), ("output_hidden_states", "hidden states"),
           ("output_attentions", "attentions"))


def returned_bytes(s: Mapping[str, Any], batch: int, prompt: int, new: int) -> dict[str, int]:
    """Bytes one generate call returns per requested output, by the model's shape: ``new`` steps of ``batch``
    sequences (beams counted); scores and logits are float32 over the vocabulary each step; hidden states one
    per layer and the embeddings, over the prompt at the first step and one token after; attentions one
    heads x query x context map per layer, the context growing by a token each step."""
    layers, hidden, heads, vocab = (s.get(k) or 0 for k in ("num_layers", "hidden_size", "num_heads", "vocab_size"))
    elem = DTYPE_BYTES.get(str(s.get("model_dtype")), 4)
    later = max(0, new - 1)
    sizes = {"scores": new * batch * vocab * 4, "logits": new * batch * vocab * 4,
             "hidden states": (layers + 1) * batch * (prompt + later) * hidden * elem,
             "attentions": layers * batch * heads * (prompt * prompt + later * prompt + later * (later + 1) // 2) * elem}
    return {what: sizes[what] for key, what in OUTPUTS if s.get(key)}


def returned_outputs(t: TrialResult) -> Iterable[Finding]:
    """return_dict_in_generate with per-step outputs (scores, logits, hidden states, attentions): every call
    keeps one tensor per step and per layer alive until its result is dropped; their bytes, by the model's shape."""
    s = settings(t)
    if not s.get("return_dict_in_generate") or not any(s.get(k) for k, _ in OUTPUTS):
        return
    gen = t.strategy.generate
    new = int(t.metrics.get("new_tokens") or (gen.max_new_tokens if gen is not None else 0))
    sizes = returned_bytes(s, effective_batch(t), gen.prompt_tokens if gen is not None else 0, new)
    total = sum(sizes.values())
    if not total:
        return
    parts = ", ".join(f"{what} {bytes_h(b)}" for what, b in sizes.items())
    yield _f(t, "returned_outputs", "medium", f"each generate call returned every step's {', '.join(sizes)}: "
             f"{bytes_h(total)} per call",
             f"return_dict_in_generate with {', '.join(k for k, _ in OUTPUTS if s.get(k))} keeps one tensor per step "
             f"(and per layer) until the result is dropped: {parts} over {new} new tokens of "
             f"{effective_batch(t)} sequences; the attentions grow with the square of the length.",
             "request only what you read (compute_transition_scores needs output_scores alone; attentions and hidden "
             "states are for debugging), and drop the result's tensors once used", mistake=True, stake_bytes=total,
             basis="by the model's shape (layers, hidden size, heads, vocabulary, dtype) and the tokens generated: "
                   "the sizes of the returned tensors, not a measurement", returned_bytes=sizes)


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (beam_search, no_kv_cache, threads_and_training,
                                                                   returned_outputs)
