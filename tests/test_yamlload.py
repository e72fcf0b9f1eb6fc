"""Bounded YAML: alias bombs, deep nesting, duplicate keys and huge files answered in one line, fast."""

from __future__ import annotations

import time

import pytest

from loadprof.core.errors import SpecError
from loadprof.strategies.yamlload import MAX_BYTES, load_yaml


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, match", [
    (_bomb(), "expands to more than 100,000 nodes near line"),
    ("a: " + "[" * 20000 + "\n", "line 1, column"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3, column 1; first at line 1, column 1"),
    ("x:\n  y: 1\n  y: 2\n", "duplicate key 'y' at line 3"),
    ("a: [1, 2\nb: 3\n", "invalid YAML in s.yaml at line"),
    ("a: !!python/object:os.system echo\n", "invalid YAML in s.yaml"),
    ("x" * (MAX_BYTES + 1), "a sweep file may be at most 256 KiB"),
])
def test_hostile_yaml_is_one_spec_error_in_well_under_two_seconds(text, match):
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=match):
        load_yaml(text, "s.yaml")
    assert time.monotonic() - t0 < 2.0


def test_ordinary_yaml_and_small_aliases_load_as_safe_load_would():
    text = "base: &b {load: {dtype: float16}}\ninclude: [*b, *b]\nn: 3\nempty:\n"
    assert load_yaml(text, "s.yaml") == {"base": {"load": {"dtype": "float16"}},
                                         "include": [{"load": {"dtype": "float16"}}] * 2, "n": 3, "empty": None}
    assert load_yaml("", "s.yaml") is None
