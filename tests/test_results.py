from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadprof.analysis.derive import enrich
from loadprof.core.payloads import (BandwidthPayload, IOPayload, LoadPhasesPayload, MachinePayload, MemoryPayload,
                                    PhaseIO, SamplingPayload, UserFunction)

from loadprof.core.errors import LoadprofError
from loadprof.results.model import SCHEMA_VERSION, PhaseTiming, SweepResult, TrialResult
from tests.helpers import strategy_of


def _trial(**kw):
    base = dict(trial_id="abc-r0", strategy_id="abc", label="x", repeat_index=0, status="ok", strategy=strategy_of(),
                wall_s=2.0, phases=(PhaseTiming("load", 0.0, 1.5, (PhaseTiming("weights", 0.25, 1.0),)),),
                metrics={"load_s": 1.5}, notes=("n",))
    base.update(kw)
    return TrialResult(**base)


def test_json_round_trip_is_lossless():
    sweep = SweepResult(run_id="r", name="n", source="s.yaml", created_at="t", trials=(_trial(),))
    again = SweepResult.from_dict(json.loads(json.dumps(sweep.to_dict())))
    assert again == sweep
    assert again.to_dict()["schema_version"] == SCHEMA_VERSION


def test_other_is_derived_and_find_walks_paths():
    t = _trial()
    load = t.phase("load")
    assert load is not None and load.other_s == pytest.approx(0.75)
    assert t.phase("load/weights").duration_s == pytest.approx(0.75)
    assert t.phase("load/nope") is None


def test_bad_status_and_wrong_schema_rejected():
    with pytest.raises(ValueError):
        _trial(status="weird")
    d = SweepResult(run_id="r", name="n", source="s", created_at="t").to_dict()
    d["schema_version"] = 999
    with pytest.raises(LoadprofError, match="schema_version 999; this loadprof reads 1, 2, 3") as e:
        SweepResult.from_dict(d)
    assert e.value.exit_code == 2


V2_REPORT = Path(__file__).parent / "fixtures" / "results" / "report-v2.json"  # written by cf9e0ff's compare


def _v2() -> dict:
    return json.loads(V2_REPORT.read_text())


def test_a_version_2_report_loads_with_typed_payloads_and_the_figures_it_held():
    doc = _v2()
    raw = doc["trials"][0]
    t = SweepResult.from_dict(doc).trials[0]
    memory, io, sampled = t.payload(MemoryPayload), t.payload(IOPayload), t.payload(SamplingPayload)
    assert memory.trial_peak_rss_bytes == raw["probes"]["memory"]["metrics"]["trial_peak_rss_bytes"]
    assert memory.per_phase["load"].to_dict() == {**dict.fromkeys(memory.per_phase["load"].to_dict()),
                                                  **raw["probes"]["memory"]["per_phase"]["load"]}  # CUDA: None
    assert io.per_phase == {p: PhaseIO(**r) for p, r in raw["probes"]["io"]["per_phase"].items()}
    assert t.payload(LoadPhasesPayload).from_pretrained_calls[0].cls == "Qwen2ForCausalLM"
    assert sampled.ok and sampled.user_functions == tuple(
        UserFunction.from_dict(u) for u in raw["probes"]["sampling"]["metrics"]["user_functions"])
    assert "notes" not in sampled.extra  # the attribution's notes were already the trial's
    assert t.payload(MachinePayload).to_dict() == raw["harness"]["machine"] and "machine" not in t.harness
    assert t.payload(BandwidthPayload).membw_gb_s == raw["metrics"]["membw_gb_s"]  # metrics-filed: in place
    for payload in t.probes.values():
        assert payload.extra == {}  # every key version 2 wrote has its field
    assert t.notes == tuple(raw["notes"]) and t.artifacts == raw["artifacts"]
    figures = enrich(t).metrics  # derived where classify used to compute them: the same numbers
    for key in ("load_s", "import_s", "generate_s", "peak_rss_bytes"):
        assert figures[key] == raw["metrics"][key], key


def test_a_migrated_report_is_written_as_version_3_and_reads_back_equal():
    sweep = SweepResult.from_dict(_v2())
    d = json.loads(json.dumps(sweep.to_dict()))
    assert d["schema_version"] == 3 and d["trials"][0]["schema_version"] == 3
    assert d["trials"][0]["probes"]["memory"]["trial_peak_rss_bytes"] > 0  # flat: no metrics envelope
    assert SweepResult.from_dict(d) == sweep


def test_a_version_2_results_jsonl_line_reads():
    from loadprof.results.jsonl import parse_line

    raw = _v2()["trials"][0]  # a results.jsonl line is the same object, without a schema_version
    assert "schema_version" not in raw
    t = parse_line(json.dumps(raw).encode())
    assert t.payload(MemoryPayload).samples == raw["probes"]["memory"]["metrics"]["samples"]
    assert parse_line(json.dumps(t.to_dict()).encode()) == t


def test_version_1_files_load_with_the_whole_trial_peak_renamed():
    """Version 1 called both the workload peak (metrics) and the whole-trial peak (probes.memory) peak_rss_bytes."""
    doc = _v2()
    memory = doc["trials"][0]["probes"]["memory"]
    memory["metrics"]["peak_rss_bytes"] = memory["metrics"].pop("trial_peak_rss_bytes")
    doc["schema_version"] = 1
    t = SweepResult.from_dict(doc).trials[0]
    assert t.metrics["peak_rss_bytes"] == doc["trials"][0]["metrics"]["peak_rss_bytes"]  # the workload's: kept
    assert t.payload(MemoryPayload).trial_peak_rss_bytes == memory["metrics"]["peak_rss_bytes"]
    assert t.payload(MemoryPayload).per_phase["load"].peak_rss_bytes == memory["per_phase"]["load"]["peak_rss_bytes"]
    assert SweepResult.from_dict(SweepResult.from_dict(doc).to_dict()).trials[0] == t


def test_older_sampling_rows_read_in_todays_fields():
    """Before thread states: user functions of the load only, counts x interval; phase rows of counts."""
    doc = _v2()
    sampling = doc["trials"][0]["probes"]["sampling"]["metrics"]
    sampling.update(interval_s=0.01, phases={"load": {"samples": 30, "inclusive_samples": 50}}, user_functions=[
        {"name": "Old.load", "file": "mm.py", "line": 3, "self_user_s": 2.5, "self_user_samples": 250,
         "share_of_load": 0.5},
        {"name": "New.load", "file": "mm.py", "line": 9, "own_s": 1.0, "own_samples": 100, "own_share_of_load": 0.2,
         "self_user_s": 3.0}])
    sv = SweepResult.from_dict(doc).trials[0].payload(SamplingPayload)
    old, new = sv.user_functions
    assert (old.phase, old.own_s, old.samples, old.own_share_of_phase, old.waiting_s) == ("load", 2.5, 250, 0.5, None)
    assert (new.phase, new.own_s, new.seconds, new.own_share_of_phase) == ("load", 1.0, 3.0, 0.2)
    load = sv.phases["load"]
    assert (load.seconds, load.inclusive_s, load.unknown_state_s, load.running_s) == (0.3, 0.5, 0.3, 0.0)
    assert sv.extra["interval_s"] == 0.01  # kept, not dropped


def test_a_payload_that_does_not_read_is_one_clear_error():
    d = SweepResult.from_dict(_v2()).to_dict()
    d["trials"][0]["probes"]["io"]["storage_read_bytes"] = "lots"
    with pytest.raises(LoadprofError, match="io.storage_read_bytes: expected int") as e:
        SweepResult.from_dict(d)
    assert e.value.exit_code == 2
    d = SweepResult.from_dict(_v2()).to_dict()
    d["trials"][0]["metrics"]["membw_gb_s"] = None  # a metrics-filed payload is read strictly too
    with pytest.raises(LoadprofError, match="bandwidth.membw_gb_s"):
        SweepResult.from_dict(d)


def test_a_trial_keeps_its_strategy_typed_and_round_trips_it():
    from tests.helpers import strategy_of

    s = strategy_of({"load": {"dtype": "float16", "device_map": {"transformer": "cpu", "lm_head": "cpu"}},
                     "generate": {"max_new_tokens": 64}})
    t = _trial(strategy=s)
    again = TrialResult.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again.strategy == s and again.strategy.load.dtype == "float16"
    assert again.strategy.at("load.device_map") == {"transformer": "cpu", "lm_head": "cpu"}
    assert again.strategy.generate.max_new_tokens == 64


def test_a_strategy_that_does_not_parse_is_one_clear_error():
    d = _trial().to_dict()
    d["strategy"]["load"]["dtype"] = "float8"
    with pytest.raises(LoadprofError) as e:
        TrialResult.from_dict(d)
    assert "abc-r0" in str(e.value) and "float8" in str(e.value) and e.value.exit_code == 2
