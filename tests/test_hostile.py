"""What a trial or the environment does cannot take loadprof down: a loader that forges an event on the pipe fails
its own trial while the sweep and its report go on (end to end); a closed stdout is one line and exit 74."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadprof.run.session import Session
from loadprof.strategies.expand import Sweep
from loadprof.strategies.model import GenerateSpec, ModelSpec, Strategy

from .conftest import EXAMPLES
from .test_runner import fault_strategy


@pytest.mark.e2e
def test_a_forged_events_loader_among_three_normal_trials(tiny_model, tmp_path):
    normal = tuple(Strategy(model=ModelSpec(path=str(tiny_model)), label=f"normal-{n}",
                            generate=GenerateSpec(prompt_tokens=4, max_new_tokens=n, warmup=0)) for n in (2, 3, 4))
    sweep = Sweep(name="hostile", source="test", description="", repeat=1,
                  strategies=(*normal, fault_strategy(tiny_model, "forged", "forged_events", isolation="fresh")))
    result = Session(sweep, tmp_path / "out").run()
    by_label = {t.label: t for t in result.trials}
    assert sorted(t.status for t in result.trials) == ["failed", "ok", "ok", "ok"]
    assert by_label["forged"].reason == ("malformed event from the worker: done.t_ns must be a 64-bit integer, "
                                         "not 'soon'")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["trials"]) == 4
    assert (tmp_path / "out" / "report.md").is_file() and not (tmp_path / "out" / ".loadprof.lock").exists()


def test_a_closed_stdout_is_one_line_and_exit_74():
    cmd = f'"{sys.executable}" -m loadprof.cli.main expand "{EXAMPLES / "quickstart.yaml"}" >&-'
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 74 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: stdout is closed")
