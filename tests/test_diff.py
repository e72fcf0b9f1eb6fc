"""Sweep diffs: phase medians, noise bands, thresholds, matching, exit codes; one real slowed-loader run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from loadprof.analysis.diff import cli_diff, diff, phase_values, spread
from loadprof.results import PhaseTiming, SweepResult, TrialResult
from tests.helpers import strategy_of

from .conftest import EXAMPLES, REPO


def _trial(sid="s1", label="base", rep=0, load=(0.1, 1.0), import_s=2.0, gen=0.5, status="ok", **metrics):
    """Phases: import, load (config, weights; ``load`` = (config_s, weights_s) plus 0.05 s uncovered), generate."""
    cfg, w = load
    t0 = import_s
    load_ph = PhaseTiming("load", t0, t0 + cfg + w + 0.05, (PhaseTiming("config", t0, t0 + cfg),
                                                           PhaseTiming("weights", t0 + cfg, t0 + cfg + w)))
    g0 = load_ph.end_s
    gen_ph = PhaseTiming("generate", g0, g0 + gen, (PhaseTiming("prefill", g0, g0 + gen / 2),
                                                    PhaseTiming("decode", g0 + gen / 2, g0 + gen)))
    return TrialResult(trial_id=f"{sid}-r{rep}", strategy_id=sid, label=label, repeat_index=rep, status=status,
                       strategy=strategy_of(), phases=(PhaseTiming("import", 0.0, import_s), load_ph, gen_ph),
                       metrics={"ttft_ms": 100.0, "decode_tok_s": 10.0, "peak_rss_bytes": 2**30} | metrics)


def _run(*trials, name="run"):
    return SweepResult(run_id=name, name=name, source="x.yaml", created_at="", trials=tuple(trials))


def _names(rows):
    return [r["name"] for r in rows]


def test_phase_values_paths_other_and_same_named_children_summed():
    t = _trial()
    v = phase_values(t)
    assert list(v) == ["import", "load", "load/config", "load/weights", "load/other", "generate",
                       "generate/prefill", "generate/decode", "generate/other"]
    assert v["load/other"] == pytest.approx(0.05) and v["load/weights"] == 1.0
    twice = TrialResult(trial_id="x", strategy_id="x", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                        phases=(PhaseTiming("load", 0.0, 1.0, (PhaseTiming("resolve", 0.0, 0.25),
                                                               PhaseTiming("resolve", 0.5, 0.75))),))
    assert phase_values(twice)["load/resolve"] == 0.5 and phase_values(twice)["load/other"] == 0.5


def test_spread_rules():
    assert spread([1.0]) == 0.0 and spread([1.0, 1.5]) == 0.5
    assert spread([1.0, 1.1, 1.2, 5.0]) == pytest.approx(3 * 0.1)  # MAD ignores the outlier


def test_a_run_against_itself_has_no_regression_and_exits_0(tmp_path):
    a = _run(_trial(rep=0), _trial(rep=1, load=(0.1, 1.1)))
    d = diff(a, a)
    assert d["summary"] == {"regressions": [], "improvements": [], "unmatched": []}
    assert all(r["verdict"] == "same" and r["change"] == 0 for r in d["rows"])
    assert d["matched"] == [{"label": "base", "strategy_id_a": "s1", "strategy_id_b": "s1", "match": "id"}]
    _save(tmp_path / "a", a)
    con = Console(record=True, width=200)
    assert cli_diff(tmp_path / "a", tmp_path / "a", 10.0, con) == 0
    assert "0 regression(s)" in con.export_text()


def test_load_twice_as_slow_is_a_regression_naming_load_and_the_child(tmp_path):
    a, b = _run(_trial(load=(0.1, 1.0))), _run(_trial(load=(0.1, 2.15)))
    d = diff(a, b)
    regs = d["summary"]["regressions"]
    assert set(_names(regs)) == {"load", "load/weights"}
    load = next(r for r in regs if r["name"] == "load")
    assert (load["a"], load["b"]) == (1.15, 2.3) and load["change"] == pytest.approx(1.15)
    assert load["change_pct"] == pytest.approx(100.0) and load["band"] == 0.0 and load["limit"] == pytest.approx(0.115)
    assert load["strategy"] == "base" and load["verdict"] == "regression"
    assert diff(b, a)["summary"]["improvements"] and not diff(b, a)["summary"]["regressions"]
    _save(tmp_path / "a", a), _save(tmp_path / "b", b)
    con = Console(record=True, width=200)
    assert cli_diff(tmp_path / "a", tmp_path / "b", 10.0, con) == 1
    text = con.export_text()
    assert "load/weights" in text and "regression" in text and "+1.150 s" in text


def test_noise_band_suppresses_a_change_inside_the_repeats_spread():
    a = _run(_trial(rep=0, load=(0.1, 0.85)), _trial(rep=1, load=(0.1, 1.85)))        # load 1.0 and 2.0
    b = _run(_trial(rep=0, load=(0.1, 1.75)), _trial(rep=1, load=(0.1, 1.95)))        # load 1.9 and 2.1
    row = next(r for r in diff(a, b)["rows"] if r["name"] == "load")
    assert row["change"] == pytest.approx(0.5) and row["band"] == pytest.approx(1.0) and row["verdict"] == "same"
    three_a = _run(*(_trial(rep=i, load=(0.1, w)) for i, w in enumerate((0.85, 0.95, 1.05))))  # MAD 0.1: band 0.3
    three_b = _run(*(_trial(rep=i, load=(0.1, w)) for i, w in enumerate((1.2, 1.2, 1.2))))
    row = next(r for r in diff(three_a, three_b)["rows"] if r["name"] == "load")
    assert row["change"] == pytest.approx(0.25) and row["band"] == pytest.approx(0.3) and row["verdict"] == "same"


def test_threshold_and_absolute_floor():
    a, b = _run(_trial(load=(0.001, 1.0))), _run(_trial(load=(0.003, 1.08)))
    rows = {r["name"]: r for r in diff(a, b)["rows"]}
    assert rows["load/config"]["change_pct"] == pytest.approx(200.0) and rows["load/config"]["verdict"] == "same"
    assert rows["load/weights"]["verdict"] == "same"                                 # +8% < 10%
    assert diff(a, b, threshold_pct=5.0)["summary"]["regressions"][0]["name"] in ("load", "load/weights")


def test_metrics_direction_decode_higher_is_better():
    a, b = _run(_trial()), _run(_trial(decode_tok_s=5.0, ttft_ms=300.0, peak_rss_bytes=2**30 + 2**19))
    regs = diff(a, b)["summary"]["regressions"]
    assert set(_names(regs)) == {"decode_tok_s", "ttft_ms"}  # +512 KiB RSS is under the 1 MiB floor
    improved = diff(b, a)["summary"]["improvements"]
    assert set(_names(improved)) == {"decode_tok_s", "ttft_ms"}


def test_label_fallback_unmatched_and_failed_trials():
    a = _run(_trial("x1", "same-label"), _trial("gone", "old only"), _trial("ok", "breaks"))
    b = _run(_trial("x2", "same-label"), _trial("new", "new only"), _trial("ok", "breaks", status="crashed"))
    d = diff(a, b)
    assert {"label": "same-label", "strategy_id_a": "x1", "strategy_id_b": "x2", "match": "label"} in d["matched"]
    assert [(u["side"], u["label"]) for u in d["summary"]["unmatched"]] == [("a", "old only"), ("b", "new only")]
    (reg,) = d["summary"]["regressions"]
    assert (reg["strategy"], reg["name"], reg["a"], reg["b"]) == ("breaks", "status", "ok", "crashed")


def test_missing_report_exits_2(tmp_path):
    _save(tmp_path / "a", _run(_trial()))
    con = Console(record=True, width=200)
    assert cli_diff(tmp_path / "a", tmp_path / "nothing", 10.0, con) == 2
    assert "report.json not found" in con.export_text()


def _save(folder: Path, run: SweepResult) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(run.to_dict()))


SLOW_YAML = """
    name: slow-loader-{tag}
    model: {{synthetic: {{shape: tiny, max_shard_size: 100KB}}}}
    base:
      generate: false
      timeout_s: 300
      sampling_hz: 0
    include:
      - label: custom loader
        load:
          loader: {{target: "slow_loader:load", sys_path: ["{examples}"], kwargs: {{delay_s: {delay}}}}}
"""


@pytest.mark.slow
def test_real_sweeps_with_a_slowed_loader_regress_in_load(tmp_path):
    outs = []
    for tag, delay in (("a", 0), ("b", 1.5)):
        y = tmp_path / f"{tag}.yaml"
        y.write_text(textwrap.dedent(SLOW_YAML.format(tag=tag, examples=EXAMPLES, delay=delay)))
        out = tmp_path / tag
        r = subprocess.run([sys.executable, "-m", "loadprof.cli", "compare", str(y), "--out", str(out),
                            "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(out)
    con = Console(record=True, width=200)
    assert cli_diff(outs[0], outs[1], 10.0, con) == 1
    text = con.export_text()
    a = SweepResult.from_dict(json.loads((outs[0] / "report.json").read_text()))
    b = SweepResult.from_dict(json.loads((outs[1] / "report.json").read_text()))
    d = diff(a, b)
    assert d["matched"][0]["match"] == "label" and d["summary"]["unmatched"] == []
    load = next(r for r in d["summary"]["regressions"] if r["name"] == "load")
    assert load["change"] >= 1.4 and " load " in text
