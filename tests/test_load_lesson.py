"""The lazy-load lesson across strategies: load alone misjudges two strategies the real load cost tells apart."""

from __future__ import annotations

from loadprof.analysis.load_lesson import KIND, hidden_load_cost
from loadprof.analysis.sweep import analyse_sweep
from loadprof.results.model import PhaseTiming, SweepResult, TrialResult
from tests.helpers import strategy_of


def _trial(sid: str, rep: int, load_s: float, forward_s: float, import_s: float = 0.0) -> TrialResult:
    s = strategy_of({"label": sid, "load": {"file_cache": sid}})
    load = PhaseTiming("load", 0.0, load_s, (PhaseTiming("lazy_import", 0.0, import_s),) if import_s else ())
    warm = PhaseTiming("warmup", load_s, load_s + forward_s, (PhaseTiming("forward", load_s, load_s + forward_s),))
    return TrialResult(trial_id=f"{sid}-r{rep}", strategy_id=sid, label=sid, repeat_index=rep, status="ok",
                       strategy=s, metrics={"load_s": load_s}, phases=(load, warm))


def _sweep(cold_forward: float, cold_load: float = 1.0, warm_import: float = 0.0) -> list[TrialResult]:
    noise = (0.99, 1.0, 1.01)
    return ([_trial("warm", i, 1.0 * k, 0.2 * k, import_s=warm_import) for i, k in enumerate(noise)]
            + [_trial("cold", i, cold_load * k, cold_forward * k) for i, k in enumerate(noise)])


def test_load_ranking_flipped_by_the_real_cost_is_the_lesson_with_its_evidence():
    (f,) = hidden_load_cost(_sweep(cold_forward=1.2, cold_load=0.8, warm_import=0.1))
    assert f.kind == KIND and f.severity == "high" and abs(f.stake_s - 0.9) < 1e-9
    # warm's 0.1 s import is left out of its load and its real cost: load 0.9 s, real cost 1.1 s
    assert f.title.startswith("'cold' costs 0.9 s more to load than 'warm' (2 s vs 1.1 s, 95% CI of the difference")
    assert "the load phase alone ranks 'cold' first (0.8 s vs 0.9 s)" in f.title
    assert f.evidence["cost"]["distinguishable"] is True


def test_load_alike_but_real_cost_apart():
    warm = [_trial("warm", i, 1.0 * k, 0.2 * k) for i, k in enumerate((0.99, 1.0, 1.01))]
    cold = [_trial("cold", i, 1.0 * k, 1.2 * k) for i, k in enumerate((1.01, 0.99, 1.0))]
    (f,) = hidden_load_cost(warm + cold)
    assert "the load phase alone cannot tell them apart (1 s vs 1 s)" in f.title
    assert f.evidence["load"]["distinguishable"] is False and f.label == "cold, warm"


def test_no_lesson_when_the_load_already_says_it_or_the_repeats_cannot():
    assert hidden_load_cost(_sweep(cold_forward=0.2, cold_load=2.0)) == []  # load and real cost agree
    assert hidden_load_cost([t for t in _sweep(cold_forward=1.2) if t.repeat_index < 2]) == []  # 2 repeats


def test_the_lesson_heads_the_verdict_over_observations():
    trials = [_trial("warm", i, 1.0 * k, 0.2 * k) for i, k in enumerate((0.99, 1.0, 1.01))]
    trials += [_trial("cold", i, 1.0 * k, 1.2 * k) for i, k in enumerate((0.99, 1.0, 1.01))]
    result = analyse_sweep(SweepResult(run_id="r", name="n", source="s", created_at="", trials=tuple(trials)))
    assert result.findings[0].kind == KIND and "cannot tell them apart" in result.findings[0].title
