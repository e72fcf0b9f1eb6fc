"""The diagnosis case library (tests/fixtures/diagnosis/): each case is one small loader or setting with one
culprit, most with a control (the same code without the mistake). One sweep per case runs both; the invariants
hold on a busy machine (CI runs them beside a CPU hog): the culprit is among the findings and, where the case has a
control, it is the case's top finding (the top one its control does not share), named down to the call or setting, marked a mistake and
carrying its stake; the stake is never more than what the case measurably costs over
its control; findings come in rank order; one run per configuration picks nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadprof.core import figures
from loadprof.core.conclusions import Finding
from loadprof.analysis.busy import trial_busy
from loadprof.core.payloads import MemoryPayload
from loadprof.results.model import SweepResult, TrialResult

HERE = Path(__file__).resolve().parent / "fixtures" / "diagnosis"
DOC = yaml.safe_load((HERE / "cases.yaml").read_text())


def run_case(name: str, case: dict[str, Any], tmp: Path) -> SweepResult:
    """The case's sweep; with a ``control`` (the same code without the mistake), both, labelled case/control."""
    y: dict[str, Any] = {"name": name, "model": case.get("model", DOC["model"]), "base": {"timeout_s": 180}}
    if "control" in case:
        y["include"] = [{**case["strategy"], "label": "case"}, {**case["control"], "label": "control"}]
    else:
        y["base"].update(case["strategy"])
    if "matrix" in case:
        y["matrix"] = case["matrix"]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(y))
    p = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(path), "--out", str(tmp / name),
                        "--no-progress"], cwd=HERE, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return SweepResult.from_dict(json.loads((tmp / name / "report.json").read_text()))


def test_the_library_has_the_culprits_the_product_promises():
    kinds = {k for c in DOC["cases"].values() for k in _kinds(c["expect"])}
    assert len(DOC["cases"]) >= 20 and sum("control" in c for c in DOC["cases"].values()) >= 11
    assert {"memory_culprit", "beam_search", "no_kv_cache", "user_wait", "generate_user_code", "upcast",
            "ignored_kwarg", "repeated_load", "offload", "max_new_tokens_preallocation",
            "dominant_user_function"} <= kinds


def _kinds(expect: dict[str, Any]) -> list[str]:
    """The finding kinds that name the culprit: one, or several where the machine decides between them (a copy
    that runs on the CPU here and waits on the disk there)."""
    kind = expect["kind"]
    return list(kind) if isinstance(kind, list) else [kind]


def _said(f: Finding) -> str:
    return " ".join([f.title, f.detail, json.dumps(f.evidence)])


def _measured(t: TrialResult, in_bytes: bool, generate: bool) -> float:
    """The figure a case's stake is about: the load's peak RSS, the generate call or the load."""
    if in_bytes:
        return t.payload(MemoryPayload).per_phase["load"].peak_rss_bytes
    return (figures.GENERATE_CALL_S if generate else figures.LOAD_S).read(t.metrics) or 0.0


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(DOC["cases"]))
def test_the_culprit_is_among_the_findings_with_its_stake(name: str, tmp_path: Path) -> None:
    case, expect = DOC["cases"][name], DOC["cases"][name]["expect"]
    sweep = run_case(name, case, tmp_path)
    assert all(t.status == "ok" for t in sweep.trials), [t.reason for t in sweep.trials]
    found = [(f.kind, f.label, f.title) for f in sweep.findings]
    culprits = [f for f in sweep.findings if f.kind in _kinds(expect) and all(n in _said(f) for n in expect["names"])
                and ("control" not in case or "case" in f.label)]
    assert culprits, (expect, found)
    culprit = culprits[0]
    if "control" in case:  # the top finding names it: the case's top finding that its control does not share (the
        # model's and the machine's own findings, a lazy import, a lazy load, are the control's too)
        own = [f for f in sweep.findings if "control" not in f.label.split(", ")]
        assert own and own[0] is culprit, (expect, found)
    if culprit.evidence.get("file"):  # user code is named down to its file and line
        assert Path(culprit.evidence["file"]).name == "loaders.py" and culprit.evidence["line"]
    assert culprit.mistake, culprit
    assert ((culprit.stake_s or 0) > 0 or (culprit.stake_bytes or 0) > 0
            or "nothing at stake" in culprit.stake_basis), culprit
    assert culprit.trial_ids and set(culprit.trial_ids) <= {t.trial_id for t in sweep.trials}
    keys = [f.rank_key for f in sweep.findings]  # the findings come ranked, whatever the timings were
    assert keys == sorted(keys), found
    for r in sweep.recommendations.picks:  # one run per configuration tells nothing apart
        assert r.verdict in ("only", "undecided", "none"), (r.objective, r.verdict, r.rule)
    by_label = {t.label: t for t in sweep.trials}
    quiet = not any(trial_busy(t) for t in sweep.trials)
    if "control" in case and quiet:  # never more at stake than the case measurably costs over its control; on a
        # busy machine the difference between two single runs is the neighbour's, not the case's: not compared
        in_bytes = culprit.stake_bytes is not None and culprit.stake_s is None
        generate = bool(case["strategy"].get("generate"))
        diff = _measured(by_label["case"], in_bytes, generate) - _measured(by_label["control"], in_bytes, generate)
        stake = culprit.stake_bytes if in_bytes else culprit.stake_s
        if stake:
            assert stake <= 1.5 * max(diff, 0) + (0 if in_bytes else 0.5), (stake, diff, culprit.title)
