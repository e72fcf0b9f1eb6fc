"""A sweep survives every way a trial dies, writes as it goes, and resumes."""

from __future__ import annotations

import json

import pytest

from loadprof.core.errors import LoadprofError
from loadprof.core.payloads import MemoryPayload, SamplingPayload
from loadprof.run.session import RESULTS, Session, read_results
from loadprof.strategies.expand import Sweep

from .test_runner import fault_strategy

#: the hanging trial's timeout: long enough for its worker to start and enter the load phase on a busy machine
#: (interpreter, torch and transformers imports), since the test checks that it hung inside that phase
HANG_TIMEOUT_S = 30


@pytest.mark.e2e
def test_fault_sweep_completes_and_records_each_death(tiny_model, tmp_path):
    strategies = (
        fault_strategy(tiny_model, "segfault", "segfault"),
        fault_strategy(tiny_model, "exit-3", "exit_code", loader={"kwargs": {"code": 3}}),
        fault_strategy(tiny_model, "hang", "hang", timeout_s=HANG_TIMEOUT_S),
        fault_strategy(tiny_model, "memory-capped", "hog", memory_limit="2GiB"),
        fault_strategy(tiny_model, "normal", None),
    )
    sweep = Sweep(name="faults", source="test", description="", repeat=1, strategies=strategies)
    seen = []
    result = Session(sweep, tmp_path / "out", on_trial=lambda r, i, n: seen.append(r.trial_id)).run()
    by_label = {t.label: t for t in result.trials}
    assert by_label["normal"].status == "ok"
    assert by_label["segfault"].status == "crashed" and by_label["segfault"].signal == "SIGSEGV"
    assert "Segmentation fault" in by_label["segfault"].stderr_tail  # faulthandler's Python stack
    assert by_label["exit-3"].status == "crashed" and by_label["exit-3"].exit_code == 3
    assert by_label["hang"].status == "timeout" and f"timeout_s={HANG_TIMEOUT_S}" in by_label["hang"].reason
    assert by_label["hang"].phase("load").incomplete  # it hung inside the load phase
    capped = by_label["memory-capped"]
    assert capped.status in ("failed", "crashed") and ("memory" in capped.reason.lower() or capped.signal == "SIGKILL")
    # every trial was appended as it finished, in order, and report.json holds them all
    lines = (tmp_path / "out" / RESULTS).read_text().splitlines()
    assert [json.loads(x)["trial_id"] for x in lines] == seen == [t.id for t in sweep.trials()]  # the run order
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["trials"]) == 5 and report["interrupted"] is False


@pytest.mark.e2e
def test_interrupted_sweep_keeps_finished_trials_and_resumes(tiny_model, tmp_path):
    strategies = tuple(fault_strategy(tiny_model, f"n{i}", "exit_code", loader={"kwargs": {"code": i}})
                       for i in (3, 4, 5))
    sweep = Sweep(name="resume", source="test", description="", repeat=1, strategies=strategies)
    out = tmp_path / "out"

    def interrupt_after_first(result, i, n):
        if i == 1:
            raise KeyboardInterrupt

    order = [t.id for t in sweep.trials()]  # the run order (seeded shuffle), the same on every call
    first = Session(sweep, out, on_trial=interrupt_after_first).run()
    assert first.interrupted and [t.trial_id for t in first.trials] == order[:1]
    assert json.loads((out / "report.json").read_text())["interrupted"] is True
    with (out / RESULTS).open("a") as f:
        f.write('{"trial_id": "torn')  # a sweep killed mid-write leaves a torn line
    with pytest.raises(LoadprofError) as e:
        Session(sweep, out).run()
    assert e.value.exit_code == 2 and "--resume" in e.value.hint
    ran = []
    second = Session(sweep, out, resume=True, on_start=lambda t, i, n: ran.append(t.id)).run()
    assert ran == order[1:]
    assert [t.label for t in second.trials] == ["n3", "n4", "n5"] and not second.interrupted
    assert len(read_results(out)) == 3


@pytest.mark.e2e
def test_custom_loader_top_user_function_is_named_with_file_and_line(tmp_path):
    """The user's-ModelManager acceptance: its slow validation loop is named as the top user cost."""
    from loadprof.analysis.findings import sweep_findings
    from loadprof.strategies.expand import load_sweep
    from loadprof.strategies.model import DEFAULT_SAMPLING_HZ

    from .conftest import EXAMPLES

    y = tmp_path / "mm.yaml"
    y.write_text(f"""
model: {{synthetic: {{shape: gpt2, dtype: float32}}}}
base: {{generate: false}}
include:
  - label: model-manager
    load: {{loader: {{target: "model_manager:ModelManager.load_model", sys_path: ["{EXAMPLES}"]}}}}
""")
    result = Session(load_sweep(y), tmp_path / "out").run()
    (t,) = result.trials
    assert t.status == "ok", (t.reason, t.stderr_tail)
    sampling = t.payload(SamplingPayload)
    assert sampling.ok and sampling.rate_hz == DEFAULT_SAMPLING_HZ
    top = sampling.user_functions[0]
    assert top.name == "ModelManager._validate_all_modules"
    assert top.file.endswith("strategies/examples/model_manager.py")
    src = (EXAMPLES / "model_manager.py").read_text().splitlines()
    assert src[top.line - 1].lstrip().startswith("def _validate_all_modules")
    # the load also holds the modeling module's lazy import (about as long as this validation on a tiny model)
    assert top.phase == "load" and top.own_share_of_phase > 0.25 and top.running_s > top.waiting_s
    assert (tmp_path / "out" / "trials" / t.trial_id / "profile.speedscope.json").exists()
    kinds = {f.kind: f for f in sweep_findings(result.trials)}
    assert {"dominant_user_function", "ignored_kwarg", "needless_max_memory"} <= set(kinds)
    assert "modeling_utils.py" in kinds["ignored_kwarg"].evidence["source"]


@pytest.mark.e2e
def test_max_memory_forcing_layers_to_disk_gets_an_offload_finding_and_estimates_match(tmp_path):
    from loadprof.analysis.findings import sweep_findings
    from loadprof.strategies.expand import load_sweep

    y = tmp_path / "offload.yaml"
    y.write_text("""
model: {synthetic: {shape: gpt2, dtype: bfloat16}}
base: {generate: {prompt_tokens: 4, max_new_tokens: 2, warmup: 0}}
include:
  - {label: fits, load: {dtype: float32}}
  - {label: disk, load: {device_map: auto, offload: disk, max_memory: {cpu: 100MB}}}
""")
    result = Session(load_sweep(y), tmp_path / "out").run()
    fits, disk = result.trials
    assert fits.status == disk.status == "ok", (fits.reason, disk.reason)
    for t in (fits, disk):
        (row,) = t.metrics["estimate_vs_measured"]
        assert abs(row["ratio"] - 1) < 0.05 and not row["discrepancy"]
        mem = t.payload(MemoryPayload)
        assert mem.timeline.rows and len(mem.timeline.rows) <= 400
        assert {"load", "warmup"} <= set(mem.per_phase)
        assert t.phases[-1].name == "cleanup" and t.phases[-2].name == "estimate"
    (off,) = [f for f in sweep_findings(result.trials) if f.kind == "offload"]
    assert off.label == "disk" and off.evidence["layers"]["disk"] >= 1 and off.evidence["bytes"]["disk"] > 0
    assert f"{off.evidence['layers']['disk']} of 12 layers" in off.title


def _fake_sweep():
    from loadprof.strategies.expand import expand

    return expand({"model": {"synthetic": {"shape": "tiny"}}, "repeat": 2,
                   "matrix": {"load": {"dtype": ["float32", "bfloat16"]}}})


def _fake_result(trial):
    from loadprof.results.model import TrialResult

    return TrialResult(trial_id=trial.id, strategy_id=trial.strategy.id, label=trial.strategy.display(),
                       repeat_index=trial.repeat_index, status="skipped", strategy=trial.strategy, reason="fake")


def test_a_resume_with_nothing_left_does_not_draw_current_reports_again(tmp_path, monkeypatch):
    import loadprof.reports.files as files

    monkeypatch.setattr(Session, "run_one", lambda self, trial, env=None: _fake_result(trial))
    Session(_fake_sweep(), tmp_path / "out").run()
    drawn, said = [], []
    monkeypatch.setattr(files, "write_all", lambda result, out: drawn.append(out) or {})
    again = Session(_fake_sweep(), tmp_path / "out", resume=True, log=said.append).run()
    assert drawn == [] and len(again.trials) == 4 and any("up to date" in s for s in said)
    (tmp_path / "out" / "report.html").unlink()  # a report missing (or older than the results): drawn again
    Session(_fake_sweep(), tmp_path / "out", resume=True).run()
    assert drawn == [tmp_path / "out"]


def test_resume_runs_what_is_left_interleaved_and_reports_by_strategy(tmp_path, monkeypatch):
    """No worker: ``run_one`` is faked, so this checks only the session's order of trials and its resume."""
    monkeypatch.setattr(Session, "run_one", lambda self, trial, env=None: _fake_result(trial))
    sweep = _fake_sweep()
    a, b = (s.id for s in sweep.strategies)
    out, ran = tmp_path / "out", []

    def interrupt_after_second(result, i, n):
        if i == 2:
            raise KeyboardInterrupt

    first = Session(sweep, out, on_start=lambda t, i, n: ran.append(t.id), on_trial=interrupt_after_second).run()
    assert ran == [f"{a}-r0", f"{b}-r0"] and first.interrupted  # ABAB: both r0 before any r1
    ran.clear()
    second = Session(sweep, out, resume=True, on_start=lambda t, i, n: ran.append(t.id)).run()
    assert ran == [f"{a}-r1", f"{b}-r1"]
    assert [t.trial_id for t in second.trials] == [f"{a}-r0", f"{a}-r1", f"{b}-r0", f"{b}-r1"]
    assert [json.loads(x)["trial_id"] for x in (out / RESULTS).read_text().splitlines()] == [
        f"{a}-r0", f"{b}-r0", f"{a}-r1", f"{b}-r1"]
