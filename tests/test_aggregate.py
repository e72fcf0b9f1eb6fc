"""Per-configuration summaries (median ± half IQR over repeats), each model's Pareto front, and how every format
shows them (console, report.md, report.html, configurations.csv, report.json)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from loadprof.analysis import pareto
from loadprof.analysis.aggregate import configurations
from loadprof.analysis.sweep import analyse_sweep
from loadprof.core.conclusions import ConfigSummary, Estimate
from loadprof.reports import console, csv_report, html, markdown
from loadprof.reports.configurations import NEEDS_REPEAT, PARETO_TITLE, TITLE, estimate_cell
from loadprof.reports.files import write_all
from loadprof.results.model import SweepResult, TrialResult
from tests.helpers import strategy_of

GiB = 2**30
TINY = strategy_of({})
OTHER = strategy_of({"model": {"hub_id": "org/other"}})


def trial(sid: str, repeat: int, status: str = "ok", strategy: Any = TINY, **metrics: Any) -> TrialResult:
    return TrialResult(trial_id=f"{sid}-r{repeat}", strategy_id=sid, label=f"cfg {sid}", repeat_index=repeat,
                       status=status, strategy=strategy, wall_s=5.0, metrics=metrics)


def figures(load: float, mem: float, ttft: float, decode: float) -> dict[str, float]:
    return {"load_cost_s": load, "peak_rss_bytes": mem, "ttft_ms": ttft, "decode_tok_s": decode, "load_s": load}


def summary(sid: str, model: str, load: float, mem: float, ttft: float, decode: float) -> ConfigSummary:
    est = {k: Estimate(v, v, v, 3) for k, v in figures(load, mem, ttft, decode).items()}
    return ConfigSummary(sid, f"cfg {sid}", model, 3, 3, figures=est)


# ------------------------------------------------------------------------------------------- aggregation

def test_median_and_iqr_exact_for_known_repeats() -> None:
    loads = (1.0, 2.0, 3.0, 4.0, 10.0)
    trials = [trial("a", i, load_cost_s=v, peak_rss_bytes=GiB * (i + 1)) for i, v in enumerate(loads)]
    (c,) = configurations(trials)
    est = c.figures["load_cost_s"]
    assert (est.median, est.q1, est.q3, est.n) == (3.0, 2.0, 4.0, 5)
    assert est.spread == 1.0 and est.lo is not None and est.lo <= 3.0 <= est.hi
    assert c.figures["peak_rss_bytes"].median == 3 * GiB
    assert (c.n, c.n_trials, c.model, c.label) == (5, 5, "tiny (bfloat16)", "cfg a")
    assert "ttft_ms" not in c.figures  # nothing measured it: no estimate, not a fake 0
    assert estimate_cell(est, "s") == "3 s ± 1 s"


def test_single_repeat_is_a_bare_value() -> None:
    (c,) = configurations([trial("a", 0, load_cost_s=1.234, ttft_ms=40.0)])
    est = c.figures["load_cost_s"]
    assert (est.n, est.spread, est.lo, est.hi) == (1, 0.0, None, None)
    assert estimate_cell(est, "s") == "1.23 s" and estimate_cell(c.figures["ttft_ms"], "ms") == "40.0 ms"


def test_failed_trials_count_in_n_trials_but_in_no_figure() -> None:
    trials = [trial("a", 0, load_cost_s=1.0), trial("a", 1, load_cost_s=3.0),
              trial("a", 2, "crashed", load_cost_s=100.0), trial("b", 0, "failed", load_cost_s=5.0)]
    a, b = configurations(trials)
    assert (a.n, a.n_trials, a.figures["load_cost_s"].median) == (2, 3, 2.0)
    assert a.trial_ids == ("a-r0", "a-r1", "a-r2")
    assert (b.n, b.n_trials, b.figures, b.pareto) == (0, 1, {}, None)


def test_load_cost_derived_for_older_files() -> None:
    """A report.json written before load_cost_s existed: load_s + validate_s (+ first forward) from the trial."""
    (c,) = configurations([trial("a", 0, load_s=2.0, validate_s=0.5), trial("a", 1, load_s=4.0, validate_s=0.5)])
    assert c.figures["load_cost_s"].median == 3.5


# ------------------------------------------------------------------------------------------------ Pareto

def test_pareto_dominated_point_tie_and_models_kept_apart() -> None:
    configs = [summary("fast", "m1", 1.0, 4 * GiB, 50.0, 20.0),
               summary("small", "m1", 3.0, 1 * GiB, 60.0, 15.0),
               summary("worse", "m1", 2.0, 4 * GiB, 55.0, 20.0),   # fast is as good everywhere, better on 2
               summary("twin", "m1", 1.0, 4 * GiB, 50.0, 20.0),    # ties fast exactly: neither dominates
               summary("tiny-m2", "m2", 9.0, 8 * GiB, 900.0, 1.0),  # worse than everything, but another model
               summary("alone", "m3", 1.0, GiB, 1.0, 1.0)]          # nothing to compare against
    marked = {c.strategy_id: c for c in pareto.mark(configs)}
    assert [c.strategy_id for c in pareto.mark(configs)] == [c.strategy_id for c in configs]  # order kept
    assert {k for k, c in marked.items() if c.pareto} == {"fast", "small", "twin"}
    assert marked["worse"].pareto is False and set(marked["worse"].dominated_by) == {"fast", "twin"}
    assert marked["fast"].dominated_by == () and marked["twin"].dominated_by == ()
    assert marked["tiny-m2"].pareto is None and marked["alone"].pareto is None
    assert marked["fast"].pareto_on == ("load_cost_s", "peak_rss_bytes", "ttft_ms", "decode_tok_s")


def test_pareto_decode_higher_is_better_and_unshared_figures_drop_out() -> None:
    hi = summary("hi", "m", 1.0, GiB, 50.0, 30.0)
    lo = summary("lo", "m", 1.0, GiB, 50.0, 10.0)
    marked = {c.strategy_id: c for c in pareto.mark([hi, lo])}
    assert marked["hi"].pareto and marked["lo"].dominated_by == ("hi",)
    load_only = ConfigSummary("x", "x", "m", 2, 2, figures={"load_cost_s": Estimate(0.5, 0.5, 0.5, 2),
                                                             "peak_rss_bytes": Estimate(GiB, GiB, GiB, 2)})
    marked = {c.strategy_id: c for c in pareto.mark([hi, lo, load_only])}
    assert marked["x"].pareto_on == ("load_cost_s", "peak_rss_bytes")  # no TTFT or decode to rank it on
    assert marked["x"].pareto and not marked["hi"].pareto and not marked["lo"].pareto


def test_pareto_memory_is_the_cuda_peak_when_every_configuration_has_one() -> None:
    a, b = (summary(s, "m", 1.0, GiB, 50.0, 20.0) for s in ("a", "b"))
    a = ConfigSummary(**{**a.__dict__, "figures": {**a.figures, "peak_cuda_allocated_bytes": Estimate(1, 1, 1, 3)}})
    b = ConfigSummary(**{**b.__dict__, "figures": {**b.figures, "peak_cuda_allocated_bytes": Estimate(2, 2, 2, 3)}})
    marked = {c.strategy_id: c for c in pareto.mark([a, b])}
    assert "peak_cuda_allocated_bytes" in marked["a"].pareto_on and marked["b"].dominated_by == ("a",)


# ----------------------------------------------------------------------------------------------- reports

def sweep() -> SweepResult:
    trials = [trial("a", i, load_cost_s=v, peak_rss_bytes=2 * GiB, ttft_ms=40.0 + i, decode_tok_s=12.0)
              for i, v in enumerate((1.0, 1.5, 2.0))]
    trials += [trial("b", i, load_cost_s=2.0, peak_rss_bytes=1 * GiB, ttft_ms=30.0, decode_tok_s=10.0)
               for i in range(3)]
    trials += [trial("c", i, load_cost_s=3.0, peak_rss_bytes=3 * GiB, ttft_ms=50.0, decode_tok_s=9.0)
               for i in range(2)]
    trials += [trial("d", 0, load_cost_s=0.5, strategy=OTHER, peak_rss_bytes=GiB)]
    return SweepResult(run_id="r", name="demo", source="demo.yaml", created_at="", trials=tuple(trials),
                       configurations=configurations(trials))


def test_markdown_has_the_spread_cells_and_the_pareto_table() -> None:
    md = markdown.RENDERER.render(sweep())
    assert f"## {TITLE}" in md and f"## {PARETO_TITLE}" in md
    assert "| tiny (bfloat16) | cfg a | 3 | 1.5 s ± 0.25 s | 2.0 GiB ± 0 B | 41.0 ms ± 0.5 ms |" in md
    assert "| org/other | cfg d | 1 | 0.5 s |" in md and "± needs repeat >= 2" in md
    assert "| front |" in md and "| dominated |" in md and "medians" in md
    assert "not decided by it" in md


def test_console_and_html_show_the_same_cells() -> None:
    s = sweep()
    text = console.RENDERER.render(s)
    assert TITLE in text and "1.5 s ± 0.25 s" in text and PARETO_TITLE in text and NEEDS_REPEAT in text
    page = html.RENDERER.render(s)
    assert 'id="configurations"' in page and 'id="pareto"' in page and "1.5 s ± 0.25 s" in page
    assert 'class="st-front"' in page and 'class="st-dominated"' in page
    if html.plots is not None:
        assert 'data-plot="pareto"' in page and "<title>cfg a (tiny (bfloat16)), Pareto front" in page


def test_configurations_csv_columns() -> None:
    rows = list(csv.DictReader(io.StringIO(csv_report.render_configurations(sweep()))))
    assert [r["strategy_id"] for r in rows] == ["a", "b", "c", "d"]
    for stat in ("median", "q1", "q3", "ci_lo", "ci_hi", "n"):
        assert f"load_cost_s.{stat}" in rows[0] and f"decode_tok_s.{stat}" in rows[0]
    a = rows[0]
    assert (float(a["load_cost_s.median"]), float(a["load_cost_s.q1"]), float(a["load_cost_s.q3"])) == (1.5, 1.25, 1.75)
    assert a["load_cost_s.n"] == "3" and a["pareto"] == "True" and rows[3]["load_cost_s.ci_lo"] == ""
    assert rows[3]["ttft_ms.median"] == "" and rows[3]["pareto"] == ""


def test_write_all_writes_configurations_csv(tmp_path) -> None:
    paths = write_all(sweep(), tmp_path)
    assert paths["configurations.csv"].name == "configurations.csv" and paths["csv"].name == "report.csv"
    assert len(list(csv.DictReader(paths["configurations.csv"].open()))) == 4


def test_report_json_round_trip_and_old_files_read_as_empty() -> None:
    s = sweep()
    d = json.loads(json.dumps(s.to_dict()))
    assert d["configurations"][0]["figures"]["load_cost_s"]["median"] == 1.5
    back = SweepResult.from_dict(d)
    assert back.configurations == s.configurations
    del d["configurations"]
    assert SweepResult.from_dict(d).configurations == ()


def test_analyse_sweep_fills_configurations() -> None:
    s = sweep()
    analysed = analyse_sweep(SweepResult(run_id="r", name="n", source="-", created_at="", trials=s.trials))
    assert [c.strategy_id for c in analysed.configurations] == ["a", "b", "c", "d"]


def test_no_configurations_no_section() -> None:
    empty = SweepResult(run_id="r", name="n", source="-", created_at="")
    assert TITLE not in markdown.RENDERER.render(empty) and 'id="configurations"' not in html.RENDERER.render(empty)
    assert csv_report.render_configurations(empty).startswith("strategy_id,")


@pytest.mark.parametrize("unit,cell", [("s", "1.23 s ± 0.04 s"), ("ms", "1.2 ms ± 0.0 ms"),
                                       ("tok/s", "1.23 tok/s ± 0.04 tok/s")])
def test_estimate_cell_units(unit: str, cell: str) -> None:
    assert estimate_cell(Estimate(1.23, 1.19, 1.27, 3), unit) == cell
