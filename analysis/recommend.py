"""Which measured configuration to use for an objective, under a memory budget, and why.

Pure analysis over finished TrialResults (runs in the parent: no torch/transformers at import). Every figure is a
median over a strategy's ok repeats of metrics already in report.json: nothing is re-measured, and values are
never rounded here (only the renderer rounds). Trade-offs compare the pick with other measured strategies, so each
one names the strategy and the figures it rests on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from loadprof.analysis.groups import (FIGURES, OBJECTIVES, SHORT_ANSWER_SHARE, SINGLE_REPEAT_MARGIN_PCT,  # noqa: F401
                                      TRADEOFF_PCT, Group, over_budget, rank_groups, figure, first_forward_s,
                                      groups, load_cost_s, peak_key, settings)
from loadprof.analysis.lengths import lengths_coverage, read_lengths
from loadprof.analysis.tradeoffs import fmt_value, tradeoffs
from loadprof.errors import LoadprofError, SpecError
from loadprof.results import (CapWarning, Figure, Recommendation, Recommendations, RunnerUp, SweepResult,
                              TrialResult)

# ---------------------------------------------------------------- recommendations

def recommend(trials: Iterable[TrialResult], objective: str, memory_budget_bytes: int | None = None) -> Recommendation:
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
    empty = Recommendation(objective, Figure(name, None, unit), excluded_over_budget=tuple(g.label for g in over))
    if not ranked:
        if not gs:
            reason = "no ok trial to recommend from"
        elif not cands:
            reason = (f"every strategy's peak memory ({peak}) exceeds the budget of {memory_budget_bytes} "
                      f"bytes ({fmt_value(memory_budget_bytes, 'bytes')})")
        else:
            reason = (f"no strategy{' within the budget' if over else ''} measured {name}"
                      + (" (generate: false?)" if objective in ("ttft", "throughput") else ""))
        return replace(empty, reason=reason)
    pick, value = ranked[0]
    tr = tradeoffs(pick, objective, gs, cands, peak)
    runner_up, margin = None, None
    if len(ranked) > 1:
        runner, rv = ranked[1]
        runner_up = RunnerUp(runner.label, tuple(runner.trial_ids), Figure(name, rv, unit))
        margin = (100.0 * (rv - value) / rv if lower else 100.0 * (value - rv) / rv) if rv else None
        fn: Callable[[TrialResult], Any] = (load_cost_s if objective == "load" else
                                            (lambda t: t.metrics.get(name)))
        pv, rvs = pick.values(fn), runner.values(fn)
        if len(pv) >= 2 and len(rvs) >= 2 and min(pv) <= max(rvs) and min(rvs) <= max(pv):
            tr.append(f"'{runner.label}' is within the spread of the repeats: treat the two as tied")
        elif (len(pv) < 2 or len(rvs) < 2) and margin is not None and margin < SINGLE_REPEAT_MARGIN_PCT:
            tr.append(f"margin over '{runner.label}' is {margin:.1f}% from a single repeat: "
                      "run repeat >= 3 to tell them apart from noise")
    return replace(empty, figure=Figure(name, value, unit), label=pick.label, trial_ids=tuple(pick.trial_ids),
                   settings=settings(pick.strategy), runner_up=runner_up, margin_pct=margin, tradeoffs=tuple(tr))


def max_new_tokens_warnings(trials: Iterable[TrialResult]) -> list[CapWarning]:
    """Strategies whose longest answer (max over repeats) used under 30% of max_new_tokens."""
    from loadprof.analysis.studies import covering_cap

    out = []
    for g in groups(trials):
        gen = g.strategy.generate
        cap = gen.max_new_tokens if gen is not None else None
        made = g.values(lambda t: t.metrics.get("new_tokens"))
        if not cap or not made or max(made) >= SHORT_ANSWER_SHARE * cap:
            continue
        share = max(made) / cap
        advice = f"answers used {share:.0%} of max_new_tokens={cap}; a cap of {covering_cap(made)} covers the longest seen"
        if gen.cache_implementation == "static":
            advice += "; with a static cache the KV buffers are sized by the cap"
        if gen.stop_after:
            advice += f"; note stop_after={gen.stop_after} ended generation early by design"
        out.append(CapWarning(g.label, tuple(g.trial_ids), int(max(made)), cap, share, advice))
    return out


def recommendations(trials: Iterable[TrialResult], memory_budget_bytes: int | None = None) -> Recommendations:
    """A pick per objective under one budget, and the caps the answers did not need."""
    trials = list(trials)
    objs = {o: recommend(trials, o, memory_budget_bytes) for o in OBJECTIVES}
    return Recommendations(objs, memory_budget_bytes, peak_key(trials), tuple(max_new_tokens_warnings(trials)),
                           objs["load"].excluded_over_budget)


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
              + (f", memory budget {fmt_value(budget, 'bytes')} on {recs.peak_metric}" if budget is not None else ""))
    for obj in ([objective] if objective else OBJECTIVES):
        r = recs.objectives[obj]
        f = r.figure
        if r.label is None:
            con.print(f"\n[bold]{obj}[/]: nothing to recommend: {escape(r.reason or '')}")
            continue
        con.print(f"\n[bold]{obj}[/]: [green]{escape(r.label)}[/]  {f.name} = {fmt_value(f.value, f.unit)}")
        lines = ["settings: " + ", ".join(f"{k}={v}" for k, v in (r.settings or {}).items() if v is not None)]
        if r.runner_up:
            margin = f", margin {r.margin_pct:.1f}%" if r.margin_pct is not None else ""
            lines.append(f"runner-up: {r.runner_up.label} ({fmt_value(r.runner_up.figure.value, f.unit)}){margin}")
        for line in lines + [f"- {t}" for t in r.tradeoffs]:
            con.print(f"  {line}", markup=False)
    if recs.excluded_over_budget:
        con.print("\n[yellow]over budget[/]: " + escape(", ".join(recs.excluded_over_budget)))
    if recs.max_new_tokens_warnings:
        con.print("\n[yellow]max_new_tokens larger than the answers[/]:")
        for w in recs.max_new_tokens_warnings:
            con.print(f"  - {w.label}: {w.advice}", markup=False)
        con.print("  a cap from real answer lengths: --lengths FILE (token counts or texts)")
    if found is not None:
        prompts = {t.strategy.generate.prompt_tokens for t in result.trials if t.strategy.generate is not None}
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
