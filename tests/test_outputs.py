"""--format md|csv|json|jsonl for recommend, diff and compare: the same answer as the console, for scripts."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from loadprof.cli.main import main
from tests.test_recommend import _quant_sweep, _write_report


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_recommend_formats(tmp_path):
    out = _write_report(tmp_path / "run", _quant_sweep())
    j = _run("recommend", str(out), "--format", "json")
    assert j.exit_code == 0, j.output
    picks = json.loads(j.output)["picks"]
    assert {p["objective"] for p in picks} == {"load", "memory", "ttft", "throughput"}
    lines = [json.loads(x) for x in _run("recommend", str(out), "--format", "jsonl", "--objective", "memory")
             .output.splitlines()]
    assert len(lines) == 1 and lines[0]["objective"] == "memory" and lines[0]["verdict"] == "pick"
    assert lines[0]["label"] == "nf4" and lines[0]["n"] == 3 and lines[0]["q1"] <= lines[0]["median"] <= lines[0]["q3"]
    rows = list(csv.DictReader(io.StringIO(_run("recommend", str(out), "--format", "csv").output)))
    assert len(rows) == 4 and {r["verdict"] for r in rows} <= {"pick", "tie", "only", "undecided", "none"}
    md = _run("recommend", str(out), "--format", "md").output
    assert md.startswith("| objective | verdict | configuration |") and "decision rule:" in md
    bad = _run("recommend", str(out), "--format", "md", "--lengths", str(out / "report.json"))
    assert bad.exit_code == 2


def test_diff_formats(tmp_path):
    a = _write_report(tmp_path / "a", _quant_sweep())
    b = _write_report(tmp_path / "b", _quant_sweep())
    j = _run("diff", str(a), str(b), "--format", "json")
    d = json.loads(j.output)
    assert j.exit_code == d["exit_code"] == 0 and d["rows"]
    rows = [json.loads(x) for x in _run("diff", str(a), str(b), "--format", "jsonl").output.splitlines()]
    assert len(rows) == len(d["rows"]) and all(r["verdict"] == "same" for r in rows if r["gated"])
    c = list(csv.DictReader(io.StringIO(_run("diff", str(a), str(b), "--format", "csv").output)))
    assert len(c) == len(d["rows"]) and "noise" in c[0]
    md = _run("diff", str(a), str(b), "--format", "md").output
    assert md.startswith("diff: quant -> quant: exit 0") and "within noise" in md


def test_eta_comes_from_the_mean_finished_trial():
    from loadprof.cli.progress import eta_text

    assert eta_text([], 4) == "ETA after the first trial" and eta_text([5.0], 0) == ""
    assert eta_text([9.0, 11.0], 3) == "ETA 0:00:30 (mean trial 10.0 s)"
    assert eta_text([3600.0], 2, running_s=100.0) == "ETA 1:58:20 (mean trial 3600.0 s)"
    assert eta_text([10.0], 4, jobs=2) == "ETA 0:00:20 (mean trial 10.0 s)"
    assert eta_text([10.0], 1, running_s=25.0) == "ETA 0:00:00 (mean trial 10.0 s)"  # past the mean: ending


def test_the_eta_moves_while_a_trial_runs():
    """The column reads the state on every refresh: the running trial's elapsed time counts down the ETA."""
    from loadprof.cli.progress import _EtaState

    now = [100.0]
    eta = _EtaState(lambda: now[0])
    eta.started, eta.remaining = 100.0, 3
    assert eta.text() == "ETA after the first trial"
    now[0] = 107.0
    assert eta.text() == "ETA after the first trial (running 0:00:07)"
    eta.walls, eta.started, eta.remaining = [60.0], 107.0, 2
    now[0] = 117.0
    assert eta.text() == "ETA 0:01:50 (mean trial 60.0 s)"
    now[0] = 147.0
    assert eta.text() == "ETA 0:01:20 (mean trial 60.0 s)"


@pytest.mark.e2e
def test_compare_format_jsonl_owns_stdout(tmp_path, tiny_model):
    """A machine format: one JSON trial per stdout line, progress and the summary on stderr."""
    import subprocess
    import sys

    from .conftest import REPO

    y = tmp_path / "s.yaml"
    y.write_text(f"name: fmt\nmodel: {{path: {tiny_model}}}\nbase: {{generate: {{prompt_tokens: 4, max_new_tokens: 2}}}}\n")
    r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(tmp_path / "o"),
                        "--format", "jsonl"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    (trial,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert trial["status"] == "ok" and "loadprof fmt" in r.stderr


def test_a_tie_shows_each_tied_configurations_median_ci_and_margin():
    from loadprof.cli.outputs import recommendation_lines
    from loadprof.core.conclusions import Candidate, Estimate, Figure, Recommendation

    pick, other = Estimate(2.0, 1.9, 2.1, 3, 1.8, 2.3), Estimate(1.8, 1.7, 1.9, 3, 1.7, 2.2)
    r = Recommendation("load", Figure("load_cost_s", 2.0, "s"), label="a", verdict="tie", estimate=pick,
                       tied=("b",), rule="the simplest", candidates=(Candidate("a", (), pick), Candidate("b", (), other)))
    text = "\n".join(recommendation_lines(r))
    assert "tied with (within the noise): b" in text and "the pick's 95% CI: 1.8 s..2.3 s" in text
    assert "b: 1.8 s" in text and "95% CI 1.7 s..2.2 s" in text and "-10.0% from the pick" in text
