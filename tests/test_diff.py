"""Sweep diffs as a CI gate: repeats that tell the sides apart, floors, groups, exit codes; one real slowed-loader
run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from loadprof.analysis import diff as D
from loadprof.analysis.diff import diff, parse_fail_on, phase_group, phase_values
from loadprof.cli.main import main
from loadprof.cli.diff import cli_diff
from loadprof.core import figures
from loadprof.core.diffs import DiffResult, MatchedPair
from loadprof.core.errors import SpecError
from loadprof.results.model import PhaseTiming, SweepResult, TrialResult
from tests.helpers import strategy_of

from .conftest import EXAMPLES, REPO

JITTER = (0.0, 0.01, -0.01, 0.005)  # small run-to-run noise, the same on both sides


def _trial(sid="s1", label="base", rep=0, load=(0.1, 1.0), import_s=2.0, gen=0.5, status="ok", membw=0.1,
           **metrics):
    """Phases: import, load (config, weights; ``load`` = (config_s, weights_s) plus 0.05 s uncovered), generate
    (prefill, decode), then loadprof's own ``membw``."""
    cfg, w = load
    t0 = import_s
    load_ph = PhaseTiming("load", t0, t0 + cfg + w + 0.05, (PhaseTiming("config", t0, t0 + cfg),
                                                           PhaseTiming("weights", t0 + cfg, t0 + cfg + w)))
    g0 = load_ph.end_s
    gen_ph = PhaseTiming("generate", g0, g0 + gen, (PhaseTiming("prefill", g0, g0 + gen / 2),
                                                    PhaseTiming("decode", g0 + gen / 2, g0 + gen)))
    harness = PhaseTiming("membw", gen_ph.end_s, gen_ph.end_s + membw)
    return TrialResult(trial_id=f"{sid}-r{rep}", strategy_id=sid, label=label, repeat_index=rep, status=status,
                       strategy=strategy_of(), phases=(PhaseTiming("import", 0.0, import_s), load_ph, gen_ph, harness),
                       metrics={"ttft_ms": 100.0, "decode_tok_s": 10.0, "peak_rss_bytes": 2**30,
                                "load_s": load_ph.duration_s} | metrics)


def _reps(n=3, weights=1.0, sid="s1", label="base", jitter=JITTER, **kw):
    """``n`` repeats of one strategy, the load's weights phase ``weights`` s plus a little noise."""
    return [_trial(sid, label, rep=i, load=(0.1, weights + jitter[i % len(jitter)]), **kw) for i in range(n)]


def _run(*trials, name="run"):
    return SweepResult(run_id=name, name=name, source="x.yaml", created_at="", trials=tuple(trials))


def _names(rows):
    return [r.name for r in rows]


def _row(d, name, strategy="base"):
    return next(r for r in d.rows if r.name == name and r.strategy == strategy)


def _save(folder: Path, run: SweepResult) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(run.to_dict()))
    return folder


def _cli(tmp_path, a, b, *args):
    """``loadprof diff A B ARGS`` through click, as CI runs it."""
    return CliRunner().invoke(main, ["diff", str(_save(tmp_path / "a", a)), str(_save(tmp_path / "b", b)), *args])


# ---------------------------------------------------------------- figures, groups, options

def test_phase_values_paths_other_and_same_named_children_summed():
    v = phase_values(_trial())
    assert list(v) == ["import", "load", "load/config", "load/weights", "load/other", "generate",
                       "generate/prefill", "generate/decode", "generate/other", "membw"]
    assert v["load/other"] == pytest.approx(0.05) and v["load/weights"] == 1.0
    twice = TrialResult(trial_id="x", strategy_id="x", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                        phases=(PhaseTiming("load", 0.0, 1.0, (PhaseTiming("resolve", 0.0, 0.25),
                                                               PhaseTiming("resolve", 0.5, 0.75))),
                                PhaseTiming("warmup", 1.0, 2.0, (PhaseTiming("forward", 1.0, 1.25),))))
    v = phase_values(twice)
    assert v["load/resolve"] == 0.5 and v["load/other"] == 0.5 and v["warmup/forward"] == 0.25


def test_groups_of_phases_workload_phases_and_harness():
    for path in ("load", "load/weights", "load/other", "validate", "warmup/forward", "import", "warmup",
                 "warmup/other", "generate", "generate/prefill", "generate/decode"):
        assert phase_group(path) == "phases", path
    for path in ("trace", "membw", "estimate", "cleanup", "estimate/anything"):
        assert phase_group(path) == D.HARNESS, path


def test_fail_on_parsing_and_the_nearest_valid_name():
    assert parse_fail_on(None) == D.DEFAULT_FAIL_ON == parse_fail_on("") and "phases" not in D.DEFAULT_FAIL_ON
    assert parse_fail_on("all") == D.GROUPS
    assert parse_fail_on(" ttft,load ") == ("load", "ttft")
    with pytest.raises(SpecError) as e:
        parse_fail_on("load,laod")
    assert "'laod'" in e.value.message and "did you mean 'load'" in e.value.message and e.value.exit_code == 2


def test_exit_codes_are_distinct_and_documented_in_help():
    codes = (D.EXIT_OK, D.EXIT_REGRESSION, D.EXIT_BAD_INPUT, D.EXIT_UNDECIDED, D.EXIT_NOTHING_COMPARABLE)
    assert codes == (0, 1, 2, 3, 4) and set(D.EXIT_CODES) == set(codes)
    text = " ".join(CliRunner().invoke(main, ["diff", "--help"]).output.split())
    assert all(f"{c} " in text.split("Exit codes:")[1] for c in codes) and "--fail-on" in text and "--json" in text


# ---------------------------------------------------------------- verdicts

def test_a_known_effect_on_three_repeats_is_a_gated_load_regression(tmp_path):
    a, b = _run(*_reps(weights=1.0)), _run(*_reps(weights=2.5))
    d = diff(a, b)
    regs = {r.name: r for r in d.regressions}
    assert set(regs) == {"load", "load/weights", "load_cost_s"}
    cost, load = regs["load_cost_s"], regs["load"]
    assert cost.gated and cost.group == "load" and cost.p < 0.01 and not load.gated  # phases explain
    assert load.change == pytest.approx(1.5) and load.distinguishable is True and load.group == "phases"
    assert load.lo > 0 and load.noise < 0.1 and load.strategy == "base"
    assert cost.a == pytest.approx(1.15)  # derived from load_s: no load_cost_s metric needed
    assert d.exit_code == D.EXIT_REGRESSION and d.method.startswith(D.stats.GATE_METHOD)
    assert "base: load_cost_s (phases: load)" in d.exit_reason
    gated_phases = diff(a, b, fail_on=D.GROUPS)
    assert _row(gated_phases, "load").gated and _row(gated_phases, "load").verdict == D.REGRESSION
    back = diff(b, a)
    assert back.exit_code == D.EXIT_OK and {"load", "load_cost_s"} <= set(_names(back.improvements))
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 1, r.output
    assert "load/weights" in r.output and "base" in r.output and "+1.5 s (±" in r.output
    assert r.output.count("method: Student's t-test") == 1 and "exit 1" in r.output


def test_a_known_null_on_three_repeats_passes(tmp_path):
    a = _run(*_reps(jitter=(0.0, 0.01, -0.01)))
    b = _run(*_reps(jitter=(-0.01, 0.0, 0.012)))
    d = diff(a, b)
    assert d.regressions == () and d.undecided == () and d.exit_code == D.EXIT_OK
    assert _row(d, "load").distinguishable is False and _row(d, "load").verdict == D.SAME
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 0 and "0 regression(s)" in r.output


def test_a_change_of_medians_inside_the_repeats_spread_is_not_a_regression():
    a = _run(*(_trial(rep=i, load=(0.1, w)) for i, w in enumerate((0.85, 0.95, 2.85))))   # median load 1.1
    b = _run(*(_trial(rep=i, load=(0.1, w)) for i, w in enumerate((0.9, 1.85, 1.95))))    # median load 2.0
    row = _row(diff(a, b), "load")
    assert row.change == pytest.approx(0.9) and row.beyond_floor and row.distinguishable is False
    assert row.verdict == D.SAME


def test_a_real_change_under_the_floors_is_not_a_regression():
    a, b = _run(*_reps(weights=1.0, jitter=(0.0,))), _run(*_reps(weights=1.06, jitter=(0.0,)))
    d = diff(a, b)
    row = _row(d, "load/weights")
    assert row.distinguishable is True and row.change_pct == pytest.approx(6.0) and row.verdict == D.SAME
    assert d.exit_code == D.EXIT_OK
    assert diff(a, b, threshold_pct=5.0).exit_code == D.EXIT_REGRESSION
    config = _row(diff(_run(*_reps(jitter=(0.0,))), _run(*(_trial(rep=i, load=(0.103, 1.0)) for i in range(3)))),
                  "load/config")
    assert config.distinguishable and config.change_pct == pytest.approx(3.0) and config.verdict == D.SAME


def test_metric_directions_decode_higher_is_better_and_the_memory_floor():
    a = _run(*_reps())
    b = _run(*_reps(decode_tok_s=5.0, ttft_ms=300.0, peak_rss_bytes=2**30 + 2**19))
    d = diff(a, b)
    assert set(_names(d.regressions)) == {"decode_tok_s", "ttft_ms"}  # +512 KiB < the 1 MiB floor
    assert set(_names(diff(b, a).improvements)) == {"decode_tok_s", "ttft_ms"}
    assert {_row(d, n).group for n in ("decode_tok_s", "ttft_ms", "peak_rss_bytes")} == {"decode", "ttft",
                                                                                            "memory"}


def test_single_repeats_are_undecided_and_exit_3(tmp_path):
    a, b = _run(_trial(load=(0.1, 1.0))), _run(_trial(load=(0.1, 2.5)))
    d = diff(a, b)
    assert d.regressions == () and d.exit_code == D.EXIT_UNDECIDED
    load = _row(d, "load")
    assert (load.verdict, load.change, load.noise) == (D.UNDECIDED, pytest.approx(1.5), None)
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 3, r.output
    assert "not distinguishable without repeats: rerun both sweeps with `repeat: 3`" in r.output
    assert "+1.5 s" in r.output and "+1.5 s (±" not in r.output


def test_a_decided_regression_wins_over_undecided_figures():
    a = _run(*_reps(), _trial("s2", "once", load=(0.1, 1.0)))
    b = _run(*_reps(weights=2.5), _trial("s2", "once", load=(0.1, 1.0)))
    d = diff(a, b)
    assert d.undecided and d.exit_code == D.EXIT_REGRESSION and "base: load" in d.exit_reason


def test_unrelated_sweeps_are_nothing_comparable_exit_4(tmp_path):
    a, b = _run(*_reps(sid="x", label="bf16 eager")), _run(*_reps(sid="y", label="int8 lazy"))
    d = diff(a, b)
    assert d.matched == () and d.exit_code == D.EXIT_NOTHING_COMPARABLE
    assert (d.a.labels, d.b.labels) == (("bf16 eager",), ("int8 lazy",))
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 4 and "nothing comparable" in r.output
    assert "A holds 1: bf16 eager" in r.output and "B holds 1: int8 lazy" in r.output


def test_a_slower_harness_phase_is_shown_not_gated(tmp_path):
    a, b = _run(*_reps(membw=0.1)), _run(*_reps(membw=5.0))
    d = diff(a, b)
    (reg,) = d.regressions
    assert (reg.name, reg.group, reg.gated) == ("membw", D.HARNESS, False) and d.exit_code == D.EXIT_OK
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 0 and "membw" in r.output and "not gated" in r.output


def test_fail_on_ttft_ignores_a_load_regression(tmp_path):
    a, b = _run(*_reps()), _run(*_reps(weights=2.5))
    d = diff(a, b, fail_on=("ttft",))
    assert d.regressions and not any(r.gated for r in d.regressions)
    assert d.exit_code == D.EXIT_OK
    assert _cli(tmp_path, a, b, "--fail-on", "ttft").exit_code == 0
    assert _cli(tmp_path, a, _run(*_reps(weights=2.5, ttft_ms=300.0)), "--fail-on", "ttft").exit_code == 1


def test_a_bad_fail_on_exits_2_with_one_line_naming_the_nearest(tmp_path):
    r = _cli(tmp_path, _run(*_reps()), _run(*_reps()), "--fail-on", "ttft,laod")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'laod'" in lines[0] and "'load'" in lines[0]


def test_status_ok_to_failing_gates_under_status():
    a = _run(*_reps(), *_reps(sid="k", label="breaks"))
    b = _run(*_reps(), *_reps(sid="k", label="breaks", status="crashed"))
    d = diff(a, b)
    (reg,) = d.regressions
    assert (reg.strategy, reg.name, reg.a, reg.b, reg.gated) == ("breaks", "status", "ok", "crashed",
                                                                               True)
    assert d.exit_code == D.EXIT_REGRESSION
    assert diff(a, b, fail_on=("load",)).exit_code == D.EXIT_OK
    rows = {r["name"]: r for r in d.to_dict()["rows"]}  # the JSON keeps its shape: p only where a test was asked
    assert "p" not in rows["status"] and list(rows["status"])[:4] == ["strategy", "strategy_id_a", "strategy_id_b",
                                                                    "match"]


def test_the_diff_is_typed_and_frozen():
    d = diff(_run(*_reps()), _run(*_reps(weights=2.5)))
    assert isinstance(d, DiffResult) and d.regressions and all(r in d.rows for r in d.regressions)
    with pytest.raises(AttributeError):
        d.rows[0].verdict = D.SAME  # type: ignore[misc]
    judged = d.rows[0].to_dict()
    assert list(judged)[list(judged).index("change") + 1] == "p" and judged["gated"] is d.rows[0].gated


def test_label_fallback_and_unmatched():
    a = _run(_trial("x1", "same-label"), _trial("gone", "old only"))
    b = _run(_trial("x2", "same-label"), _trial("new", "new only"))
    d = diff(a, b)
    assert d.matched == (MatchedPair("same-label", "x1", "x2", "label"),)
    assert [(u.side, u.label) for u in d.unmatched] == [("a", "old only"), ("b", "new only")]


# ---------------------------------------------------------------- the CLI side

def test_json_output_carries_rows_cis_verdicts_and_the_exit_code(tmp_path):
    r = _cli(tmp_path, _run(*_reps()), _run(*_reps(weights=2.5)), "--json")
    assert r.exit_code == 1
    d = json.loads(r.output)
    assert d["exit_code"] == 1 and d["fail_on"] == list(D.DEFAULT_FAIL_ON) and "Holm" in d["method"]
    load = next(x for x in d["summary"]["regressions"] if x["name"] == "load_cost_s")
    assert load["lo"] > 0 and load["hi"] >= load["lo"] and load["verdict"] == "regression" and load["gated"]
    assert d == diff(SweepResult.from_dict(json.loads((tmp_path / "a" / "report.json").read_text())),
                     SweepResult.from_dict(json.loads((tmp_path / "b" / "report.json").read_text()))).to_dict()
    bad = CliRunner().invoke(main, ["diff", str(tmp_path / "a"), str(tmp_path / "nothing"), "--json"])
    assert bad.exit_code == 2 and json.loads(bad.output)["exit_code"] == 2


def test_missing_or_unreadable_report_exits_2(tmp_path):
    _save(tmp_path / "a", _run(_trial()))
    con = Console(record=True, width=200)
    assert cli_diff(tmp_path / "a", tmp_path / "nothing", 10.0, con) == 2
    assert "report.json not found" in con.export_text()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    con = Console(record=True, width=200)
    assert cli_diff(tmp_path / "a", tmp_path / "bad", 10.0, con) == 2 and "unreadable" in con.export_text()


def test_user_text_is_escaped_in_the_console(tmp_path):
    label = "[bold]x[/bold] [red]"
    a, b = _run(*_reps(label=label)), _run(*_reps(weights=2.5, label=label))
    r = _cli(tmp_path, a, b)
    assert r.exit_code == 1 and "[bold]x[/bold] [red]" in r.output


SLOW_YAML = """
    name: slow-loader-{tag}
    model: {{synthetic: {{shape: tiny, max_shard_size: 100KB}}}}
    base:
      generate: false
      timeout_s: 300
      sampling_hz: 0
    repeat: 3
    include:
      - label: custom loader
        load:
          loader: {{target: "slow_loader:load", sys_path: ["{examples}"], kwargs: {{delay_s: {delay}}}}}
"""


@pytest.mark.e2e
def test_real_sweeps_with_a_slowed_loader_regress_in_load(tmp_path):
    outs = []
    for tag, delay in (("a", 0), ("b", 1.5)):
        y = tmp_path / f"{tag}.yaml"
        y.write_text(textwrap.dedent(SLOW_YAML.format(tag=tag, examples=EXAMPLES, delay=delay)))
        out = tmp_path / tag
        r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(out),
                            "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(out)
    con = Console(record=True, width=200)
    assert cli_diff(outs[0], outs[1], 10.0, con) == 1
    text = con.export_text()
    a = SweepResult.from_dict(json.loads((outs[0] / "report.json").read_text()))
    b = SweepResult.from_dict(json.loads((outs[1] / "report.json").read_text()))
    d = diff(a, b)
    assert d.matched[0].match == "label" and d.unmatched == ()
    # the load phase, or the real load cost it is part of (the phase alone carries the lazy import's noise too)
    load = next(r for r in d.regressions if r.name in ("load", figures.LOAD_COST_S.key))
    # every b load sleeps 1.5 s more; how much the rest of a load varies between the sweeps is the machine's
    assert load.b >= 1.5 and load.change > 0 and " load " in text
