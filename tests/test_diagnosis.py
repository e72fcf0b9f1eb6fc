"""The diagnosis case library (tests/fixtures/diagnosis/): each case is one small loader or setting with one
culprit; its sweep's findings must name that culprit, as a mistake, with what is at stake.

Invariants only, so they hold on a busy machine (CI runs this file beside one busy loop per core): the
culprit is *among* the findings, not necessarily first (which of two timed mistakes ranks higher depends on the
machine), the findings come in their rank order, and nothing is recommended from single runs (noise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadprof.core.conclusions import Finding
from loadprof.results.model import SweepResult

HERE = Path(__file__).resolve().parent / "fixtures" / "diagnosis"
DOC = yaml.safe_load((HERE / "cases.yaml").read_text())


def run_case(name: str, case: dict[str, Any], tmp: Path) -> SweepResult:
    y = {"name": name, "model": DOC["model"], "base": {**case["strategy"], "timeout_s": 180}}
    if "matrix" in case:
        y["matrix"] = case["matrix"]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(y))
    p = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(path), "--out", str(tmp / name),
                        "--no-progress"], cwd=HERE, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return SweepResult.from_dict(json.loads((tmp / name / "report.json").read_text()))


def test_the_library_has_the_culprits_the_product_promises():
    kinds = {c["expect"]["kind"] for c in DOC["cases"].values()}
    assert len(DOC["cases"]) >= 10
    assert {"user_wait", "generate_user_code", "upcast", "ignored_kwarg", "repeated_load", "offload",
            "max_new_tokens_preallocation", "dominant_user_function"} <= kinds


def _said(f: Finding) -> str:
    return " ".join([f.title, f.detail, json.dumps(f.evidence)])


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(DOC["cases"]))
def test_the_culprit_is_among_the_findings_with_its_stake(name: str, tmp_path: Path) -> None:
    case, expect = DOC["cases"][name], DOC["cases"][name]["expect"]
    sweep = run_case(name, case, tmp_path)
    assert all(t.status == "ok" for t in sweep.trials), [t.reason for t in sweep.trials]
    found = [(f.kind, f.title) for f in sweep.findings]
    culprits = [f for f in sweep.findings if f.kind == expect["kind"] and all(n in _said(f) for n in expect["names"])]
    assert culprits, (expect, found)
    (culprit,) = culprits  # one diagnosis per subject: repeats and strategies are merged into one finding
    if culprit.evidence.get("file"):  # user code is named down to its file and line
        assert Path(culprit.evidence["file"]).name == "loaders.py" and culprit.evidence["line"]
    assert culprit.mistake, culprit
    assert ((culprit.stake_s or 0) > 0 or (culprit.stake_bytes or 0) > 0
            or "nothing at stake" in culprit.stake_basis), culprit
    assert culprit.trial_ids and set(culprit.trial_ids) <= {t.trial_id for t in sweep.trials}
    # ordering: the findings come ranked (mistakes first, then severity, then stake), whatever the timings were
    keys = [f.rank_key for f in sweep.findings]
    assert keys == sorted(keys), found
    # one run per configuration tells nothing apart: no pick and no tie, only "only" or "undecided"
    for r in sweep.recommendations.picks:
        assert r.verdict in ("only", "undecided", "none"), (r.objective, r.verdict, r.rule)
        assert r.verdict != "undecided" or r.label is None
