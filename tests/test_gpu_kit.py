"""The GPU kit (benchmarks/gpu) off the GPU: the load.method and stopwatch checks over trials shaped as loadprof
writes them (TrialResult -> derive.enrich -> to_dict, so the metric keys are the real ones), a skipped method
reported as skipped, the wheels run.py installs, and the stopwatch's verdicts as the check reads them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from loadprof.analysis import derive
from loadprof.core.phases import PhaseTiming
from loadprof.results.model import TrialResult
from tests.helpers import strategy_of

KIT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
sys.path.insert(0, str(KIT))
sys.path.insert(0, str(KIT.parent))

import check  # noqa: E402 - benchmarks/gpu/check.py
import check_methods as cm  # noqa: E402
import run  # noqa: E402
import stopwatch  # noqa: E402 - benchmarks/stopwatch.py

GB = 10**9


def _trial(method: str, cache: str = "warm", status: str = "ok", *, place: bool | None = None,
           logits: str | None = cm.LOGITS_EQUAL, reason: str | None = None, repeat: int = 0) -> dict[str, Any]:
    """One trial of the loading-methods sweep as report.json holds it: phases, bytes per step, the read bound the
    parent measured, the pageable H2D rate the bandwidth probe measured, the logits check's metrics."""
    place = method == "runai" if place is None else place
    steps = ["read", *(["place"] if place else []), "assign"]
    per = {s: 3 * GB for s in steps} if method != "from_pretrained" else {}
    kids = tuple(PhaseTiming(s, 0.5 + i, 1.5 + i) for i, s in enumerate(steps if per else ["weights"]))
    load = PhaseTiming("load", 0.0, kids[-1].end_s, children=kids)
    warm = PhaseTiming("warmup", load.end_s, load.end_s + 0.2,
                       children=(PhaseTiming("forward", load.end_s, load.end_s + 0.2),))
    metrics: dict[str, Any] = {"load_s": load.duration_s, "h2d_pageable_gb_s": 8.0,
                               "weights_bytes": 3 * GB, "bytes_by_device": {"cuda:0": 3 * GB}}
    if per:
        metrics.update(load_bytes_by_step=per, load_method=method)
        if logits is not None:
            metrics.update(logits_check=logits, logits_max_abs_diff=0.0)
    strategy = strategy_of({"load": {"method": method, "device_map": "cuda", "file_cache": cache,
                                     "check_logits": True}})
    t = TrialResult(trial_id=f"{method}-{cache}-r{repeat}", strategy_id=strategy.id, label=f"{method}-{cache}",
                    repeat_index=repeat, status=status, reason=reason, strategy=strategy, metrics=metrics,
                    phases=(load, warm) if status == "ok" else (),
                    harness={derive.READ_BOUNDS[cache][0]: {"gb_s": 6.0}})
    return derive.enrich(t).to_dict() if status == "ok" else t.to_dict()


def _sweeps(trials: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    return {cm.METHODS_SWEEP: {"name": cm.METHODS_SWEEP, "trials": trials, "findings": [], "_dir": tmp_path}}


def _all_methods() -> list[dict[str, Any]]:
    return [_trial(m, repeat=r) for m in cm.KIT_METHODS for r in (0, 1)]


def _run(sweeps: dict[str, Any]) -> check.Checks:
    c = check.Checks()
    for fn in cm.METHOD_CHECKS:
        fn(c, sweeps)
    return c


def test_every_method_ok_with_equal_logits_passes_and_shows_its_figures(tmp_path: Path) -> None:
    c = _run(_sweeps(_all_methods() + [_trial("from_pretrained", "cold")], tmp_path))
    assert [r["status"] for r in c.rows] == ["pass"] * (len(cm.KIT_METHODS) + 2) and not c.failed
    by = {r["check"]: r["evidence"] for r in c.rows}
    (runai,) = [e for k, e in by.items() if "load.method runai" in k]
    assert "2/2 trials ok (warm)" in runai and "logits equal to from_pretrained (max |diff| 0)" in runai
    (bounds,) = [e for k, e in by.items() if "read bound" in k]
    assert "of page-cache read 6.0 GB/s" in bounds and "of storage sequential read 6.0 GB/s" in bounds
    (place,) = [e for k, e in by.items() if "place step" in k]
    assert "runai-warm: place 3.00 GB/s = 37.5% of pageable H2D 8.0 GB/s" in place  # 3 GB in 1 s vs 8 GB/s
    assert "no place step: fastsafetensors, instanttensor, safetensors" in place


def test_a_method_loadprof_skipped_is_reported_skipped_with_its_reason_and_fails(tmp_path: Path) -> None:
    why = "load.method instanttensor needs the instanttensor package, not installed here"
    trials = [t for t in _all_methods() if t["strategy"]["load"]["method"] != "instanttensor"]
    trials += [_trial("instanttensor", status="skipped", reason=why, repeat=r) for r in (0, 1)]
    c = _run(_sweeps(trials, tmp_path))
    (row,) = [r for r in c.rows if "instanttensor" in r["check"]]
    assert row["status"] == "skipped" and why in row["evidence"] and "2/2 trials skipped" in row["evidence"]
    assert c.failed == [row]
    assert "skipped" in check.render_md(c, {})


def test_different_logits_or_a_missing_check_fail_the_method(tmp_path: Path) -> None:
    mismatch = "load.method fastsafetensors: logits differ from from_pretrained's on a fixed input (max |diff| 0.5)"
    trials = [t for t in _all_methods() if t["strategy"]["load"]["method"] not in ("fastsafetensors", "safetensors")]
    trials += [_trial("fastsafetensors", status="failed", reason=mismatch), _trial("fastsafetensors", repeat=1),
               _trial("safetensors", logits=None), _trial("safetensors", repeat=1)]
    failed = {r["check"].split(":")[0]: r["evidence"] for r in _run(_sweeps(trials, tmp_path)).failed}
    assert set(failed) == {"load.method fastsafetensors", "load.method safetensors"}
    assert "1/2 trials ok" in failed["load.method fastsafetensors"] and "max |diff| 0.5" in failed[
        "load.method fastsafetensors"]
    assert "logits_check None" in failed["load.method safetensors"]


def test_a_direct_reader_with_a_place_step_or_a_trial_without_its_bound_fails(tmp_path: Path) -> None:
    odd = _trial("safetensors", place=True)
    unbound = _trial("from_pretrained")
    unbound["metrics"].pop("load_bound_fraction")
    c = _run(_sweeps([odd, unbound, _trial("runai")], tmp_path))
    failed = {r["check"]: r["evidence"] for r in c.failed}
    (place,) = [e for k, e in failed.items() if "place step" in k]
    assert "safetensors reads straight onto the device" in place
    (bounds,) = [e for k, e in failed.items() if "read bound" in k]
    assert "from_pretrained-warm: load_gb_s" in bounds and "load_bound_fraction None" in bounds


def test_a_sweep_that_did_not_run_leaves_every_method_not_run(tmp_path: Path) -> None:
    c = _run({})
    assert {r["status"] for r in c.rows} == {"not run"} and len(c.failed) == len(c.rows) == len(cm.KIT_METHODS) + 2
    runai_only = _run(_sweeps([_trial("runai")], tmp_path))
    assert [r["status"] for r in runai_only.rows if r["check"].startswith("load.method from_pretrained")] == [
        "not run"]


def test_check_main_reads_the_sweep_folder_and_fails_on_a_skipped_method(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "loading_methods").mkdir(parents=True)
    trials = [t for t in _all_methods() if t["strategy"]["load"]["method"] != "runai"]
    trials += [_trial("runai", status="skipped", reason="needs the runai_model_streamer package", repeat=r)
               for r in (0, 1)]
    (work / "loading_methods" / "report.json").write_text(
        json.dumps({"name": cm.METHODS_SWEEP, "trials": trials, "findings": []}))
    (work / "loading_methods" / "sweep.json").write_text(json.dumps({"strategies": [{}] * 5, "repeat": 2}))
    assert check.main([str(work), "--md", str(tmp_path / "c.md"), "--json", str(tmp_path / "c.json")]) == 1
    rows = {r["check"]: r for r in json.loads((tmp_path / "c.json").read_text())["checks"]}
    assert rows["load.method runai: every trial ok on CUDA, logits equal to from_pretrained's"]["status"] == "skipped"
    (sw,) = [r for k, r in rows.items() if k.startswith("stopwatch")]
    assert sw["status"] == "not run" and not sw["required"]
    every = rows["every trial ran ok on the GPU"]
    assert every["status"] == "FAIL" and "8/10 planned trials ok" in every["evidence"]
    (place,) = [r for k, r in rows.items() if "place step" in k]
    assert place["status"] == "not run" and "skipped" in place["evidence"]


def _stopwatch_results(loadprof_cost: float) -> dict[str, Any]:
    one = {"load_cost_s": 2.0, "ttft_ms": 20.0, "decode_tok_s": 40.0}
    return {"qwen2.5-0.5b|bfloat16": {"stopwatch": [one] * 3, "loadprof": [{**one, "load_cost_s": loadprof_cost}] * 3}}


@pytest.mark.parametrize("cost, status", [(2.04, "pass"), (2.5, "FAIL")])
def test_the_stopwatch_verdicts_are_an_informational_check(tmp_path: Path, cost: float, status: str) -> None:
    out = tmp_path / run.STOPWATCH
    out.mkdir()
    (out / "stopwatch.json").write_text(json.dumps({"verdicts": stopwatch.verdicts(_stopwatch_results(cost)),
                                                    "rounds": 3, "device": "cuda"}))
    c = check.Checks()
    cm.check_stopwatch(c, tmp_path)
    (row,) = c.rows
    assert row["status"] == status and not row["required"] and not c.failed
    assert row["evidence"].startswith("3 rounds on cuda") and f"real load cost: {cost / 2.0:.3f}" in row["evidence"]


def test_a_skipped_stopwatch_step_says_why_in_the_check_and_the_report(tmp_path: Path) -> None:
    (tmp_path / run.STOPWATCH).mkdir()
    (tmp_path / run.STOPWATCH / "skipped.txt").write_text("skipped: 90 s of budget left after the sweeps\n")
    c = check.Checks()
    cm.check_stopwatch(c, tmp_path)
    assert c.rows[0]["status"] == "not run" and "90 s of budget left" in c.rows[0]["evidence"]
    assert "90 s of budget left" in run.stopwatch_section(tmp_path)
    (tmp_path / run.STOPWATCH / "table.txt").write_text("model ... ratio\n")
    assert "```\nmodel ... ratio\n```" in run.stopwatch_section(tmp_path)


def test_run_installs_the_loaders_always_and_a_dependency_only_where_it_is_missing(tmp_path, monkeypatch) -> None:
    for name in ("py_spy-0.4.3-py2.py3-none-manylinux1_x86_64.whl", "humanize-4.17.0-py3-none-any.whl",
                 "runai_model_streamer-0.17.1-py3-none-manylinux_2_28_x86_64.whl", "Zzz_New_Dep-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(run, "WHEELS", tmp_path)
    wheels, kept = run.wheels_to_install()  # this venv has humanize (the test extra) and no zzz-new-dep
    assert [w.name.split("-")[0] for w in wheels] == ["Zzz_New_Dep", "py_spy", "runai_model_streamer"]
    assert kept == ["humanize"]
    assert run.project("runai_model_streamer-0.17.1-py3-none-any.whl") == run.project("Runai.Model-Streamer")
    assert run.wheels_present() == ["bitsandbytes", "fastsafetensors", "instanttensor"]


def test_the_stopwatch_rewrites_its_table_after_each_round(tmp_path: Path) -> None:
    args = argparse.Namespace(out=tmp_path, device="cuda", models="qwen2.5-0.5b")
    results = _stopwatch_results(2.0)
    results["qwen2.5-0.5b|bfloat16"]["loadprof"].pop()  # the third round's loadprof side has not run yet
    text = stopwatch.write(args, results, 0.5)
    got = json.loads((tmp_path / "stopwatch.json").read_text())
    assert got["rounds"] == 2 and got["device"] == "cuda" and all(r["pass"] for r in got["verdicts"])
    assert (tmp_path / "table.txt").read_text() == text + "\n" and text.startswith("2 fresh processes per side")
