"""Preflight: what only the disk can tell, checked before the output folder exists (exit 2, no torch, no network)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

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
           "generate.max_new_tokens: prompt_tokens \\+ max_new_tokens = 129 exceeds the model's 128 learned "
           "positions \\(config max_position_embeddings\\)")


def test_token_counts_against_a_synthetic_shapes_positions():
    gpt2 = {"synthetic": {"shape": "gpt2"}}
    _fails({"model": gpt2, "generate": {"prompt_tokens": 2000}}, "generate.prompt_tokens: 2,000 prompt tokens")
    _fails({"model": gpt2, "generate": {"max_new_tokens": 1024}}, "1,024 learned positions \\(config n_positions\\)")
    assert preflight([strategy_of({"generate": {"prompt_tokens": 16, "max_new_tokens": 2032}})]) == []  # 2048


def test_rotary_positions_run_past_the_limit_with_a_note_learned_ones_are_refused(tmp_path):
    """transformers runs RoPE models (qwen2, llama, mistral) past max_position_embeddings with a warning; a learned
    table (gpt2's wpe, bert's position_embeddings) has no row there: the trial would crash."""
    notes = preflight([strategy_of({"generate": {"prompt_tokens": 16, "max_new_tokens": 4096}})])  # tiny: qwen2
    assert len(notes) == 1 and "4,112 is past its 2,048 trained positions" in notes[0] and "rotary" in notes[0]
    # the architecture built decides, not the shape's origin: gpt2's numbers on llama compute their positions
    _fails({"model": {"synthetic": {"shape": "tiny-gpt2"}}, "generate": {"max_new_tokens": 1024}}, "learned positions")
    assert preflight([strategy_of({"model": {"synthetic": {"shape": "tiny-gpt2", "arch": "llama"}},
                                   "generate": {"max_new_tokens": 1024}})])
    cases = [({"model_type": "llama", "max_position_embeddings": 64}, True),
             ({"model_type": "custom", "rope_theta": 1e4, "max_position_embeddings": 64}, True),
             ({"model_type": "bert", "max_position_embeddings": 64, "position_embedding_type": "absolute"}, False),
             ({"model_type": "gpt2", "n_positions": 64}, False)]
    for i, (config, runs) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        spec = {"model": {"synthetic": None, "path": str(folder)}, "generate": {"prompt_tokens": 8, "max_new_tokens": 64}}
        if runs:
            assert "past its 64 trained positions" in preflight([strategy_of(spec)])[0], config
        else:
            _fails(spec, "72 exceeds the model's 64 learned positions")


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
    gpt2 = {"synthetic": {"shape": "tiny-gpt2"}}  # learned positions: past them is refused
    ok = strategy_of({"label": "fine", "model": gpt2})
    bad = strategy_of({"label": "too long", "model": gpt2, "generate": {"max_new_tokens": 5000}})
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


def test_a_refused_compare_announces_no_output_folder(tmp_path):
    """The "-> OUT" header comes once the folder is accepted: a folder that is not empty is refused without it."""
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {synthetic: {shape: tiny}}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    r = subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "exists and is not empty" in r.stdout + r.stderr
    assert "->" not in r.stdout + r.stderr and "trials" not in r.stdout + r.stderr


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


# ---------------------------------------------------------------- the environment (issue 23: hostile input)

def _one_line_refusal(r, code: int, *needles: str) -> str:
    """Exit ``code``, the error on one line naming each of ``needles``, no traceback."""
    subprocess_run = isinstance(r, subprocess.CompletedProcess)
    text = r.stdout + r.stderr if subprocess_run else r.output
    assert (r.returncode if subprocess_run else r.exit_code) == code, text
    assert "Traceback" not in text, text
    line = next(ln for ln in text.splitlines() if ln.startswith("error:"))
    for n in needles:
        assert n in line, (n, text)
    return line


def _compare(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadprof.cli.main", "compare", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=60, **kw)


def test_a_removed_current_folder_is_refused_in_one_line(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {synthetic: {shape: tiny}}\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    r = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m loadprof.cli.main '
                                    f'compare "{y}" --no-progress'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    _one_line_refusal(r, 2, "current folder", str(gone), "no longer exists")
    assert not (tmp_path / "loadprof-runs").exists()


def test_an_output_folder_that_cannot_be_made_is_refused_before_anything_runs(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {synthetic: {shape: tiny}}\n")
    (tmp_path / "file").write_text("x")
    r = _compare(str(y), "--out", str(tmp_path / "file" / "out"), cwd=REPO)
    assert r.returncode == 2
    _one_line_refusal(r, 2, "cannot create the output folder", str(tmp_path / "file"), "is a file, not a folder")
    assert "->" not in r.stdout + r.stderr  # never announced


def test_an_unwritable_output_parent_is_refused_through_the_cli(tmp_path, monkeypatch):
    """Root ignores a folder's mode bits, so os.access stands in for a read-only parent (a read-only mount
    answers the same way)."""
    from click.testing import CliRunner

    from loadprof.cli.main import main
    from loadprof.strategies import preflight as pf

    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {synthetic: {shape: tiny}}\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(pf.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    r = CliRunner().invoke(main, ["compare", str(y), "--out", str(locked / "run"), "--no-progress"])
    assert r.exit_code == 2, r.output
    _one_line_refusal(r, 2, str(locked / "run"), f"{locked} is not writable")
    assert not (locked / "run").exists()


def test_a_synthetic_cache_that_is_not_a_folder_is_refused_when_a_model_must_be_built(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {synthetic: {shape: tiny, seed: 987654}}\n")  # a seed nothing built
    (tmp_path / "cache").write_text("not a folder")
    env = {**os.environ, "LOADPROF_CACHE": str(tmp_path / "cache")}
    r = _compare(str(y), "--out", str(tmp_path / "out"), cwd=REPO, env=env)
    assert r.returncode == 2
    _one_line_refusal(r, 2, "cannot build synthetic model 'tiny'", str(tmp_path / "cache"), "is a file")
    assert "LOADPROF_CACHE" in r.stdout + r.stderr and not (tmp_path / "out").exists()


def test_a_hugging_face_cache_that_is_not_a_folder_is_refused(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("name: x\nmodel: {hub_id: org/model}\n")
    (tmp_path / "hf").write_text("not a folder")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf")}
    r = _compare(str(y), "--out", str(tmp_path / "out"), cwd=REPO, env=env)
    assert r.returncode == 2
    _one_line_refusal(r, 2, f"HF_HUB_CACHE={tmp_path / 'hf'} is a file, not a folder")


def test_an_io_error_while_checking_a_folder_exits_74(tmp_path, monkeypatch):
    from loadprof.core.errors import LoadprofError
    from loadprof.strategies import preflight as pf

    def eio(p, mode):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pf.os, "access", eio)
    with pytest.raises(LoadprofError, match="Input/output error") as e:
        pf.check_environment([strategy_of({})], tmp_path / "out")
    assert e.value.exit_code == 74
