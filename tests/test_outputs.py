"""--format md|csv|json|jsonl for recommend, diff and compare: the same answer as the console, for scripts."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from loadprof.cli import main
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
