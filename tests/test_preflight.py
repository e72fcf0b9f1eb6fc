"""Preflight: what only the disk can tell, checked before the output folder exists (exit 2, no torch, no network)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadprof.core.errors import SpecError
from loadprof.strategies.preflight import preflight
from tests.helpers import BASE, strategy_of

from .conftest import REPO


def _fails(partial, match: str) -> SpecError:
    with pytest.raises(SpecError, match=match) as e:
        preflight([strategy_of(partial)])
    assert e.value.exit_code == 2
    return e.value


def test_a_model_path_must_be_a_checkpoint_folder(tmp_path):
    _fails({"model": {"synthetic": None, "path": str(tmp_path / "nope")}}, "model.path: .* does not exist")
    (tmp_path / "f").write_text("x")
    _fails({"model": {"synthetic": None, "path": str(tmp_path / "f")}}, "is a file")
    _fails({"model": {"synthetic": None, "path": str(tmp_path)}}, "has no config.json")
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    preflight([strategy_of({"model": {"synthetic": None, "path": str(tmp_path)},
                            "generate": {"prompt_tokens": 32, "max_new_tokens": 96}})])
    _fails({"model": {"synthetic": None, "path": str(tmp_path)}, "generate": {"prompt_tokens": 32, "max_new_tokens": 97}},
           "generate.max_new_tokens: prompt_tokens \\+ max_new_tokens = 129 exceeds the model's 128 positions")


def test_token_counts_against_a_synthetic_shapes_positions():
    _fails({"generate": {"prompt_tokens": 1_000_000_000}}, "generate.prompt_tokens: 1,000,000,000 prompt tokens")
    _fails({"model": {"synthetic": {"shape": "gpt2"}}, "generate": {"max_new_tokens": 1024}}, "1,024 positions")
    preflight([strategy_of({"generate": {"prompt_tokens": 16, "max_new_tokens": 2032}})])  # tiny: 2048 positions


def test_a_hub_id_must_be_in_the_local_cache_and_the_error_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    e = _fails({"model": {"synthetic": None, "hub_id": "someorg/somemodel"}}, "not in the local Hugging Face cache")
    assert e.hint == "fetch it first where there is a network: hf download someorg/somemodel"


def test_loader_targets_are_found_and_compiled_never_run(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (tmp_path / "pkg" / "good.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass ModelManager: pass\n")
    (tmp_path / "pkg" / "bad.py").write_text("def load(:\n")

    def loader(target, sys_path=(str(tmp_path),)):
        return {"load": {"loader": {"target": target, "sys_path": list(sys_path)}}}

    preflight([strategy_of(loader("pkg.good:ModelManager.load"))])
    assert not marker.exists()  # neither the package's __init__ nor the module ran
    _fails(loader("pkg.bad:load"), "bad.py does not compile: .* at line 1")
    _fails(loader("pkg.missing:load"), "cannot find module 'pkg.missing'")
    _fails(loader("pkg.good:Other.load"), "defines no 'Other' at its top level")
    _fails(loader("pkg.good:load", sys_path=(str(tmp_path / "nope"),)), "load.loader.sys_path: .* is not a folder")


def test_the_failing_strategy_is_named_when_there_are_several(tmp_path):
    ok = strategy_of({"label": "fine"})
    bad = strategy_of({"label": "too long", "generate": {"max_new_tokens": 5000}})
    with pytest.raises(SpecError, match="strategy 'too long'"):
        preflight([ok, bad])


def test_compare_stops_before_making_the_output_folder(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {path: ./missing}\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "model.path" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert not out.exists()


def test_a_hub_revision_is_checked_in_the_cache_and_kept_with_its_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    e = _fails({"model": {"synthetic": None, "hub_id": "org/m", "revision": "v2"}}, "'org/m' at revision 'v2'")
    assert e.path == "model.revision" and e.hint.endswith("hf download org/m --revision v2")
    with pytest.raises(SpecError, match="without a hub_id"):
        strategy_of({"model": {"synthetic": {"shape": "tiny"}, "revision": "v2"}})
    from loadprof.strategies.expand import expand

    sw = expand({"model": {"hub_id": "org/m", "revision": "v2"}, "matrix": {"model": [{"synthetic": {"shape": "tiny"}},
                                                                                       {"hub_id": "org/n"}]}},
                "s.yaml", tmp_path)
    assert [(s.model.label, s.model.revision) for s in sw.strategies] == [("tiny", None), ("org/n", None)]
    pinned = expand({"model": {"hub_id": "org/m", "revision": "v2"}}, "s.yaml", tmp_path).strategies[0]
    assert pinned.model.label == "org/m@v2"
    assert strategy_of({}).id == strategy_of({"model": {**BASE["model"], "revision": None}}).id  # old ids hold
