"""``loadprof recommend OUT``: the command half (read the sweep, decide, hand over); ``cli.outputs`` renders.

Reads OUT's report.json through the one reader (``loadprof.results.report_file``), asks analysis for the picks
(``analysis.recommend.recommendations``) and, with ``--lengths``, for the coverage of real answer lengths
(``analysis.lengths``), then gives the typed result to the renderer of the chosen format. Nothing here computes a
figure or formats one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from loadprof.core.figures import OBJECTIVE_NAMES as OBJECTIVES
from loadprof.analysis.recommend import RecommendResult
from loadprof.core.errors import LoadprofError, SpecError


def recommend_result(out: Path, objective: str | None, memory_budget: str | None, lengths: Path | None,
                     tokenizer: str | None, warn: Callable[[str], None] | None = None) -> RecommendResult:
    """Read, decide, measure coverage: the typed result every format renders. Bad input is exit 2."""
    from loadprof.analysis.lengths import lengths_coverage, read_lengths
    from loadprof.analysis.recommend import recommendations
    from loadprof.results.report_file import read_report, report_path
    from loadprof.strategies.model import parse_size

    if objective is not None and objective not in OBJECTIVES:
        raise SpecError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}", path="--objective")
    budget = parse_size(memory_budget, "--memory-budget") if memory_budget is not None else None
    read = read_report(out)
    for note in read.notes if warn is not None else ():
        warn(note)
    sweep = read.sweep
    recs = recommendations(sweep.trials, budget)
    if objective:
        recs = dataclasses.replace(recs, picks=tuple(r for r in recs.picks if r.objective == objective))
    coverage = None
    if lengths is not None:
        prompts = {t.strategy.generate.prompt_tokens for t in sweep.trials if t.strategy.generate is not None}
        coverage = lengths_coverage(read_lengths(lengths, tokenizer), prompts.pop() if len(prompts) == 1 else None)
    return RecommendResult(recs, sweep.name, str(report_path(out)), (objective,) if objective else OBJECTIVES,
                           budget, coverage)


def cli_recommend(out: Path, objective: str | None, memory_budget: str | None, lengths: Path | None,
                  tokenizer: str | None, console: Any, fmt: str = "table",
                  warn: Callable[[str], None] | None = None) -> int:
    """The command: the result rendered as ``fmt`` on ``console`` (a rich table, or the text of a machine or
    markdown format); what the reader forgave goes to ``warn`` (stderr: a machine format owns stdout)."""
    from loadprof.cli import outputs

    if fmt != "table" and lengths is not None:
        raise LoadprofError("--lengths prints its coverage table with --format table only", exit_code=2)
    result = recommend_result(out, objective, memory_budget, lengths, tokenizer, warn)
    if fmt == "table":
        outputs.recommend_console(result, console)
    else:
        console.out(outputs.recommendations_output(result.recommendations, fmt).rstrip("\n"), highlight=False)
    return 0
