from __future__ import annotations

from loadprof.reports import markdown
from loadprof.reports.sampled import sampled_table
from loadprof.results.model import SweepResult, TrialResult
from tests.helpers import strategy_of


def _sweep(areas):
    t = TrialResult(trial_id="a-r0", strategy_id="a", label="a", repeat_index=0, status="ok", strategy=strategy_of(),
                    probes={"sampling": {"ok": True, "areas": areas}})
    return SweepResult(run_id="r", name="n", source="s.yaml", created_at="now", trials=(t,))


def test_rows_split_running_and_waiting_and_name_the_top_areas():
    table = sampled_table(_sweep({"load": {"waiting: sleep": 4.0, "your code": 0.5, "torch ops": 0.25,
                                           "safetensors": 0.125, "python stdlib": 0.125}}))
    assert table is not None and table.rows == [
        ("a r0", "load", "5.00", "1.00", "sleep 4.00", "your code 10%, torch ops 5%, safetensors 2%")]
    assert "where the sampled time went" in markdown.render(_sweep({"generate/decode": {"torch ops": 1.0}}))


def test_no_sampling_no_table():
    assert sampled_table(_sweep({})) is None
