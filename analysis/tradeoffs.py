"""What a recommended configuration costs, each cost drawn from another measured strategy that differs only in
the knob at stake (named, with its figures)."""

from __future__ import annotations

import json
import math
from typing import Callable, Sequence

from loadprof.core import units
from loadprof.strategies.model import Strategy
from loadprof.analysis import stats
from loadprof.analysis.knobs import without
from loadprof.analysis.groups import TRADEOFF_PCT, Group, figure, rank_groups, reader
from loadprof.core import figures

def _key(strategy: Strategy, drop: Sequence[str]) -> str:
    return json.dumps(without(strategy.to_dict(), ("label", "generate.repeats", *drop)), sort_keys=True)


def counterpart(pick: Group, gs: Sequence[Group], paths: Sequence[str], want: Callable[[Group], bool]) -> Group | None:
    """A strategy equal to ``pick`` except at ``paths`` that satisfies ``want``; else the same model's first one."""
    others = [g for g in gs if g is not pick and want(g)]
    k = _key(pick.strategy, paths)
    exact = [g for g in others if _key(g.strategy, paths) == k]
    same_model = [g for g in others if g.strategy.model == pick.strategy.model]
    return (exact or same_model or [None])[0]


def _pct(new: float, old: float) -> float:
    return 100.0 * (new - old) / old if old else math.inf


def _quality(q: str) -> str:
    bits = "4-bit" if "4bit" in q else "8-bit"
    return f"quality risk: {bits} weights change the model's outputs, check accuracy on your data"


def tradeoffs(pick: Group, objective: str, gs: Sequence[Group], cands: Sequence[Group],
              peak: figures.Figure) -> list[str]:
    """Concrete costs of the pick, each drawn from measured strategies (named) and their medians."""
    out: list[str] = []
    for rule in (_quantization_cost, _dtype_cost, _loader_cost, _offload_cost, _static_cache_cost):
        text = rule(pick, gs, peak)
        if text:
            out.append(text)
    if objective == figures.LOAD.name:
        text = _page_cache_note(pick, gs)
        if text:
            out.append(text)
    return out + _other_objectives(pick, objective, cands, peak)


def _quantization_cost(pick: Group, gs: Sequence[Group], peak: figures.Figure) -> str | None:
    q = pick.strategy.load.quantization
    if q == "none":
        return None
    pk, tok = pick.metric(peak), pick.metric(figures.DECODE_TOK_S)
    base = counterpart(pick, gs, ["load.quantization"], lambda g: g.strategy.load.quantization == "none")
    if base is None or pk is None or base.metric(peak) is None:
        return f"{q}: no unquantized run to compare memory with; {_quality(q)}"
    bp, bt = base.metric(peak), base.metric(figures.DECODE_TOK_S)
    change = (f"saves {-_pct(pk, bp):.0f}% peak memory" if pk <= bp else
              f"uses {_pct(pk, bp):.0f}% more peak memory")
    text = (f"{q} {change} vs none ('{base.label}': {units.value(bp, 'bytes')} -> {units.value(pk, 'bytes')}); "
            f"{'but ' if pk <= bp else 'and '}{_quality(q)}")
    if tok is not None and bt and tok < bt:
        text += f"; decode {-_pct(tok, bt):.0f}% slower ({units.value(tok, 'tok/s')} vs {units.value(bt, 'tok/s')})"
    return text


def _dtype_cost(pick: Group, gs: Sequence[Group], peak: figures.Figure) -> str | None:
    dt = pick.strategy.load.dtype
    if dt not in ("float16", "bfloat16", "float32"):
        return None
    half = dt != "float32"
    other = counterpart(pick, gs, ["load.dtype"], lambda g: (g.strategy.load.dtype == "float32") if half
                        else g.strategy.load.dtype in ("float16", "bfloat16"))
    pk, op = pick.metric(peak), other.metric(peak) if other else None
    if other is None or pk is None or not op:
        return None
    od = other.strategy.load.dtype
    return (f"{dt} peak memory {abs(_pct(pk, op)):.0f}% {'below' if pk < op else 'above'} {od} "
            f"('{other.label}': {units.value(op, 'bytes')})"
            + ("; half precision rounds the weights: outputs can differ slightly from float32" if half
               else "; float32 only helps if the checkpoint itself is float32"))


def _loader_cost(pick: Group, gs: Sequence[Group], peak: figures.Figure) -> str | None:
    loader = pick.strategy.load.loader.target if pick.strategy.load.loader else None
    if not loader:
        return None
    builtin = counterpart(pick, gs, ["load.loader", "sampling_hz"], lambda g: g.strategy.load.loader is None)
    load = reader(figures.LOAD_COST_S)
    a, b = pick.median(load), builtin.median(load) if builtin else None
    if a is None or not b or a <= b:
        return None
    return (f"custom loader {loader} takes {units.value(a, 's')} to load (first forward included) vs {units.value(b, 's')} "
            f"with the built-in loader ('{builtin.label}'), {units.ratio(_pct(a, b))} slower")


def _offload_cost(pick: Group, gs: Sequence[Group], peak: figures.Figure) -> str | None:
    off = pick.strategy.load.offload
    if off == "none":
        return None
    pk, tok, ttft = pick.metric(peak), pick.metric(figures.DECODE_TOK_S), pick.metric(figures.TTFT_MS)
    base = counterpart(pick, gs, ["load.offload", "load.max_memory", "load.offload_folder"],
                       lambda g: g.strategy.load.offload == "none")
    by_dev = (pick.trials[0].metrics.get("bytes_by_device") or {}) if pick.trials else {}
    where = ", ".join(f"{d}{' (offloaded)' if d == 'meta' else ''} {units.value(b, 'bytes')}" for d, b in by_dev.items())
    text = f"offload={off}: offloaded weights are read back at every forward" + (f" (weights by device: {where})"
                                                                                  if where else "")
    if base is not None:
        bt, btt, bp = base.metric(figures.DECODE_TOK_S), base.metric(figures.TTFT_MS), base.metric(peak)
        parts = [f"peak {units.value(pk, 'bytes')} vs {units.value(bp, 'bytes')}" if pk is not None and bp else "",
                 f"first token {units.value(ttft, 'ms')} vs {units.value(btt, 'ms')}" if ttft is not None and btt else "",
                 f"decode {units.value(tok, 'tok/s')} vs {units.value(bt, 'tok/s')}" if tok is not None and bt else ""]
        if any(parts):
            text += f"; against '{base.label}' without offload: " + ", ".join(p for p in parts if p)
    return text


def _static_cache_cost(pick: Group, gs: Sequence[Group], peak: figures.Figure) -> str | None:
    if pick.strategy.generate is None or pick.strategy.generate.cache_implementation != "static":
        return None
    kv = (pick.trials[0].metrics.get("estimate") or {}).get("kv_cache_static_bytes") if pick.trials else None
    return ("static cache: KV buffers are sized by prompt + max_new_tokens before the first token"
            + (f" ({units.value(kv, 'bytes')} estimated), whatever the answer length" if kv else ""))


def _page_cache_note(pick: Group, gs: Sequence[Group]) -> str | None:
    if pick.strategy.load.file_cache != "warm":
        return None
    cold = counterpart(pick, gs, ["load.file_cache"], lambda g: g.strategy.load.file_cache == "cold")
    c = cold.median(reader(figures.LOAD_COST_S)) if cold else None
    if c is None:
        return None
    return f"measured with the checkpoint in the page cache; a cold start ('{cold.label}') took {units.value(c, 's')}"


def _other_objectives(pick: Group, objective: str, cands: Sequence[Group], peak: figures.Figure) -> list[str]:
    """How much worse the pick is, beyond TRADEOFF_PCT, on each other objective than that objective's best;
    never claimed when the repeats say the two are the same, flagged when there are too few to say."""
    out = []
    for other_obj in figures.OBJECTIVE_NAMES:
        if other_obj == objective:
            continue
        f = figures.objective_figure(other_obj, peak)
        ranked = rank_groups(cands, f)
        mine = figure(pick, f)
        if not ranked or mine is None or ranked[0][0] is pick:
            continue
        best, bf = ranked[0]
        worse = _pct(mine, bf) if f.lower_is_better else _pct(bf, mine)
        fn = reader(f)
        c = stats.compare_repeats(best.values(fn), pick.values(fn))
        if worse > TRADEOFF_PCT and (c is None or c.distinguishable is not False):
            what, how = {"load": ("load+first forward", "longer"), "memory": ("peak memory", "higher"),
                         "ttft": ("first token", "later"), "throughput": ("decode", "slower")}[other_obj]
            unit = f.unit
            unsure = " (too few repeats to be sure)" if c is None or c.distinguishable is None else ""
            out.append(f"{what} {units.ratio(worse)} {how} than the best-{other_obj} configuration '{best.label}' "
                       f"({units.value(mine, unit)} vs {units.value(bf, unit)}){unsure}")
    return out
