from __future__ import annotations

import json

import pytest

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
    with pytest.raises(LoadprofError, match="schema_version 999; this loadprof reads 1, 2") as e:
        SweepResult.from_dict(d)
    assert e.value.exit_code == 2


def test_version_1_files_load_with_the_whole_trial_peak_renamed():
    """Version 1 called both the workload peak (metrics) and the whole-trial peak (probes.memory) peak_rss_bytes."""
    v1 = _trial().to_dict()
    v1["metrics"] = {"peak_rss_bytes": 100}
    v1["probes"] = {"memory": {"metrics": {"peak_rss_bytes": 300, "peak_cuda_allocated_bytes": 7, "samples": 2},
                               "per_phase": {"load": {"peak_rss_bytes": 90}}}}
    doc = SweepResult(run_id="r", name="n", source="s", created_at="t").to_dict()
    doc.update(schema_version=1, trials=[v1])
    t = SweepResult.from_dict(doc).trials[0]
    assert t.metrics["peak_rss_bytes"] == 100  # the workload's peak keeps its name
    assert t.probes["memory"]["metrics"] == {"trial_peak_rss_bytes": 300, "trial_peak_cuda_allocated_bytes": 7,
                                             "samples": 2}
    assert t.probes["memory"]["per_phase"] == {"load": {"peak_rss_bytes": 90}}  # a phase's own peak: unchanged
    assert SweepResult.from_dict(SweepResult.from_dict(doc).to_dict()).trials[0] == t


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
