"""The sweep YAML's JSON Schema: the bundled examples validate, and schema and validator agree on bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from loadprof.core.errors import SpecError
from loadprof.strategies.expand import expand
from loadprof.strategies.schema import sweep_schema

from .conftest import REPO

jsonschema = pytest.importorskip("jsonschema")
VALIDATOR = jsonschema.Draft202012Validator(sweep_schema())
EXAMPLES = sorted((REPO / "strategies" / "examples").rglob("*.yaml"))
M = "model: {synthetic: {shape: tiny}}\n"

#: files the validator rejects for a reason the schema can see too (unknown keys, values, types, shapes)
BAD = [M + "base: {load: {dtyp: float16}}", M + "base: {load: {dtype: float64}}", M + "base: {load: {offload: gpu}}",
       M + "base: {generate: {max_new_tokens: 0}}", M + "base: {generate: {batch_size: '4'}}",
       M + "base: {generate: {cache_implementation: paged}}", M + "base: {load: {validation: 'sample:0'}}",
       M + "base: {load: {file_cache: hot}}", M + "repeat: 0", M + "repeat: true", M + "name: ''",
       M + "matrix: {load: {dtype: float16}}", M + "matrix: {load: {dtype: []}}", M + "strategies: []",
       M + "base: {load: {device_map: {'': gpu}}}", M + "base: {load: {max_memory: {gpu0: 2GiB}}}",
       M + "base: {probes: [memory, gpu]}", M + "base: {sampling_hz: 5000}", M + "base: {timeout_s: -1}",
       M + "base: {memory_limit: 1000}", M + "base: {load: {loader: {target: 'no colon'}}}",
       "model: {synthetic: {shape: gpt5}}", "model: {synthetic: {shape: tiny, dtype: auto}}",
       M + "matrix: {generate: {max_new_tokens: 'lots'}}", M + "include: {label: x}",
       M + "base: {generate: {warmup: -1}}", M + "base: {load: {attn_implementation: fast}}",
       M + "base: {load: {quantization: int3}}", M + "description: 3", M + "base: {label: 3}"]
#: what only the validator sees (a size string's value; files on disk and token counts are preflight's)
VALIDATOR_ONLY = [M + "base: {memory_limit: 1B}"]
GOOD = [M, "model: ./ckpt\n", "model: org/name\nbase: {load: {dtype: bf16, quantization: int4}}\n", M + "repeat: 3\nmatrix: {generate: {max_new_tokens: '32..256*2'}}",
        M + "base: {load: {device_map: {'': 0, lm_head: cpu}, max_memory: {0: 2GiB, cpu: 8GiB}}}",
        M + "base: {generate: false}", M + "base: {load: {loader: 'mm:Manager.load'}}",
        M + "matrix: {model: [{synthetic: {shape: tiny}}, {synthetic: {shape: gpt2}}]}",
        M + "include: [{label: a, load: {validation: full}}, {label: b, generate: {batch_size: 4}}]"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_bundled_example_validates(path):
    assert list(VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))) == []


@pytest.mark.parametrize("text", BAD)
def test_schema_and_validator_both_reject(text, tmp_path):
    with pytest.raises(SpecError):
        expand(yaml.safe_load(text), "s.yaml", tmp_path)
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))), text


@pytest.mark.parametrize("text", VALIDATOR_ONLY)
def test_what_the_schema_cannot_express_is_still_refused_by_the_validator(text, tmp_path):
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []
    with pytest.raises(SpecError):
        expand(yaml.safe_load(text), "s.yaml", tmp_path)


@pytest.mark.parametrize("text", GOOD)
def test_schema_and_validator_both_accept(text, tmp_path):
    expand(yaml.safe_load(text), "s.yaml", tmp_path)
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []


def test_the_schema_command_prints_a_valid_schema_without_torch():
    code = ("import sys; from click.testing import CliRunner; from loadprof.cli.main import main; "
            "r = CliRunner().invoke(main, ['schema']); print(r.output); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    *doc, mods = r.stdout.strip().splitlines()
    assert mods == "[]", r.stderr
    jsonschema.Draft202012Validator.check_schema(json.loads("\n".join(doc)))


def test_every_key_of_the_schema_says_what_it_means():
    """Editors show the description on hover and the YAML reference prints it: no key without one."""
    def walk(node, path):
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                assert ": " in sub.get("description", "") or path == "", f"{path}{key} has no description"
                assert sub.get("description", "").strip(), f"{path}{key} has no description"
                walk(sub, f"{path}{key}.")
            for sub in node.get("anyOf", ()):
                walk(sub, path)
            walk(node.get("items"), path)
    walk(sweep_schema(), "")
