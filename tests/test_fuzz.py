"""A fuzz suite of hostile sweep files: every one is answered by a clean SpecError (exit 2) or a valid sweep,
never a traceback or a hang, and without importing torch.

The cases are generated: every key the YAML accepts gets every hostile value (wrong types, huge numbers, NaN,
markup, path escapes, control characters, deep lists...), plus structural attacks on the file as a whole (alias
bombs, nesting, duplicate keys, invalid UTF-8, several documents, huge files). Run in-process through the same
functions ``loadprof compare`` calls before anything runs (``load_sweep`` then ``preflight``), then a sample
through the real CLI's ``expand`` to check what the user sees.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadprof.core.errors import SpecError
from loadprof.strategies.expand import load_sweep
from loadprof.strategies.preflight import preflight

from .conftest import REPO

MODEL = "model: {synthetic: {shape: tiny}}\n"
#: every path a strategy YAML accepts under base (the key lists come from the dataclasses)
PATHS = ("label", "timeout_s", "memory_limit", "probes", "sampling_hz",
         "model.synthetic.shape", "model.synthetic.arch", "model.synthetic.dtype", "model.synthetic.seed",
         "model.synthetic.max_shard_size", "load.device_map", "load.dtype", "load.quantization", "load.offload",
         "load.max_memory", "load.offload_folder", "load.attn_implementation", "load.low_cpu_mem_usage",
         "load.validation", "load.file_cache", "load.extra_kwargs", "load.loader.target", "load.loader.kwargs",
         "load.loader.sys_path", "load.loader.model_arg", "generate.prompt_tokens", "generate.max_new_tokens",
         "generate.batch_size", "generate.cache_implementation", "generate.stop_after", "generate.warmup",
         "generate.repeats", "generate.stop_at_eos")
#: values no sane sweep holds, as YAML flow text
HOSTILE = ("null", "true", "-1", "0", "1e309", "-.inf", ".nan", "18446744073709551617", "''", "'[/bold]x[red'",
           "'../../../../etc'", "'/abs/olute'", "'\\0\\x07\\e'", "[]", "{}", "[[[[[[[[[[1]]]]]]]]]]",
           "{a: {b: {c: {d: 1}}}}", "2026-11-27", "!!binary aGVsbG8=", "!!set {a, b}", "'1..1000000000'",
           "'x%s'" % ("y" * 5000), "{'': gpu}", "{gpu0: 2GiB}", "'cuda:-1'", "'auto; rm -rf /'")
#: whole files that attack the parser or the shape of the document
STRUCTURAL = {
    "top-level list": "- a\n- b\n",
    "top-level scalar": "just text\n",
    "only comments": "# nothing\n",
    "two documents": MODEL + "---\n" + MODEL,
    "tab indentation": "model:\n\tsynthetic: {shape: tiny}\n",
    "unclosed flow": MODEL + "base: {load: {dtype: float16}\n",
    "duplicate top key": MODEL + MODEL,
    "duplicate nested key": "model: {synthetic: {shape: tiny, shape: gpt2}}\n",
    "alias bomb in description": "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 8)}]\n" for i in range(1, 9)) + MODEL,
    "deep brackets": MODEL + "description: " + "[" * 20000 + "\n",
    "deep mappings": MODEL + "base: " + "{a: " * 500 + "1" + "}" * 500 + "\n",
    "repeat huge": MODEL + "repeat: 1000000000000\n",
    "repeat times matrix": MODEL + "repeat: 90000\nmatrix: {generate: {max_new_tokens: [1, 2]}}\n",
    "matrix range huge": MODEL + "matrix: {generate: {max_new_tokens: '1..100000000'}}\n",
    "matrix product huge": MODEL + "matrix: {generate: {max_new_tokens: '1..1000', prompt_tokens: '1..1000'}}\n",
    "python tag": MODEL + "label: !!python/object/apply:os.system ['true']\n",
    "unknown top key": MODEL + "strategies: []\n",
    "matrix of scalars": MODEL + "matrix: 3\n",
    "include not a list": MODEL + "include: {label: x}\n",
    "exclude everything": MODEL + "matrix: {load: {dtype: [float16]}}\nexclude: [{}]\n",
    "model both places": MODEL + "base: {" + MODEL.strip() + "}\n",
    "no model": "name: x\n",
    "empty file": "",
    "null document": "~\n",
    "huge file": MODEL + "description: '" + "x" * (300 * 1024) + "'\n",
    "bom": "\ufeff" + MODEL,
    "missing path": "model: {path: ./nowhere}\n",
    "hub id uncached": "model: {hub_id: someorg/somemodel}\n",
    "hub id garbage": "model: {hub_id: '../../../etc/passwd'}\n",
    "loader missing module": MODEL + "base: {load: {loader: {target: 'no_such_mod_xyz:load'}}}\n",
    "loader bad target": MODEL + "base: {load: {loader: {target: 'os.system(1)'}}}\n",
    "tokens past positions": ("model: {synthetic: {shape: tiny-gpt2}}\n"  # learned positions: refused (RoPE: a note)
                              "base: {generate: {prompt_tokens: 1000, max_new_tokens: 100}}\n"),
    "memory limit tiny": MODEL + "memory_limit: 1B\n",
}


def _cases() -> list[tuple[str, bytes]]:
    out = [(f"{path}={value[:24]}", (MODEL + _nest(path, value)).encode()) for path in PATHS for value in HOSTILE]
    out += [(name, text.encode("utf-8")) for name, text in STRUCTURAL.items()]
    out += [("invalid utf-8", MODEL.encode() + b"description: \xff\xfe\x80\n"),
            ("nul bytes", MODEL.encode() + b"label: a\x00b\n")]
    return out


def _nest(path: str, value: str) -> str:
    """``base: {load: {dtype: VALUE}}`` for ``load.dtype``; top-level strategy keys go under base too."""
    text = value
    for part in reversed(path.split(".")):
        text = f"{{{part}: {text}}}"
    return f"base: {text}\n"


CASES = _cases()


def test_the_generator_makes_at_least_200_cases():
    assert len(CASES) >= 200 and len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, data", CASES, ids=[n for n, _ in CASES])
def test_hostile_sweep_is_a_clean_spec_error_or_a_valid_sweep(tmp_path, name, data):
    y = tmp_path / "s.yaml"
    y.write_bytes(data)
    t0 = time.monotonic()
    try:
        sweep = load_sweep(y)
        preflight(sweep.strategies)
    except SpecError as e:
        assert e.exit_code == 2 and str(e).strip() and len(str(e).splitlines()[0]) < 2000
    assert time.monotonic() - t0 < 2.0


def test_structural_attacks_are_all_refused(tmp_path):
    accepted = []
    for name, text in STRUCTURAL.items():
        y = tmp_path / "s.yaml"
        y.write_text(text, encoding="utf-8")
        try:
            preflight(load_sweep(y).strategies)
            accepted.append(name)
        except SpecError:
            pass
    assert accepted == ["bom"]  # a byte-order mark is legal YAML


@pytest.mark.parametrize("name, data", CASES, ids=[n for n, _ in CASES])
def test_what_the_user_sees_from_expand(tmp_path, name, data):
    """Through the real command: exit 0 or 2, one error line (and a hint), no traceback, user text never read
    as markup."""
    from loadprof.cli.main import main

    y = tmp_path / "s.yaml"
    y.write_bytes(data)
    r = CliRunner().invoke(main, ["expand", str(y)], catch_exceptions=True)
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    if r.exit_code == 2:
        assert r.output.startswith("error: ") and len(r.output.splitlines()) <= 2  # the line and its hint


def test_the_suite_never_imports_torch():
    code = ("import sys; from tests.test_fuzz import CASES; import tempfile, pathlib; "
            "from loadprof.strategies.expand import load_sweep; from loadprof.strategies.preflight import preflight\n"
            "d = pathlib.Path(tempfile.mkdtemp())\n"
            "for n, b in CASES:\n"
            "    p = d / 's.yaml'; p.write_bytes(b)\n"
            "    try: preflight(load_sweep(p).strategies)\n"
            "    except Exception: pass\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stderr


def test_paths_in_the_fixture_folder_are_untouched(tmp_path):
    """Nothing a hostile sweep says is written anywhere by validation: the folder holds only the YAML."""
    for name, data in CASES[:40]:
        y = tmp_path / "s.yaml"
        y.write_bytes(data)
        try:
            preflight(load_sweep(y).strategies)
        except SpecError:
            pass
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["s.yaml"]
