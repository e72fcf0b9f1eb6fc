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

HERE = Path(__file__).resolve().parent / "fixtures" / "diagnosis"
DOC = yaml.safe_load((HERE / "cases.yaml").read_text())


def run_case(name: str, case: dict[str, Any], tmp: Path) -> dict[str, Any]:
    y = {"name": name, "model": DOC["model"], "base": {**case["strategy"], "timeout_s": 180}}
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
    assert len(DOC["cases"]) >= 10
    assert {"user_wait", "generate_user_code", "upcast", "ignored_kwarg", "repeated_load", "offload",
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
