"""The one reader of report.json: every tampered file is one line naming it and exit 2 through ``recommend``,
``diff`` and ``report``, never a traceback; what can be forgiven (a bad trial, NaN, a string for a number) is
skipped or read as missing, and said."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import loadprof
from loadprof.cli.main import main
from loadprof.core.errors import LoadprofError
from loadprof.results import report_file
from loadprof.results.report_file import ReportWarning, read_report
from tests.test_recommend import _quant_sweep, _write_report

from .conftest import REPO


def _good(tmp_path: Path) -> dict:
    return json.loads((_write_report(tmp_path / "good", _quant_sweep()) / "report.json").read_text())


def _folder(tmp_path: Path, name: str, content: bytes | str | dict) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps(content) if isinstance(content, dict) else content
    (folder / "report.json").write_bytes(data.encode() if isinstance(data, str) else data)
    return folder


def _tampered(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (folder, what the one line must say)."""
    good = _good(tmp_path)
    deep_dicts = {"a": None}
    node = deep_dicts
    for _ in range(report_file.MAX_DEPTH + 20):  # within what the parser takes, past the stated limit
        node["a"] = {"a": None}
        node = node["a"]
    cases = {
        "deep lists": (b"[" * 100_000, "nested deeper than"),
        "deep objects": ({**good, "env": deep_dicts}, "nested deeper than"),
        "top-level list": ("[1, 2, 3]", "a JSON list, not a loadprof report"),
        "top-level string": ('"report"', "a JSON str, not a loadprof report"),
        "invalid utf-8": (b'{"run_id": "\xff\xfe"}', "not UTF-8"),
        "not json": ("{not json", "not JSON"),
        "empty": ("", "not JSON"),
        "no run_id": ({k: v for k, v in good.items() if k != "run_id"}, "no run_id"),
        "run_id a number": ({**good, "run_id": 7}, "no run_id"),
        "trials a mapping": ({**good, "trials": {"a": 1}}, "trials is dict, not a list"),
        "no trials": ({k: v for k, v in good.items() if k != "trials"}, "trials is missing"),
        "schema from the future": ({**good, "schema_version": 99}, "schema_version 99"),
    }
    return {name: (_folder(tmp_path, name.replace(" ", "-"), content), says) for name, (content, says) in cases.items()}


def _one_error_line(output: str, folder: Path, says: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert str(folder) in errors[0] and says in errors[0], output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["recommend", "diff", "report"])
def test_every_tampered_file_is_one_line_and_exit_2(tmp_path, command):
    good = _write_report(tmp_path / "ok", _quant_sweep())
    for name, (folder, says) in _tampered(tmp_path).items():
        args = {"recommend": ["recommend", str(folder)], "diff": ["diff", str(good), str(folder)],
                "report": ["report", str(folder)]}[command]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (name, r.output, r.exception)
        _one_error_line(r.output, folder, says)


def test_a_report_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    assert report_file.MAX_REPORT_BYTES == 256 * 2**20  # the stated limit
    folder = _write_report(tmp_path / "big", _quant_sweep())
    monkeypatch.setattr(report_file, "MAX_REPORT_BYTES", 1000)
    r = CliRunner().invoke(main, ["recommend", str(folder)])
    assert r.exit_code == 2
    _one_error_line(r.output, folder, "bytes, over the")


def test_bad_trials_are_skipped_counted_and_said_on_stderr(tmp_path):
    good = _good(tmp_path)
    trials = good["trials"]
    bad = [dict(trials[0], status="exploded"), dict(trials[1], metrics=[]), "a string", dict(trials[2], phases=[{}])]
    folder = _folder(tmp_path, "some-bad", {**good, "trials": trials + bad})
    r = CliRunner().invoke(main, ["recommend", str(folder), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "skipped 4 unreadable trials (trial 6: status 'exploded' unknown; trial 7: metrics is a list" in r.stderr
    assert json.loads(r.stdout)["picks"]  # stdout is still the answer alone
    read = read_report(folder)
    assert len(read.sweep.trials) == len(trials) and len(read.notes) == 1 and str(folder) in read.notes[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert len(loadprof.load_report(folder).trials) == len(trials)
    assert [w.category for w in seen] == [ReportWarning]


def test_nan_infinity_and_strings_for_numbers_read_as_missing(tmp_path):
    good = _good(tmp_path)
    first = good["trials"][0]
    doctored = dict(first, wall_s="slow", metrics={**first["metrics"], "load_s": "fast", "ttft_ms": "__NAN__",
                                                     "decode_tok_s": "__INF__", "peak_rss_bytes": "__HUGE__"})
    text = json.dumps({**good, "trials": [doctored, *good["trials"][1:]]})
    text = text.replace('"__NAN__"', "NaN").replace('"__INF__"', "-Infinity").replace('"__HUGE__"', "1e999")
    folder = _folder(tmp_path, "numbers", text)
    t = read_report(folder).sweep.trials[0]
    assert t.wall_s is None and "load_s" not in t.metrics
    assert t.metrics["ttft_ms"] is None and t.metrics["decode_tok_s"] is None and t.metrics["peak_rss_bytes"] is None
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in t.metrics.values())
    r = CliRunner().invoke(main, ["recommend", str(folder)])
    assert r.exit_code == 0 and "Traceback" not in r.output


def test_conclusions_that_do_not_read_are_left_out_with_a_note(tmp_path):
    good = _good(tmp_path)
    folder = _folder(tmp_path, "bad-findings", {**good, "findings": "everything is fine", "configurations": [1]})
    read = read_report(folder)
    assert read.sweep.findings == () and read.sweep.configurations == ()
    assert any("its findings do not read" in n for n in read.notes)
    assert any("its configurations do not read" in n for n in read.notes)


def test_a_folder_or_the_file_itself_and_a_missing_one(tmp_path):
    folder = _write_report(tmp_path / "run", _quant_sweep())
    assert read_report(folder).sweep == read_report(folder / "report.json").sweep
    with pytest.raises(LoadprofError, match="report.json not found") as e:
        read_report(tmp_path / "nothing")
    assert e.value.exit_code == 2


def test_the_real_cli_prints_no_traceback(tmp_path):
    folder = _folder(tmp_path, "deep", b"[" * 100_000)
    r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "recommend", str(folder)], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {folder / 'report.json'} is unreadable: nested deeper than")
