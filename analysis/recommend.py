"""Which measured configuration to use for an objective, under a memory budget, and why.

Pure analysis over finished TrialResults (runs in the parent: no torch/transformers at import). Every figure is a
median over a strategy's ok repeats of metrics already in report.json: nothing is re-measured, and values are
never rounded here (only the renderer rounds). Trade-offs compare the pick with other measured strategies, so each
one names the strategy and the figures it rests on.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from loadprof.errors import LoadprofError, SpecError
from loadprof.analysis.lengths import lengths_coverage, read_lengths
from loadprof.results import SweepResult, TrialResult

OBJECTIVES = ("load", "memory", "ttft", "throughput")
#: objective -> (figure name, unit, lower is better); the memory figure's name is the peak metric actually used
FIGURES = {"load": ("load_first_forward_validate_s", "s", True), "memory": ("peak_bytes", "bytes", True),
           "ttft": ("ttft_ms", "ms", True), "throughput": ("decode_tok_s", "tok/s", False)}
SHORT_ANSWER_SHARE = 0.30    # generated < 30% of max_new_tokens: the cap is probably too large
TRADEOFF_PCT = 10.0          # the pick is called worse on another objective only beyond this
SINGLE_REPEAT_MARGIN_PCT = 5.0


# ---------------------------------------------------------------- grouping and figures

def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        d = d.get(part) if isinstance(d, Mapping) else None
    return d


def first_forward_s(t: TrialResult) -> float | None:
    """The ``warmup/forward`` phase; ``warmup_s`` only for trials without phases (it also holds warmup generates)."""
    for p in t.phases:
        if p.name == "warmup":
            fwd = [c.duration_s for c in p.children if c.name == "forward"]
            if fwd:
                return sum(fwd)
    return t.metrics.get("warmup_s")


def load_cost_s(t: TrialResult) -> float | None:
    """load_s + first forward + validate_s of one trial: the time until the model can really serve.

    The first forward counts because with memory-mapped safetensors ``from_pretrained`` returns before the weights
    are read: the page faults land in the first forward, so load_s alone flatters lazy loads (and penalises eager
    ones). Only the forward counts, not the whole ``warmup`` phase: that also runs ``generate.warmup`` full generate
    calls, whose cost grows with batch size and max_new_tokens and is no part of loading.
    """
    m = t.metrics
    if m.get("load_s") is None:
        return None
    return m["load_s"] + (first_forward_s(t) or 0.0) + (m.get("validate_s") or 0.0)


def peak_key(trials: Iterable[TrialResult]) -> str:
    """GPU allocator peak when any ok trial measured one (the scarce memory), else the process RSS peak."""
    return ("peak_cuda_allocated_bytes"
            if any(t.ok and t.metrics.get("peak_cuda_allocated_bytes") is not None for t in trials)
            else "peak_rss_bytes")


@dataclass(eq=False)
class Group:
    """One strategy's ok repeats."""

    strategy_id: str
    label: str
    strategy: Mapping[str, Any]
    trials: list[TrialResult]

    def values(self, fn: Callable[[TrialResult], Any]) -> list[float]:
        return [v for t in self.trials if (v := fn(t)) is not None]

    def median(self, fn: Callable[[TrialResult], Any]) -> float | None:
        vs = self.values(fn)
        return statistics.median(vs) if vs else None

    def metric(self, key: str) -> float | None:
        return self.median(lambda t: t.metrics.get(key))

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]


def groups(trials: Iterable[TrialResult]) -> list[Group]:
    """Ok trials grouped by strategy id, in first-seen order."""
    out: dict[str, Group] = {}
    for t in trials:
        if t.ok:
            out.setdefault(t.strategy_id, Group(t.strategy_id, t.label or t.strategy_id, t.strategy, [])).trials.append(t)
    return list(out.values())


def figure(g: Group, objective: str, peak: str) -> float | None:
    if objective == "load":
        return g.median(load_cost_s)
    return g.metric({"memory": peak, "ttft": "ttft_ms", "throughput": "decode_tok_s"}[objective])


def _ranked(cands: Sequence[Group], objective: str, peak: str) -> list[tuple[Group, float]]:
    lower = FIGURES[objective][2]
    scored = [(g, f) for g in cands if (f := figure(g, objective, peak)) is not None]
    return sorted(scored, key=lambda gf: (gf[1] if lower else -gf[1], gf[0].label, gf[0].strategy_id))


def _over_budget(gs: Sequence[Group], peak: str, budget: int | None) -> list[Group]:
    """The worst repeat must fit: a budget is a ceiling, so the max over repeats is checked, not the median."""
    if budget is None:
        return []
    return [g for g in gs if (vs := g.values(lambda t: t.metrics.get(peak))) and max(vs) > budget]


def settings(strategy: Mapping[str, Any]) -> dict[str, Any]:
    ld, gen = strategy.get("load") or {}, strategy.get("generate") or {}
    return {"device_map": ld.get("device_map"), "dtype": ld.get("dtype"), "quantization": ld.get("quantization"),
            "offload": ld.get("offload"), "cache_implementation": gen.get("cache_implementation"),
            "max_new_tokens": gen.get("max_new_tokens"), "batch_size": gen.get("batch_size"),
            "loader": (ld.get("loader") or {}).get("target")}


# ---------------------------------------------------------------- trade-offs

def _key(strategy: Mapping[str, Any], drop: Sequence[str]) -> str:
    d = json.loads(json.dumps(strategy, default=str))
    for path in ("label", "generate.repeats", *drop):
        *head, last = path.split(".")
        node = d
        for part in head:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(d, sort_keys=True)


def counterpart(pick: Group, gs: Sequence[Group], paths: Sequence[str], want: Callable[[Group], bool]) -> Group | None:
    """A strategy equal to ``pick`` except at ``paths`` that satisfies ``want``; else the same model's first one."""
    others = [g for g in gs if g is not pick and want(g)]
    k = _key(pick.strategy, paths)
    exact = [g for g in others if _key(g.strategy, paths) == k]
    same_model = [g for g in others if g.strategy.get("model") == pick.strategy.get("model")]
    return (exact or same_model or [None])[0]


def _pct(new: float, old: float) -> float:
    return 100.0 * (new - old) / old if old else math.inf


def _more(pct: float) -> str:
    """+35% -> '35%', +378% -> '4.8x' (render only)."""
    return f"{1 + pct / 100:.1f}x" if pct >= 100 else f"{pct:.0f}%"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        return f"{v / 2**30:.2f} GiB" if abs(v) >= 2**30 else f"{v / 2**20:.0f} MiB"
    return {"s": f"{v:.3g} s", "ms": f"{v:.1f} ms", "tok/s": f"{v:.2f} tok/s"}.get(unit, f"{v:g} {unit}")


def _quality(q: str) -> str:
    bits = "4-bit" if "4bit" in q else "8-bit"
    return f"quality risk: {bits} weights change the model's outputs, check accuracy on your data"


def tradeoffs(pick: Group, objective: str, gs: Sequence[Group], cands: Sequence[Group], peak: str) -> list[str]:
    """Concrete costs of the pick, each drawn from measured strategies (named) and their medians."""
    out: list[str] = []
    s = pick.strategy
    ld, gen = s.get("load") or {}, s.get("generate") or {}
    pk, tok, ttft = pick.metric(peak), pick.metric("decode_tok_s"), pick.metric("ttft_ms")
    q = ld.get("quantization") or "none"
    if q != "none":
        base = counterpart(pick, gs, ["load.quantization"], lambda g: _get(g.strategy, "load.quantization") == "none")
        if base is None or pk is None or base.metric(peak) is None:
            out.append(f"{q}: no unquantized run to compare memory with; {_quality(q)}")
        else:
            bp, bt = base.metric(peak), base.metric("decode_tok_s")
            change = (f"saves {-_pct(pk, bp):.0f}% peak memory" if pk <= bp else
                      f"uses {_pct(pk, bp):.0f}% more peak memory")
            text = (f"{q} {change} vs none ('{base.label}': {_fmt(bp, 'bytes')} -> {_fmt(pk, 'bytes')}); "
                    f"{'but ' if pk <= bp else 'and '}{_quality(q)}")
            if tok is not None and bt and tok < bt:
                text += f"; decode {-_pct(tok, bt):.0f}% slower ({_fmt(tok, 'tok/s')} vs {_fmt(bt, 'tok/s')})"
            out.append(text)
    dt = ld.get("dtype")
    if dt in ("float16", "bfloat16", "float32"):
        half = dt != "float32"
        other = counterpart(pick, gs, ["load.dtype"], lambda g: (_get(g.strategy, "load.dtype") == "float32") if half
                            else _get(g.strategy, "load.dtype") in ("float16", "bfloat16"))
        op = other.metric(peak) if other else None
        if other is not None and pk is not None and op:
            od = _get(other.strategy, "load.dtype")
            out.append(f"{dt} peak memory {abs(_pct(pk, op)):.0f}% {'below' if pk < op else 'above'} {od} "
                       f"('{other.label}': {_fmt(op, 'bytes')})"
                       + ("; half precision rounds the weights: outputs can differ slightly from float32" if half
                          else "; float32 only helps if the checkpoint itself is float32"))
    loader = (ld.get("loader") or {}).get("target")
    if loader:
        builtin = counterpart(pick, gs, ["load.loader", "sampling_hz"], lambda g: not _get(g.strategy, "load.loader"))
        a, b = pick.median(load_cost_s), builtin.median(load_cost_s) if builtin else None
        if a is not None and b and a > b:
            out.append(f"custom loader {loader} takes {_fmt(a, 's')} to load (first forward included) vs {_fmt(b, 's')} with the "
                       f"built-in loader ('{builtin.label}'), {_more(_pct(a, b))} slower")
    off = ld.get("offload") or "none"
    if off != "none":
        base = counterpart(pick, gs, ["load.offload", "load.max_memory", "load.offload_folder"],
                           lambda g: (_get(g.strategy, "load.offload") or "none") == "none")
        by_dev = (pick.trials[0].metrics.get("bytes_by_device") or {}) if pick.trials else {}
        where = ", ".join(f"{d}{' (offloaded)' if d == 'meta' else ''} {_fmt(b, 'bytes')}" for d, b in by_dev.items())
        text = f"offload={off}: offloaded weights are read back at every forward" + (f" (weights by device: {where})"
                                                                                      if where else "")
        if base is not None:
            bt, btt, bp = base.metric("decode_tok_s"), base.metric("ttft_ms"), base.metric(peak)
            parts = [f"peak {_fmt(pk, 'bytes')} vs {_fmt(bp, 'bytes')}" if pk is not None and bp else "",
                     f"first token {_fmt(ttft, 'ms')} vs {_fmt(btt, 'ms')}" if ttft is not None and btt else "",
                     f"decode {_fmt(tok, 'tok/s')} vs {_fmt(bt, 'tok/s')}" if tok is not None and bt else ""]
            if any(parts):
                text += f"; against '{base.label}' without offload: " + ", ".join(p for p in parts if p)
        out.append(text)
    if gen.get("cache_implementation") == "static":
        kv = (pick.trials[0].metrics.get("estimate") or {}).get("kv_cache_static_bytes") if pick.trials else None
        out.append("static cache: KV buffers are sized by prompt + max_new_tokens before the first token"
                   + (f" ({_fmt(kv, 'bytes')} estimated), whatever the answer length" if kv else ""))
    if objective == "load" and ld.get("file_cache") == "warm":
        cold = counterpart(pick, gs, ["load.file_cache"], lambda g: _get(g.strategy, "load.file_cache") == "cold")
        c = cold.median(load_cost_s) if cold else None
        if c is not None:
            out.append(f"measured with the checkpoint in the page cache; a cold start ('{cold.label}') took {_fmt(c, 's')}")
    for other_obj in OBJECTIVES:
        if other_obj == objective:
            continue
        ranked = _ranked(cands, other_obj, peak)
        mine = figure(pick, other_obj, peak)
        if not ranked or mine is None or ranked[0][0] is pick:
            continue
        best, bf = ranked[0]
        worse = _pct(bf, mine) if other_obj == "throughput" else _pct(mine, bf)
        if worse > TRADEOFF_PCT:
            what, how = {"load": ("load+first forward", "longer"), "memory": ("peak memory", "higher"),
                         "ttft": ("first token", "later"), "throughput": ("decode", "slower")}[other_obj]
            unit = FIGURES[other_obj][1]
            out.append(f"{what} {_more(worse)} {how} than the best-{other_obj} pick '{best.label}' "
                       f"({_fmt(mine, unit)} vs {_fmt(bf, unit)})")
    return out


# ---------------------------------------------------------------- recommendations

def recommend(trials: Iterable[TrialResult], objective: str, memory_budget_bytes: int | None = None) -> dict[str, Any]:
    """The best ok strategy for ``objective`` among those whose peak memory fits the budget."""
    if objective not in OBJECTIVES:
        raise SpecError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}", path="--objective")
    trials = list(trials)
    peak = peak_key(trials)
    gs = groups(trials)
    over = _over_budget(gs, peak, memory_budget_bytes)
    cands = [g for g in gs if g not in over]
    ranked = _ranked(cands, objective, peak)
    name, unit, lower = FIGURES[objective]
    name = peak if objective == "memory" else name
    out: dict[str, Any] = {"objective": objective, "label": None, "trial_ids": [],
                           "figure": {"name": name, "value": None, "unit": unit}, "settings": None,
                           "runner_up": None, "margin_pct": None, "tradeoffs": [], "reason": None,
                           "excluded_over_budget": [g.label for g in over]}
    if not ranked:
        if not gs:
            out["reason"] = "no ok trial to recommend from"
        elif not cands:
            out["reason"] = (f"every strategy's peak memory ({peak}) exceeds the budget of {memory_budget_bytes} "
                             f"bytes ({_fmt(memory_budget_bytes, 'bytes')})")
        else:
            out["reason"] = (f"no strategy{' within the budget' if over else ''} measured {name}"
                             + (" (generate: false?)" if objective in ("ttft", "throughput") else ""))
        return out
    pick, value = ranked[0]
    out.update(label=pick.label, trial_ids=pick.trial_ids, settings=settings(pick.strategy))
    out["figure"]["value"] = value
    tr = tradeoffs(pick, objective, gs, cands, peak)
    if len(ranked) > 1:
        runner, rv = ranked[1]
        out["runner_up"] = {"label": runner.label, "trial_ids": runner.trial_ids,
                            "figure": {"name": name, "value": rv, "unit": unit}}
        out["margin_pct"] = (100.0 * (rv - value) / rv if lower else 100.0 * (value - rv) / rv) if rv else None
        fn: Callable[[TrialResult], Any] = (load_cost_s if objective == "load" else
                                            (lambda t: t.metrics.get(name)))
        pv, rvs = pick.values(fn), runner.values(fn)
        if len(pv) >= 2 and len(rvs) >= 2 and min(pv) <= max(rvs) and min(rvs) <= max(pv):
            tr.append(f"'{runner.label}' is within the spread of the repeats: treat the two as tied")
        elif (len(pv) < 2 or len(rvs) < 2) and out["margin_pct"] is not None \
                and out["margin_pct"] < SINGLE_REPEAT_MARGIN_PCT:
            tr.append(f"margin over '{runner.label}' is {out['margin_pct']:.1f}% from a single repeat: "
                      "run repeat >= 3 to tell them apart from noise")
    out["tradeoffs"] = tr
    return out


def max_new_tokens_warnings(trials: Iterable[TrialResult]) -> list[dict[str, Any]]:
    """Strategies whose longest answer (max over repeats) used under 30% of max_new_tokens."""
    from loadprof.analysis.studies import covering_cap

    out = []
    for g in groups(trials):
        cap = _get(g.strategy, "generate.max_new_tokens")
        made = g.values(lambda t: t.metrics.get("new_tokens"))
        if not cap or not made or max(made) >= SHORT_ANSWER_SHARE * cap:
            continue
        gen, share = g.strategy.get("generate") or {}, max(made) / cap
        advice = f"answers used {share:.0%} of max_new_tokens={cap}; a cap of {covering_cap(made)} covers the longest seen"
        if gen.get("cache_implementation") == "static":
            advice += "; with a static cache the KV buffers are sized by the cap"
        if gen.get("stop_after"):
            advice += f"; note stop_after={gen['stop_after']} ended generation early by design"
        out.append({"label": g.label, "trial_ids": g.trial_ids, "generated": max(made), "cap": cap,
                    "share": share, "advice": advice})
    return out


def recommendations(trials: Iterable[TrialResult], memory_budget_bytes: int | None = None) -> dict[str, Any]:
    trials = list(trials)
    objs = {o: recommend(trials, o, memory_budget_bytes) for o in OBJECTIVES}
    return {"memory_budget_bytes": memory_budget_bytes, "peak_metric": peak_key(trials), "objectives": objs,
            "excluded_over_budget": objs["load"]["excluded_over_budget"],
            "max_new_tokens_warnings": max_new_tokens_warnings(trials)}


# ---------------------------------------------------------------- command

def cli_recommend(out_dir: Path, objective: str | None, memory_budget: str | None, lengths: Path | None,
                  tokenizer: str | None, console: Any) -> int:
    """``loadprof recommend OUT``: one pick per objective (or the one asked) from OUT/report.json."""
    from rich.markup import escape
    from rich.table import Table

    from loadprof.strategies.model import parse_size

    path = Path(out_dir) / "report.json"
    if not path.exists():
        raise LoadprofError(f"{path} not found", hint="run `loadprof compare ... --out DIR` first", exit_code=2)
    if objective is not None and objective not in OBJECTIVES:
        raise SpecError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}", path="--objective")
    budget = parse_size(memory_budget, "--memory-budget") if memory_budget is not None else None
    found = read_lengths(lengths, tokenizer) if lengths is not None else None
    result = SweepResult.from_dict(json.loads(path.read_text()))
    recs = recommendations(result.trials, budget)
    con = console
    con.print(f"[bold]recommendations[/] for {escape(result.name)} ({escape(str(path))})"
              + (f", memory budget {_fmt(budget, 'bytes')} on {recs['peak_metric']}" if budget is not None else ""))
    for obj in ([objective] if objective else OBJECTIVES):
        r, f = recs["objectives"][obj], recs["objectives"][obj]["figure"]
        if r["label"] is None:
            con.print(f"\n[bold]{obj}[/]: nothing to recommend: {escape(r['reason'])}")
            continue
        con.print(f"\n[bold]{obj}[/]: [green]{escape(r['label'])}[/]  {f['name']} = {_fmt(f['value'], f['unit'])}")
        lines = ["settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items() if v is not None)]
        if r["runner_up"]:
            ru = r["runner_up"]
            margin = f", margin {r['margin_pct']:.1f}%" if r["margin_pct"] is not None else ""
            lines.append(f"runner-up: {ru['label']} ({_fmt(ru['figure']['value'], f['unit'])}){margin}")
        for line in lines + [f"- {t}" for t in r["tradeoffs"]]:
            con.print(f"  {line}", markup=False)
    if recs["excluded_over_budget"]:
        con.print("\n[yellow]over budget[/]: " + escape(", ".join(recs["excluded_over_budget"])))
    if recs["max_new_tokens_warnings"]:
        con.print("\n[yellow]max_new_tokens larger than the answers[/]:")
        for w in recs["max_new_tokens_warnings"]:
            con.print(f"  - {w['label']}: {w['advice']}", markup=False)
        con.print("  a cap from real answer lengths: --lengths FILE (token counts or texts)")
    if found is not None:
        prompts = {_get(t.strategy, "generate.prompt_tokens") for t in result.trials} - {None}
        cov = lengths_coverage(found, prompts.pop() if len(prompts) == 1 else None)
        pc = cov["percentiles"]
        t = Table(title=f"output lengths: n={cov['n']}, p50 {pc['p50']}, p90 {pc['p90']}, p99 {pc['p99']}, "
                        f"max {pc['max']}")
        for c in ("scenario", "n-prompt", "percentile", "tokens at percentile", "n-predict (max_new_tokens)",
                  "coverage", "half the cap", "use case"):
            t.add_column(c)
        for row in cov["rows"]:
            half = f"{row['lower_cap']} ({row['lower_cap_coverage_pct']:.1f}%)" if row["lower_cap"] else "-"
            t.add_row(row["scenario"], str(row["prompt_tokens"] or "-"), f"p{row['percentile']}",
                      str(row["percentile_tokens"]), str(row["cap"]), f"{row['coverage_pct']:.1f}%", half,
                      row["use_case"])
        con.print(t)
        con.print(f"recommended max_new_tokens: {cov['recommended_max_new_tokens']} (p90 rounded up to a power of two)")
    return 0
