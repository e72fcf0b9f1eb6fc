"""The diagnosis case library (tests/fixtures/diagnosis/): each case is one small loader or setting with one
culprit; the top finding of its sweep must name that culprit and carry what is at stake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadprof.core import figures

HERE = Path(__file__).resolve().parent / "fixtures" / "diagnosis"
DOC = yaml.safe_load((HERE / "cases.yaml").read_text())


def run_case(name: str, case: dict[str, Any], tmp: Path) -> dict[str, Any]:
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
                        "--no-progress"], cwd=HERE, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return json.loads((tmp / name / "report.json").read_text())


def test_the_library_has_the_culprits_the_product_promises():
    kinds = {c["expect"]["kind"] for c in DOC["cases"].values()}
    assert len(DOC["cases"]) >= 20 and sum("control" in c for c in DOC["cases"].values()) >= 11
    assert {"memory_culprit", "beam_search", "no_kv_cache", "user_wait", "generate_user_code", "upcast", "ignored_kwarg", "repeated_load", "offload",
            "max_new_tokens_preallocation", "dominant_user_function"} <= kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DOC["cases"]))
def test_top_finding_names_the_culprit(name: str, tmp_path: Path) -> None:
    case = DOC["cases"][name]
    report = run_case(name, case, tmp_path)
    assert all(t["status"] == "ok" for t in report["trials"]), [t["reason"] for t in report["trials"]]
    top = report["findings"][0]
    said = " ".join([top["title"], top["detail"], json.dumps(top["evidence"])])
    assert top["kind"] == case["expect"]["kind"], [(f["kind"], f["title"]) for f in report["findings"][:4]]
    for needle in case["expect"]["names"]:
        assert needle in said, (needle, top["title"])
    if top["evidence"].get("file"):  # user code is named down to its file and line
        assert Path(top["evidence"]["file"]).name == "loaders.py" and top["evidence"]["line"]
    assert top["mistake"] and (top["stake_s"] is not None or top["stake_bytes"] is not None
                               or "nothing at stake" in top["stake_basis"]), top


def _measured(trial: dict[str, Any], stake_bytes: bool, generate: bool) -> float:
    """The figure a case's stake is about, read off a trial: the load's peak RSS, the generate call or the load."""
    if stake_bytes:
        return trial["probes"]["memory"]["per_phase"]["load"]["peak_rss_bytes"]
    return trial["metrics"][(figures.GENERATE_CALL_S if generate else figures.LOAD_S).key]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, c in DOC["cases"].items() if "control" in c])
def test_stake_is_within_what_the_control_measures(name: str, tmp_path: Path) -> None:
    """The top finding's stake is no more than the case costs over its control (with room for a busy machine's
    noise), and not a trifle of it either."""
    case = DOC["cases"][name]
    report = run_case(name, case, tmp_path)
    by_label = {t["label"]: t for t in report["trials"]}
    top = report["findings"][0]
    assert top["kind"] == case["expect"]["kind"] and "case" in top["label"], top["title"]
    in_bytes = top["stake_bytes"] is not None and top["stake_s"] is None
    generate = bool(case["strategy"].get("generate"))
    diff = _measured(by_label["case"], in_bytes, generate) - _measured(by_label["control"], in_bytes, generate)
    stake = top["stake_bytes"] if in_bytes else top["stake_s"]
    assert diff > 0 and 0.3 * diff <= stake <= 1.5 * diff + (0 if in_bytes else 0.2), (stake, diff, top["title"])
