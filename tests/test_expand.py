"""loadprof.strategies.expand: YAML sweep -> validated frozen strategies (exact paths, messages, order, labels)."""

from __future__ import annotations

import dataclasses
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loadprof.core.errors import SpecError
from loadprof.strategies import expand as ex
from loadprof.strategies.expand import Sweep, expand, load_sweep, parse_range
from loadprof.strategies.model import (ATTN_IMPLEMENTATIONS, DEVICE_MAPS, DTYPES, FILE_CACHES, GENERATE_KEYS, LOAD_KEYS,
                              LOADER_KEYS, MODEL_KEYS, OFFLOADS, QUANTIZATIONS, STRATEGY_KEYS, SYNTHETIC_KEYS, Strategy)

FIXTURES = Path(__file__).parent / "fixtures" / "yaml"
REPO = Path(__file__).resolve().parents[1]
MODEL = "model: {synthetic: {shape: tiny}}\n"


def run(text: str, **kw) -> Sweep:
    return expand(yaml.safe_load(text), **kw)


def fail(text: str, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        run(text, **kw)
    assert info.value.exit_code == 2
    return info.value


def labels(sweep: Sweep) -> list[str]:
    return [s.label for s in sweep.strategies]


# ---------------------------------------------------------------- parse_range

@pytest.mark.parametrize("text, want", [
    ("32..4096*2", (32, 64, 128, 256, 512, 1024, 2048, 4096)),
    ("1..8+1", tuple(range(1, 9))),
    ("1..8", tuple(range(1, 9))),
    ("1..8+3", (1, 4, 7)),
    ("3..100*3", (3, 9, 27, 81)),
    (" 5 .. 5 ", (5,)),
    ("0..2", (0, 1, 2)),
])
def test_parse_range(text, want):
    assert parse_range(text) == want


@pytest.mark.parametrize("text, why", [
    ("abc", "invalid range 'abc'"), ("8..1", "start 8 > end 1"), ("1..8*1", "factor must be >= 2"),
    ("0..8*2", "must start at >= 1"), ("1..8+0", "step must be >= 1"), ("-1..8", "invalid range '-1..8'"),
    ("1..99999999", "more than 10000 values"), (12, "invalid range 12"), ("1...8", "invalid range '1...8'"),
])
def test_parse_range_errors_name_the_text(text, why):
    with pytest.raises(SpecError) as info:
        parse_range(text, path="matrix.generate.batch_size")
    assert why in str(info.value)
    assert info.value.path == "matrix.generate.batch_size"
    assert "32..4096*2" in info.value.hint


# ---------------------------------------------------------------- unknown keys

def test_acceptance_dtyp_under_load_fails_with_exit_code_2_naming_dtype():
    with pytest.raises(SpecError) as info:
        load_sweep(FIXTURES / "typo_dtyp.yaml")
    err = info.value
    assert err.exit_code == 2
    assert err.path == "base.load.dtyp"
    assert "did you mean 'dtype'?" in str(err)
    assert str(err).startswith("base.load.dtyp: unknown key 'dtyp'; did you mean 'dtype'?")


@pytest.mark.parametrize("text, path, msg", [
    ("nmae: x\n" + MODEL, "nmae", "unknown key 'nmae'; did you mean 'name'?"),
    (MODEL + "base: {timeout: 5}", "base.timeout", "did you mean 'timeout_s'?"),
    ("model: {synthetic: {shape: tiny}, trust_remote: true}", "model.trust_remote",
     "did you mean 'trust_remote_code'?"),
    ("model: {synthetic: {shap: tiny}}", "model.synthetic.shap", "did you mean 'shape'?"),
    ("base: {model: {hubid: x}}", "base.model.hubid", "did you mean 'hub_id'?"),
    (MODEL + "base: {load: {loader: {targt: 'a:b'}}}", "base.load.loader.targt", "did you mean 'target'?"),
    (MODEL + "base: {generate: {max_new_token: 3}}", "base.generate.max_new_token", "did you mean 'max_new_tokens'?"),
    (MODEL + "matrix: {load: {dtyp: [float16]}}", "matrix.load.dtyp", "unknown key 'dtyp'; did you mean 'dtype'?"),
    (MODEL + "matrix: {timeout: [1]}", "matrix.timeout", "did you mean 'timeout_s'?"),
    (MODEL + "matrix: {model: [{synthetc: {}}]}", "matrix.model[0].synthetc", "did you mean 'synthetic'?"),
    (MODEL + "matrix: {generate: {batch_sise: [1]}}", "matrix.generate.batch_sise", "did you mean 'batch_size'?"),
    (MODEL + "include: [{label: a}, {generate: {max_new_token: 3}}]", "include[1].generate.max_new_token",
     "unknown key 'max_new_token'; did you mean 'max_new_tokens'?"),
    (MODEL + "exclude: [{load: {quantisation: none}}]", "exclude[0].load.quantisation", "did you mean 'quantization'?"),
    ("eiclude: []\n" + MODEL, "eiclude", "did you mean 'include' or 'exclude'?"),
])
def test_unknown_keys_name_the_yaml_path_and_the_nearest_key(text, path, msg):
    err = fail(text)
    assert err.path == path
    assert msg in err.message
    assert err.message == f"{path}: {err.message.split(': ', 1)[1]}"


def test_unknown_key_without_close_match_lists_valid_keys():
    err = fail(MODEL + "base: {load: {zzzzzz: 1}}")
    assert err.path == "base.load.zzzzzz"
    assert err.message == "base.load.zzzzzz: unknown key 'zzzzzz'; valid keys: " + ", ".join(LOAD_KEYS)
    assert "did you mean" not in str(err)


def test_valid_keys_come_from_model_tuples():
    assert ex._SECTIONS["load"][1] is LOAD_KEYS
    assert ex._SECTIONS["generate"][1] is GENERATE_KEYS
    assert ex._SECTIONS["load.loader"][1] is LOADER_KEYS
    assert ex.MATRIX_KEYS == tuple(k for k in STRATEGY_KEYS if k != "label")


def test_every_leaf_annotation_is_type_checked():
    """A new field with an annotation expand cannot check would silently skip type checks: fail here instead."""
    for canon, ann in ex._LEAVES.items():
        assert all(p.strip() in ex._KINDS for p in ann.split("|")), (canon, ann)


def test_relative_base_dir_still_gives_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("model: {path: ckpt}", base_dir=Path("sub")).strategies[0].model.path == str(tmp_path / "sub" / "ckpt")


def test_strategy_field_at_top_level_points_to_base():
    err = fail(MODEL + "load: {dtype: float16}")
    assert err.path == "load"
    assert "strategy fields go under base:" in err.message


def test_non_string_key_is_an_unknown_key():
    err = expand_err({"model": {"hub_id": "x"}, "base": {1: 2}})
    assert err.path == "base.1" and "unknown key '1'" in err.message


def expand_err(doc) -> SpecError:
    with pytest.raises(SpecError) as info:
        expand(doc)
    return info.value


# ---------------------------------------------------------------- bad values

@pytest.mark.parametrize("text, path, msg", [
    (MODEL + "matrix: {load: {dtype: [float32, float8]}}", "matrix.load.dtype[1]",
     "invalid load.dtype 'float8'; allowed: auto, float32, float16, bfloat16"),
    (MODEL + "base: {generate: {max_new_tokens: abc}}", "base.generate.max_new_tokens",
     "expected an integer, got 'abc'"),
    (MODEL + "base: {generate: {max_new_tokens: 0}}", "base.generate.max_new_tokens", "must be an integer >= 1, got 0"),
    (MODEL + "base: {load: [1, 2]}", "base.load", "expected a mapping, got [1, 2]"),
    ("base: []", "base", "expected a mapping, got []"),
    ("model: 3", "model", "expected a mapping, got 3"),
    (MODEL + "base: {load: {offload: cpu}}", "base.load.offload", "offload: cpu needs max_memory"),
    (MODEL + "matrix: {load: {max_memory: [{0: 1GiB}, {0: -3}]}}", "matrix.load.max_memory[1].0",
     "size must be >= 0, got -3"),
    ("model: {synthetic: {dtype: auto}}", "model.synthetic.dtype", "allowed: float32, float16, bfloat16"),
    ("matrix: {model: [{synthetic: {}}, {synthetic: {dtype: auto}}]}", "matrix.model[1].synthetic.dtype", "'auto'"),
    ("model: {hub_id: x, path: y}", "model", "give exactly one of synthetic, path, hub_id"),
    (MODEL + "base: {memory_limit: -1GiB}", "base.memory_limit", "expected a size like '2GiB'"),
    (MODEL + "base: {sampling_hz: true}", "base.sampling_hz", "expected an integer or null, got True"),
    (MODEL + "base: {sampling_hz: 5000}", "base.sampling_hz", "0..1000"),
    (MODEL + "base: {probes: memory}", "base.probes", "expected a list of strings, got 'memory'"),
    (MODEL + "base: {timeout_s: '60'}", "base.timeout_s", "expected a number, got '60'"),
    (MODEL + "include: [{timeout_s: -1}]", "include[0].timeout_s", "must be a number of seconds > 0"),
    (MODEL + "base: {load: {device_map: [cpu]}}", "base.load.device_map", "expected a string or a mapping"),
    (MODEL + "base: {load: {loader: 'not a target'}}", "base.load.loader", "expected 'pkg.module:callable'"),
    (MODEL + "base: {load: {loader: {target: 'not a target'}}}", "base.load.loader.target", "'not a target'"),
    (MODEL + "base: {load: {loader: {kwargs: {a: 1}}}}", "base.load.loader", "a loader needs a target"),
    (MODEL + "base: {load: {loader: {target: 'a:b', kwargs: [1]}}}", "base.load.loader.kwargs", "expected a mapping"),
    (MODEL + "base: {load: {validation: 'sample:0'}}", "base.load.validation", "sample:K (K >= 1)"),
    (MODEL + "base: {load: {quantization: 3bit}}", "base.load.quantization", ", ".join(QUANTIZATIONS)),
    (MODEL + "matrix: {generate: [false, {max_new_tokens: abc}]}", "matrix.generate[1].max_new_tokens", "'abc'"),
    (MODEL + "base: {generate: 3}", "base.generate", "expected a mapping, got 3"),
    ("base: {label: x}", "base.model", "no model given"),
    ("include: [{label: x}]", "include[0].model", "no model given"),
    (MODEL + "repeat: 0", "repeat", "expected an integer in 1..100000, got 0"),
    (MODEL + "repeat: true", "repeat", "expected an integer in 1..100000"),
    (MODEL + "repeat: 1000000000000", "repeat", "expected an integer in 1..100000, got 1000000000000"),
    (MODEL + "name: [a]", "name", "expected a non-empty string"),
    (MODEL + "description: 3", "description", "expected a string"),
    (MODEL + "include: {label: x}", "include", "expected a list of partial strategies"),
    (MODEL + "include: {}", "include", "expected a list of partial strategies"),
    (MODEL + "exclude: [{}]", "exclude[0]", "empty exclude entry"),
    (MODEL + "matrix: [1]", "matrix", "expected a mapping"),
    ("model: {hub_id: x}\nbase: {model: {hub_id: y}}", "model", "both at the top level and under base"),
])
def test_bad_values_name_where_they_were_written(text, path, msg):
    err = fail(text)
    assert err.path == path, str(err)
    assert msg in err.message, str(err)


def test_document_not_a_mapping_and_empty():
    assert "expected a mapping at the top level, got list" in str(expand_err([1, 2]))
    assert "is empty" in str(expand_err(None))
    with pytest.raises(SpecError, match="empty.yaml is empty"):
        load_sweep(FIXTURES / "empty.yaml")


def test_yaml_syntax_error_has_line_and_column():
    with pytest.raises(SpecError) as info:
        load_sweep(FIXTURES / "broken_syntax.yaml")
    assert info.value.exit_code == 2
    assert "invalid YAML in" in str(info.value) and "line 4, column 1" in str(info.value)


def test_yaml_constructor_value_error_is_a_spec_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {hub_id: x}\ndescription: 2024-02-30\n")
    with pytest.raises(SpecError, match="day is out of range"):
        load_sweep(tmp_path / "bad.yaml")


def test_missing_file_and_unsafe_tags(tmp_path):
    with pytest.raises(SpecError, match="no such sweep file") as info:
        load_sweep(tmp_path / "nope.yaml")
    assert info.value.exit_code == 2
    (tmp_path / "evil.yaml").write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="line 1, column 8"):
        load_sweep(tmp_path / "evil.yaml")


# ---------------------------------------------------------------- matrix leaves

def test_matrix_scalar_leaf_must_be_a_list_with_hint():
    err = fail(MODEL + "matrix: {load: {dtype: float16}}")
    assert err.path == "matrix.load.dtype"
    assert err.message == "matrix.load.dtype: matrix values must be lists, got 'float16'"
    assert err.hint == "write [float16]"
    err = fail(MODEL + "matrix: {generate: {batch_size: 4}}")
    assert err.hint == "write [4] or a range like 32..4096*2"
    err = fail(MODEL + "matrix: {load: {device_map: {'': 0}}}")
    assert err.path == "matrix.load.device_map" and err.hint == "write [{'': 0}]"
    err = fail(MODEL + "matrix: {timeout_s: '1..8'}")
    assert err.path == "matrix.timeout_s" and "ranges work only for integer knobs" in err.hint
    assert fail(MODEL + "matrix: {generate: {batch_size: abc}}").path == "matrix.generate.batch_size"
    assert fail(MODEL + "matrix: {memory_limit: '1..3'}").hint == "write [1..3]; ranges work only for integer knobs"


def test_matrix_empty_list():
    err = fail(MODEL + "matrix: {load: {dtype: []}}")
    assert err.path == "matrix.load.dtype" and "empty list" in err.message


def test_matrix_mapping_valued_knobs_take_lists_of_mappings():
    sw = run(MODEL + "matrix: {load: {device_map: [auto, {'': 0}, {model.layers: cpu, lm_head: 0}], "
                     "max_memory: [{0: 1GiB, cpu: 30GiB}]}}")
    assert [s.load.device_map for s in sw.strategies] == [
        "auto", (("", 0),), (("lm_head", 0), ("model.layers", "cpu"))]
    assert labels(sw) == ["device_map=auto", "device_map=custom", "device_map=custom"]
    assert sw.strategies[0].load.max_memory == (("0", "1GiB"), ("cpu", "30GiB"))


def test_matrix_ranges_and_nested_sections():
    sw = run(MODEL + "matrix: {generate: {max_new_tokens: '32..256*2'}, model: {synthetic: {seed: '1..2'}}}")
    assert [(s.model.synthetic.seed, s.generate.max_new_tokens) for s in sw.strategies] == [
        (1, 32), (1, 64), (1, 128), (1, 256), (2, 32), (2, 64), (2, 128), (2, 256)]
    assert sw.strategies[0].label == "seed=1 max_new_tokens=32"


def test_matrix_range_producing_invalid_value_names_the_leaf():
    err = fail(MODEL + "matrix: {generate: {max_new_tokens: '0..4*2'}}")
    assert "must start at >= 1" in err.message
    err = fail(MODEL + "matrix: {generate: {max_new_tokens: '0..4'}}")
    assert err.path == "matrix.generate.max_new_tokens" and "got 0" in err.message


def test_matrix_point_cap(monkeypatch):
    monkeypatch.setattr(ex, "MAX_POINTS", 3)
    assert fail(MODEL + "matrix: {load: {dtype: [auto, float32]}, timeout_s: [1, 2]}").path == "matrix"


# ---------------------------------------------------------------- loaders, paths, generate

def test_loader_string_shorthand_and_mapping(tmp_path):
    sw = run(MODEL + "include: [{load: {loader: 'pkg.mod:fn'}}, {load: {loader: {target: 'm:C.load', "
                     "kwargs: {x: 1}, init_kwargs: {y: [1, 2]}, sys_path: [., src], model_arg: path}}}]",
             base_dir=tmp_path)
    a, b = (s.load.loader for s in sw.strategies)
    assert (a.target, a.kwargs, a.sys_path, a.model_arg) == ("pkg.mod:fn", (), (), "model_path")
    assert b.kwargs == (("x", 1),) and b.init_kwargs == (("y", (1, 2)),) and b.model_arg == "path"
    assert b.sys_path == (str(tmp_path), str(tmp_path / "src"))
    assert labels(sw) == ["loader=pkg.mod:fn", "loader=m:C.load"]


def test_loader_null_goes_back_to_builtin():
    sw = run(MODEL + "base: {load: {loader: 'a:b'}}\ninclude: [{label: hf, load: {loader: null}}, {label: mine}]")
    assert [s.load.loader for s in sw.strategies][0] is None
    assert sw.strategies[1].load.loader.target == "a:b"


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sw = load_sweep(Path(os.path.relpath(FIXTURES / "relative_paths.yaml", tmp_path)))
    (s,) = sw.strategies
    assert s.model.path == str(FIXTURES / "ckpt")
    assert s.load.offload_folder == str(FIXTURES / "offload")
    assert s.load.loader.sys_path == (str(FIXTURES), str(FIXTURES.parent / "src"))
    assert (sw.name, sw.description, sw.repeat) == ("relative_paths", "paths", 3)
    assert s.label == str(FIXTURES / "ckpt")


def test_in_memory_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("model: {path: ~/x}").strategies[0].model.path == os.path.expanduser("~/x")
    assert run("model: {path: ckpt}").strategies[0].model.path == str(tmp_path / "ckpt")


@pytest.mark.parametrize("value", ["false", "null", "", "~"])
def test_generate_false_or_null_means_no_generation(value):
    sw = run(MODEL + f"base: {{generate: {value}}}\ninclude: [{{label: a}}, {{label: b, generate: {{batch_size: 2}}}}]")
    assert sw.strategies[0].generate is None
    assert sw.strategies[1].generate.batch_size == 2 and sw.strategies[1].generate.max_new_tokens == 32


def test_generate_as_matrix_list_of_partials():
    sw = run(MODEL + "matrix: {generate: [false, {max_new_tokens: 8}, true]}")
    assert [s.generate and s.generate.max_new_tokens for s in sw.strategies] == [None, 8, 32]
    assert labels(sw) == ["generate=off", "max_new_tokens=8", "generate=on"]


def test_matrix_lists_of_load_and_loader_partials():
    sw = run(MODEL + "matrix: {load: [{dtype: float16}, {dtype: auto, device_map: auto}]}")
    assert labels(sw) == ["dtype=float16", "dtype=auto device_map=auto"]
    sw = run(MODEL + "base: {load: {loader: {target: 'a:b', kwargs: {x: 1}}}}\n"
                     "matrix: {load: {loader: ['c:d', {kwargs: {x: 2}}, null]}}")
    assert [(s.load.loader and (s.load.loader.target, s.load.loader.kwargs)) for s in sw.strategies] == [
        ("c:d", ()), ("a:b", (("x", 2),)), None]
    assert labels(sw) == ["loader=c:d", "loader=a:b", "loader=builtin"]


def test_model_source_in_overlay_replaces_base_source():
    sw = run("model: {synthetic: {arch: qwen2, shape: tiny, dtype: float16}, trust_remote_code: true}\n"
             "matrix: {model: [{synthetic: {shape: gpt2}}, {hub_id: org/name}, {path: /ckpt}]}")
    a, b, c = (s.model for s in sw.strategies)
    assert (a.synthetic.arch, a.synthetic.shape, a.synthetic.dtype) == ("qwen2", "gpt2", "float16")
    assert a.trust_remote_code is True
    assert (b.synthetic, b.hub_id, b.trust_remote_code) == (None, "org/name", True)
    assert (c.synthetic, c.path) == (None, "/ckpt")
    assert labels(sw) == ["model=qwen2:gpt2", "model=org/name", "model=/ckpt"]


# ---------------------------------------------------------------- labels, order, duplicates

def test_order_model_outermost_then_load_generate_top_level_knobs():
    sw = run(MODEL + "matrix:\n  timeout_s: [60, 120]\n  generate: {batch_size: [1, 2]}\n"
                     "  load: {dtype: [float32, bfloat16], device_map: [cpu, auto]}\n"
                     "  model: [{synthetic: {shape: tiny}}, {synthetic: {shape: gpt2}}]\n")
    assert len(sw.strategies) == 32
    got = [(s.model.synthetic.shape, s.load.dtype, s.load.device_map, s.generate.batch_size, s.timeout_s)
           for s in sw.strategies]
    want = [(m, d, dm, b, float(t)) for m in ("tiny", "gpt2") for d in ("float32", "bfloat16")
            for dm in ("cpu", "auto") for b in (1, 2) for t in (60, 120)]
    assert got == want
    assert sw.strategies[0].label == "model=tiny dtype=float32 device_map=cpu batch_size=1 timeout_s=60"


def test_labels_only_name_varying_dimensions_and_disambiguate():
    sw = run(MODEL + "matrix: {load: {dtype: [float16, bfloat16], device_map: [cpu]}, "
                     "model: {synthetic: {dtype: [float16, float32]}}}")
    assert labels(sw) == ["synthetic.dtype=float16 load.dtype=float16", "synthetic.dtype=float16 load.dtype=bfloat16",
                          "synthetic.dtype=float32 load.dtype=float16", "synthetic.dtype=float32 load.dtype=bfloat16"]
    sw = run(MODEL + "matrix: {load: {low_cpu_mem_usage: [true, false, null]}, timeout_s: [1.5]}")
    assert labels(sw) == ["low_cpu_mem_usage=true", "low_cpu_mem_usage=false", "low_cpu_mem_usage=null"]


def test_base_label_prefixes_matrix_points_and_explicit_include_label_wins():
    sw = run(MODEL + "base: {label: run}\nmatrix: {load: {dtype: [float16, bfloat16]}}\n"
                     "include: [{label: mine, load: {dtype: float32}}, {load: {dtype: auto}}]")
    assert labels(sw) == ["run dtype=float16", "run dtype=bfloat16", "mine", "run dtype=auto"]


def test_include_labels_from_the_keys_they_set():
    sw = run(MODEL + "include:\n - {load: {dtype: float16, device_map: auto}, generate: {max_new_tokens: 64}}\n"
                     " - {model: {hub_id: org/x}, timeout_s: 30}\n - {probes: [phases]}\n - {}\n")
    assert labels(sw) == ["dtype=float16 device_map=auto max_new_tokens=64", "model=org/x timeout_s=30",
                          "probes=phases", "tiny"]


def test_single_point_gets_the_model_label():
    assert labels(run("model: {synthetic: {arch: qwen2, shape: tiny}}")) == ["qwen2:tiny"]
    assert labels(run(MODEL + "matrix: {load: {dtype: [float16]}}")) == ["tiny"]
    assert labels(run(MODEL + "include: [{load: {dtype: float16}}]")) == ["tiny"]
    assert labels(run(MODEL + "include: [{label: x, load: {dtype: float16}}]")) == ["x"]
    assert labels(run(MODEL + "matrix: {load: {dtype: [float16, auto]}}\nexclude: [{load: {dtype: auto}}]")) == ["tiny"]


def test_duplicates_are_dropped_first_kept_with_notes():
    sw = run(MODEL + "matrix: {load: {dtype: [float16, float16, auto]}, timeout_s: [60, 60.0]}\n"
                     "include: [{label: again, load: {dtype: auto}, timeout_s: 60}]")
    assert labels(sw) == ["dtype=float16 timeout_s=60", "dtype=auto timeout_s=60"]
    assert len(sw.dropped) == 5
    assert sw.dropped[0] == ("matrix point 1 'dtype=float16 timeout_s=60' is the same strategy as "
                             "matrix point 0 'dtype=float16 timeout_s=60'; kept the first")
    assert sw.dropped[-1].startswith("include[0] 'again' is the same strategy as matrix point 4")


def test_without_matrix_base_is_the_point_unless_includes():
    assert len(run(MODEL).strategies) == 1
    sw = run("include: [{model: {hub_id: a}}, {model: {hub_id: b}}]")
    assert [s.model.hub_id for s in sw.strategies] == ["a", "b"]
    sw = run(MODEL + "matrix: {}\ninclude: [{load: {dtype: float16}}]")
    assert [s.load.dtype for s in sw.strategies] == ["auto", "float16"]


# ---------------------------------------------------------------- exclude

def test_exclude_drops_matching_points_before_validation():
    sw = run(MODEL + "matrix: {load: {dtype: [float16, bfloat16], device_map: [cpu, auto], offload: [none, cpu]}}\n"
                     "exclude: [{load: {dtype: float16, device_map: cpu}}, {load: {offload: cpu}}]")
    assert [(s.load.dtype, s.load.device_map) for s in sw.strategies] == [
        ("float16", "auto"), ("bfloat16", "cpu"), ("bfloat16", "auto")]


def test_exclude_compares_unwritten_fields_as_defaults_and_sections():
    sw = run(MODEL + "matrix: {generate: [false, {batch_size: 2}], load: {dtype: [auto, float16]}}\n"
                     "exclude: [{load: {dtype: auto, quantization: none}}, {generate: false}]")
    assert [(s.load.dtype, s.generate.batch_size) for s in sw.strategies] == [("float16", 2)]
    sw = run(MODEL + "matrix: {model: [{synthetic: {shape: gpt2}}, {hub_id: x}]}\n"
                     "exclude: [{model: {synthetic: {shape: gpt2}}}]")
    assert [s.model.hub_id for s in sw.strategies] == ["x"]


def test_exclude_matching_nothing_is_an_error_naming_its_index():
    err = fail(MODEL + "matrix: {load: {dtype: [float16, auto]}}\n"
                       "exclude: [{load: {dtype: auto}}, {load: {dtype: float32}}]")
    assert err.path == "exclude[1]" and "matches no matrix point" in err.message


def test_empty_sweep_is_an_error():
    err = fail(MODEL + "matrix: {load: {dtype: [float16]}}\nexclude: [{load: {dtype: float16}}]")
    assert "no strategies left" in err.message


# ---------------------------------------------------------------- sweep, trials, ids

QUICK = (MODEL + "name: quick\nrepeat: 2\nmatrix: {load: {dtype: [float32, bfloat16]}, "
         "generate: {max_new_tokens: '32..64*2'}}\ninclude: [{label: my-loader, load: {loader: 'a.b:c'}}]")


def test_sweep_trials_repeat_in_order_and_ids_stable():
    a, b = run(QUICK), run(QUICK)
    assert [s.id for s in a.strategies] == [s.id for s in b.strategies]
    assert a == b and hash(a.strategies) == hash(b.strategies)
    assert (a.name, a.repeat, len(a.strategies)) == ("quick", 2, 5)
    trials = a.trials()
    assert len(trials) == 10 and [t.id for t in trials] == [t.id for t in b.trials()]  # the same order every time
    assert [s.label for s in a.strategies[:3]] == [
        "dtype=float32 max_new_tokens=32", "dtype=float32 max_new_tokens=64", "dtype=bfloat16 max_new_tokens=32"]
    assert len({t.id for t in trials}) == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.repeat = 3  # type: ignore[misc]
    assert run(MODEL, source="dir/my-sweep.yaml").name == "my-sweep"
    assert run(MODEL).name == "sweep" and run(MODEL).description == "" and run(MODEL).dropped == ()


def test_repeats_run_interleaved_and_keep_their_ids():
    """r0 of every strategy, then r1 of every strategy (ABAB, not AABB), each round shuffled with a seed from the
    strategies: drift spreads over all strategies and never lines up with the written order of a knob's values."""
    sw = run(QUICK)
    ids = [s.id for s in sw.strategies]
    trials = sw.trials()
    assert [t.repeat_index for t in trials] == [0] * 5 + [1] * 5
    assert sorted(t.id for t in trials[:5]) == sorted(f"{i}-r0" for i in ids)
    assert sorted(t.id for t in trials[5:]) == sorted(f"{i}-r1" for i in ids)
    assert [t.strategy.id for t in trials[:5]] != ids or [t.strategy.id for t in trials[5:]] != ids
    caps = run(MODEL + "matrix: {generate: {max_new_tokens: '32..2048*2'}}").trials()
    assert [t.strategy.generate.max_new_tokens for t in caps] != sorted(t.strategy.generate.max_new_tokens for t in caps)
    # the same trials, strategy by strategy, for the reports; ids are the order-independent f"{strategy.id}-r{n}"
    assert [t.id for t in sw.trials_by_strategy()] == [f"{i}-r{r}" for i in ids for r in range(2)]
    assert {t.id for t in sw.trials()} == {t.id for t in sw.trials_by_strategy()}
    assert [t.id for t in run(MODEL + "repeat: 3").trials()] == [
        f"{run(MODEL).strategies[0].id}-r{r}" for r in range(3)]


def test_strategies_round_trip_through_dict():
    for s in run(QUICK).strategies:
        assert Strategy.from_dict(s.to_dict()).id == s.id


def test_import_does_not_pull_torch():
    code = "import loadprof.strategies.expand, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---------------------------------------------------------------- properties

KNOBS = {("load", "dtype"): DTYPES, ("load", "device_map"): DEVICE_MAPS[:3], ("load", "quantization"): QUANTIZATIONS,
         ("generate", "batch_size"): (1, 2, 3), ("generate", "max_new_tokens"): (8, 16, 32),
         ("timeout_s", None): (60, 120.0)}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(KNOBS, key=str)),
                       st.integers(0, 10**6), min_size=1, max_size=4).flatmap(
    lambda picks: st.fixed_dictionaries({k: st.lists(st.sampled_from(KNOBS[k]), min_size=1, max_size=3)
                                         for k in picks})))
def test_property_valid_matrix_expands_to_product_minus_duplicates(lists):
    matrix: dict = {}
    expected = 1
    for (section, key), values in lists.items():
        if key is None:
            matrix[section] = values
        else:
            matrix.setdefault(section, {})[key] = values
        expected *= len({float(v) if isinstance(v, int) else v for v in values})
    sw = expand({"model": {"synthetic": {"shape": "tiny"}}, "matrix": matrix})
    assert len(sw.strategies) == expected
    assert len(sw.strategies) + len(sw.dropped) == _product(len(v) for v in lists.values())
    assert len({s.id for s in sw.strategies}) == expected and len(set(sw.strategies)) == expected
    for s in sw.strategies:
        assert isinstance(s, Strategy) and hash(s) == hash(dataclasses.replace(s))
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.label = "x"  # type: ignore[misc]


def _product(numbers) -> int:
    out = 1
    for n in numbers:
        out *= n
    return out


def mutations(key: str) -> st.SearchStrategy[str]:
    """Single edits: insert, delete, substitute, transpose."""
    alphabet = string.ascii_lowercase + "_-0"
    pos = st.integers(0, len(key) - 1)
    return st.one_of(
        st.tuples(st.integers(0, len(key)), st.sampled_from(alphabet)).map(lambda p: key[:p[0]] + p[1] + key[p[0]:]),
        pos.map(lambda i: key[:i] + key[i + 1:]),
        st.tuples(pos, st.sampled_from(alphabet)).map(lambda p: key[:p[0]] + p[1] + key[p[0] + 1:]),
        st.integers(0, len(key) - 2).map(lambda i: key[:i] + key[i + 1] + key[i] + key[i + 2:]))


ALL_KEYS = sorted(set(ex.TOP_KEYS + STRATEGY_KEYS + MODEL_KEYS + SYNTHETIC_KEYS + LOAD_KEYS + LOADER_KEYS
                      + GENERATE_KEYS))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
                    st.sampled_from(DTYPES + DEVICE_MAPS + QUANTIZATIONS
                                    + ("1..4", "8..64*2", "sample:3", "2GiB", "a:b")))
KEYS = st.one_of(st.sampled_from(ALL_KEYS), st.sampled_from(ALL_KEYS).flatmap(mutations), st.text(max_size=4),
                 st.integers(0, 3))
JUNK = st.recursive(SCALARS, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(KEYS, ch, max_size=3), max_leaves=8)
SMALL = st.integers(1, 4)
VALID = {  # plausible values per key, so that generated documents often get deep (or all the way through)
    "name": st.text(min_size=1, max_size=5), "description": st.text(max_size=5), "repeat": SMALL,
    "dtype": st.sampled_from(DTYPES), "device_map": st.sampled_from(DEVICE_MAPS[:3]) | st.just({"": 0}),
    "quantization": st.sampled_from(QUANTIZATIONS), "offload": st.sampled_from(OFFLOADS),
    "file_cache": st.sampled_from(FILE_CACHES), "validation": st.sampled_from(["none", "sample", "sample:3", "full"]),
    "max_memory": st.just({0: "1GiB", "cpu": "2GiB"}), "offload_folder": st.just("off"),
    "attn_implementation": st.sampled_from(ATTN_IMPLEMENTATIONS), "low_cpu_mem_usage": st.none() | st.booleans(),
    "extra_kwargs": st.dictionaries(st.text(max_size=3), SCALARS, max_size=2), "timeout_s": st.floats(1, 100),
    "sampling_hz": st.integers(0, 100), "probes": st.lists(st.sampled_from(["phases", "memory"]), max_size=2),
    "label": st.text(max_size=5), "memory_limit": st.just("2GiB"), "prompt_tokens": SMALL, "max_new_tokens": SMALL,
    "batch_size": SMALL, "warmup": SMALL, "repeats": SMALL, "stop_after": SMALL | st.none(),
    "cache_implementation": st.sampled_from(["dynamic", "static"]), "stop_at_eos": st.booleans(),
    "arch": st.just("qwen2"), "shape": st.sampled_from(["tiny", "gpt2"]), "seed": SMALL,
    "max_shard_size": st.just("100MB"), "hub_id": st.just("org/x"), "path": st.just("ckpt"),
    "trust_remote_code": st.booleans(), "target": st.just("a.b:c"),
    "kwargs": st.dictionaries(st.text(max_size=3), SCALARS),
    "init_kwargs": st.just({}), "sys_path": st.just(["."]), "model_arg": st.just("m"),
}
INT_KEYS = {"repeat", "prompt_tokens", "max_new_tokens", "batch_size", "warmup", "repeats", "stop_after", "seed",
            "sampling_hz"}


def section(keys, nested=None, matrix=False):
    """A mapping that mostly uses valid keys and values (so the walk goes deep), with junk and misspellings mixed in."""
    nested = nested or {}

    def value(k):
        if k in nested:
            good = nested[k]
        else:
            good = VALID.get(k, JUNK)
            if matrix:
                good = st.lists(good, min_size=1, max_size=3) | (st.just("1..4*2") if k in INT_KEYS else good.map(
                    lambda v: [v]))
        return rarely(JUNK, good)
    valid = st.fixed_dictionaries({}, optional={k: value(k) for k in keys})
    return rarely(st.one_of(JUNK, st.tuples(valid, st.dictionaries(KEYS, JUNK, min_size=1, max_size=2)).map(
        lambda p: {**p[0], **p[1]})), valid)


def rarely(bad, good, one_in: int = 12):
    """``bad`` about once in ``one_in`` draws: enough malformed spots, yet many documents still expand fully."""
    return st.sampled_from(range(one_in)).flatmap(lambda i: bad if i == one_in // 2 else good)


MODEL_ST = section(MODEL_KEYS, {"synthetic": section(SYNTHETIC_KEYS)})
LOAD_ST = section(LOAD_KEYS, {"loader": st.just("a.b:c") | section(LOADER_KEYS)})
GEN_ST = st.none() | section(GENERATE_KEYS)
PARTIAL = section(STRATEGY_KEYS, {"model": MODEL_ST, "load": LOAD_ST, "generate": GEN_ST})
MATRIX = section(ex.MATRIX_KEYS, {
    "model": st.lists(MODEL_ST, min_size=1, max_size=2) | section(MODEL_KEYS, {"synthetic": section(
        SYNTHETIC_KEYS, matrix=True)}, matrix=True),
    "load": section(LOAD_KEYS, matrix=True), "generate": st.lists(GEN_ST, min_size=1, max_size=2) | section(
        GENERATE_KEYS, matrix=True)}, matrix=True)
SIMPLE_MODEL = st.sampled_from([{"hub_id": "org/x"}, {"path": "ckpt"}, {"synthetic": {}},
                                {"synthetic": {"shape": "gpt2"}}])
TOP = section(ex.TOP_KEYS, {"model": MODEL_ST, "base": PARTIAL, "matrix": MATRIX,
                            "include": st.lists(PARTIAL, max_size=2), "exclude": st.lists(PARTIAL, max_size=2)})


def _with_model(doc, model):
    """Most real files name a model; add one unless the document already has one (or is not a mapping)."""
    if not isinstance(doc, dict) or "model" in doc or (isinstance(doc.get("base"), dict) and "model" in doc["base"]):
        return doc
    return {"model": model, **doc}


WITH_MODEL = st.builds(_with_model, TOP, SIMPLE_MODEL)
DOCS = rarely(JUNK, st.one_of(TOP, WITH_MODEL, WITH_MODEL))


# 100 examples, not 400: this property runs in the default (fast) set, where 400 cost ~10 s on a busy 2-core machine
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_property_malformed_documents_raise_only_spec_error(doc):
    try:
        sw = expand(doc)
    except SpecError as e:
        assert e.exit_code == 2 and e.message
        return
    assert sw.strategies and all(isinstance(s, Strategy) for s in sw.strategies)
    assert len({s.id for s in sw.strategies}) == len(sw.strategies)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_property_random_yaml_text_raises_only_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "random.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_sweep(path)
    except SpecError:
        pass


# Where a key set is checked, and how to put a (mis-spelled) key there with a value that is otherwise fine.
PLACES = {
    "top": (ex.TOP_KEYS, lambda k: {"model": {"hub_id": "x"}, k: None}),
    "base": (STRATEGY_KEYS, lambda k: {"base": {"model": {"hub_id": "x"}, k: 1}}),
    "model": (MODEL_KEYS, lambda k: {"model": {"hub_id": "x", k: 1}}),
    "synthetic": (SYNTHETIC_KEYS, lambda k: {"model": {"synthetic": {k: 1}}}),
    "load": (LOAD_KEYS, lambda k: {"model": {"hub_id": "x"}, "base": {"load": {k: 1}}}),
    "loader": (LOADER_KEYS, lambda k: {"model": {"hub_id": "x"},
                                       "base": {"load": {"loader": {"target": "a:b", k: 1}}}}),
    "generate": (GENERATE_KEYS, lambda k: {"model": {"hub_id": "x"}, "include": [{"generate": {k: 1}}]}),
    "matrix": (ex.MATRIX_KEYS, lambda k: {"model": {"hub_id": "x"}, "matrix": {k: [1]}}),
    "matrix.load": (LOAD_KEYS, lambda k: {"model": {"hub_id": "x"}, "matrix": {"load": {k: [1]}}}),
}
LONG_KEYS = [(place, key) for place, (keys, _) in PLACES.items() for key in keys if len(key) >= 5]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LONG_KEYS).flatmap(lambda pk: st.tuples(st.just(pk), mutations(pk[1]))))
def test_property_single_edit_of_a_key_names_the_original(args):
    (place, key), typo = args
    keys, make = PLACES[place]
    assume(typo not in keys and not (place == "top" and typo in STRATEGY_KEYS))
    with pytest.raises(SpecError) as info:
        expand(make(typo))
    assert f"unknown key {typo!r}; did you mean " in info.value.message
    assert repr(key) in info.value.message.split("did you mean", 1)[1]
    assert info.value.path.endswith(typo)


def test_every_single_edit_of_every_long_key_names_the_original():
    """Exhaustive over the edit alphabet: the did-you-mean never loses the original to a rival key."""
    alphabet = string.ascii_lowercase + "_"
    for keys in {keys for keys, _ in PLACES.values()}:
        for key in (k for k in keys if len(k) >= 5):
            edits = {key[:i] + c + key[i:] for i in range(len(key) + 1) for c in alphabet}
            edits |= {key[:i] + key[i + 1:] for i in range(len(key))}
            edits |= {key[:i] + c + key[i + 1:] for i in range(len(key)) for c in alphabet}
            edits |= {key[:i] + key[i + 1] + key[i] + key[i + 2:] for i in range(len(key) - 1)}
            for typo in edits - set(keys):
                msg = ex._unknown_key(typo, keys, typo).message
                assert repr(key) in msg.split("did you mean", 1)[1], msg


def test_familiar_aliases_normalize_to_one_strategy(tmp_path):
    a = expand(yaml.safe_load(MODEL + "base: {load: {dtype: fp16, quantization: int8}}"), "s.yaml", tmp_path)
    b = expand(yaml.safe_load(MODEL + "base: {load: {dtype: float16, quantization: bnb-8bit}}"), "s.yaml", tmp_path)
    assert a.strategies[0].load.dtype == "float16" and a.strategies[0].load.quantization == "bnb-8bit"
    assert a.strategies[0].id == b.strategies[0].id
    c = expand(yaml.safe_load("model: {synthetic: {shape: tiny, dtype: bf16}}\nbase: {load: {quantization: int4}}"),
               "s.yaml", tmp_path)
    assert c.strategies[0].model.synthetic.dtype == "bfloat16" and c.strategies[0].load.quantization == "bnb-4bit-nf4"


def test_a_string_model_is_a_path_or_a_hub_id(tmp_path):
    (tmp_path / "ckpt").mkdir()
    for text, want in (("./ckpt", ("path", str(tmp_path / "ckpt"))), ("ckpt", ("path", str(tmp_path / "ckpt"))),
                       ("org/name", ("hub_id", "org/name")), ("gpt2", ("hub_id", "gpt2"))):
        m = expand({"model": text}, "s.yaml", tmp_path).strategies[0].model
        assert (m.path, m.hub_id) == ((want[1], None) if want[0] == "path" else (None, want[1])), text
    two = expand(yaml.safe_load("model: a/b\nmatrix: {model: [a/b, ./ckpt]}"), "s.yaml", tmp_path)
    assert [s.model.label for s in two.strategies] == ["a/b", str(tmp_path / "ckpt")]
