"""Which measured configuration to use for an objective, under a memory budget, and why.

Pure analysis over finished TrialResults (runs in the parent: no torch/transformers at import). Every figure is a
median over a strategy's ok repeats of metrics already in report.json: nothing is re-measured, and values are
never rounded here (only the renderer rounds). Trade-offs compare the pick with other measured strategies, so each
one names the strategy and the figures it rests on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from loadprof.analysis.groups import (FIGURES, OBJECTIVES, SHORT_ANSWER_SHARE, SINGLE_REPEAT_MARGIN_PCT,  # noqa: F401
                                      TRADEOFF_PCT, Group, get_path, over_budget, rank_groups, figure, first_forward_s,
                                      groups, load_cost_s, peak_key, settings)
from loadprof.analysis.lengths import lengths_coverage, read_lengths
from loadprof.analysis.tradeoffs import fmt_value, tradeoffs
from loadprof.errors import LoadprofError, SpecError
from loadprof.results import SweepResult, TrialResult

# ---------------------------------------------------------------- recommendations

def recommend(trials: Iterable[TrialResult], objective: str, memory_budget_bytes: int | None = None) -> dict[str, Any]:
    """The best ok strategy for ``objective`` among those whose peak memory fits the budget."""
    if objective not in OBJECTIVES:
        raise SpecError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}", path="--objective")
    trials = list(trials)
    peak = peak_key(trials)
    gs = groups(trials)
    over = over_budget(gs, peak, memory_budget_bytes)
    cands = [g for g in gs if g not in over]
    ranked = rank_groups(cands, objective, peak)
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
                             f"bytes ({fmt_value(memory_budget_bytes, 'bytes')})")
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
        cap = get_path(g.strategy, "generate.max_new_tokens")
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
              + (f", memory budget {fmt_value(budget, 'bytes')} on {recs['peak_metric']}" if budget is not None else ""))
    for obj in ([objective] if objective else OBJECTIVES):
        r, f = recs["objectives"][obj], recs["objectives"][obj]["figure"]
        if r["label"] is None:
            con.print(f"\n[bold]{obj}[/]: nothing to recommend: {escape(r['reason'])}")
            continue
        con.print(f"\n[bold]{obj}[/]: [green]{escape(r['label'])}[/]  {f['name']} = {fmt_value(f['value'], f['unit'])}")
        lines = ["settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items() if v is not None)]
        if r["runner_up"]:
            ru = r["runner_up"]
            margin = f", margin {r['margin_pct']:.1f}%" if r["margin_pct"] is not None else ""
            lines.append(f"runner-up: {ru['label']} ({fmt_value(ru['figure']['value'], f['unit'])}){margin}")
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
        prompts = {get_path(t.strategy, "generate.prompt_tokens") for t in result.trials} - {None}
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
