"""End to end: a loader that forges an event on the pipe fails its own trial; the sweep and its report go on."""

from __future__ import annotations

import json

import pytest

from loadprof.run.session import Session
from loadprof.strategies.expand import Sweep
from loadprof.strategies.model import GenerateSpec, ModelSpec, Strategy

from .test_runner import fault_strategy


@pytest.mark.e2e
def test_a_forged_events_loader_among_three_normal_trials(tiny_model, tmp_path):
    normal = tuple(Strategy(model=ModelSpec(path=str(tiny_model)), label=f"normal-{n}",
                            generate=GenerateSpec(prompt_tokens=4, max_new_tokens=n, warmup=0)) for n in (2, 3, 4))
    sweep = Sweep(name="hostile", source="test", description="", repeat=1,
                  strategies=(*normal, fault_strategy(tiny_model, "forged", "forged_events")))
    result = Session(sweep, tmp_path / "out").run()
    by_label = {t.label: t for t in result.trials}
    assert sorted(t.status for t in result.trials) == ["failed", "ok", "ok", "ok"]
    assert by_label["forged"].reason == ("malformed event from the worker: done.t_ns must be a 64-bit integer, "
                                         "not 'soon'")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["trials"]) == 4
    assert (tmp_path / "out" / "report.md").is_file() and not (tmp_path / "out" / ".loadprof.lock").exists()
