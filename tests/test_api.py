"""The Python API: ``import loadprof`` stays light, ``loadprof.compare`` runs a real sweep, frames and read-back."""

from __future__ import annotations

import subprocess
import sys

import pytest

import loadprof
from loadprof.core.errors import LoadprofError, SpecError
from loadprof.core.phases import PhaseTiming
from loadprof.results.model import SweepResult, TrialResult
from tests.helpers import strategy_of

from .conftest import REPO

pd = pytest.importorskip("pandas")


def _sweep() -> SweepResult:
    load = PhaseTiming("load", 0.0, 2.0, (PhaseTiming("config", 0.0, 0.5), PhaseTiming("weights", 0.5, 1.5)))
    t = TrialResult(trial_id="a-r0", strategy_id="a", label="fp16", repeat_index=0, status="ok",
                    strategy=strategy_of({"load": {"dtype": "float16"}}), wall_s=3.0, phases=(load,),
                    metrics={"load_s": 2.0, "ttft_ms": 12.5, "estimate": {"x": 1}, "bytes_by_device": {"cpu": 1}})
    bad = TrialResult(trial_id="b-r0", strategy_id="b", label="dict map", repeat_index=0, status="crashed",
                      strategy=strategy_of({"load": {"device_map": {"": "cpu"}}}), reason="SIGSEGV during load")
    return SweepResult(run_id="r", name="n", source="s.yaml", created_at="", trials=(t, bad))


def test_to_pandas_is_one_row_per_trial_with_knobs_and_scalar_metrics():
    df = _sweep().to_pandas()
    assert list(df["trial_id"]) == ["a-r0", "b-r0"] and list(df["status"]) == ["ok", "crashed"]
    assert df.loc[0, "load.dtype"] == "float16" and df.loc[1, "load.device_map"] == "custom"
    assert df.loc[0, "ttft_ms"] == 12.5 and "estimate" not in df.columns and "bytes_by_device" not in df.columns
    assert df.loc[1, "reason"] == "SIGSEGV during load"


def test_phases_frame_is_one_row_per_phase_with_paths_and_uncovered_time():
    df = _sweep().phases_frame()
    assert list(df["phase"]) == ["load", "load/config", "load/weights"] and list(df["depth"]) == [0, 1, 1]
    assert df.loc[0, "duration_s"] == 2.0 and df.loc[0, "other_s"] == 0.5
    assert list(SweepResult(run_id="r", name="n", source="", created_at="").phases_frame().columns)[:5] == [
        "trial_id", "label", "repeat_index", "status", "phase"]


def test_import_loadprof_stays_light_and_exposes_the_api():
    code = "import loadprof, sys; print(callable(loadprof.compare), 'torch' in sys.modules, 'pandas' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.split() == ["True", "False", "False"], r.stderr
    with pytest.raises(AttributeError):
        loadprof.no_such_thing  # noqa: B018


def test_bad_input_raises_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match="load.dtyp"):
        loadprof.compare({"model": {"synthetic": {"shape": "tiny"}}, "base": {"load": {"dtyp": "x"}}},
                         out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(LoadprofError, match="not found"):
        loadprof.load_report(tmp_path / "nothing")


@pytest.mark.e2e
def test_compare_runs_a_sweep_from_a_dict_and_reads_it_back(tmp_path, tiny_model):
    seen = []
    sweep = loadprof.compare({"name": "api", "model": {"path": str(tiny_model)},
                              "base": {"generate": {"prompt_tokens": 8, "max_new_tokens": 4}, "timeout_s": 120},
                              "matrix": {"load": {"dtype": ["float32", "bfloat16"]}}},
                             out=tmp_path / "run", on_trial=lambda r, i, n: seen.append((r.status, n)))
    assert [s for s, _ in seen] == ["ok", "ok"] and seen[0][1] == 2
    df = sweep.to_pandas()
    assert sorted(df["load.dtype"]) == ["bfloat16", "float32"] and (df["load_s"] > 0).all()
    assert (tmp_path / "run" / "report.html").exists()
    back = loadprof.load_report(tmp_path / "run")
    assert [t.trial_id for t in back.trials] == [t.trial_id for t in sweep.trials]
    assert back.recommendations.get("load") is not None
