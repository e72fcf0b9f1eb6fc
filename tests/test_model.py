"""Strategy specs: frozen, hashable, JSON round-trip exact, bad values rejected with their path."""

from __future__ import annotations

import json

import pytest

from loadprof.core.errors import SpecError
from loadprof.strategies.model import (FrozenMap, GenerateSpec, LoaderSpec, LoadSpec, ModelSpec, Strategy, SyntheticSpec,
                              Trial, parse_size, thaw)


def _round_trip(s: Strategy) -> Strategy:
    return Strategy.from_dict(json.loads(json.dumps(s.to_dict())))


def test_round_trip_keeps_equality_and_id_including_list_of_pairs_kwargs():
    s = Strategy(model=ModelSpec(synthetic=SyntheticSpec(shape="tiny")),
                 load=LoadSpec(device_map={"model": "cpu", "lm_head": "disk"}, max_memory={0: "1GiB", "cpu": "4GiB"},
                               loader=LoaderSpec("pkg.mod:Cls.load", kwargs={"p": [["a", 1]], "q": {"x": 1}})),
                 generate=GenerateSpec(max_new_tokens=8, stop_after=3))
    again = _round_trip(s)
    assert again == s and again.id == s.id and hash(again) == hash(s)
    assert thaw(again.load.loader.kwargs) == {"p": [["a", 1]], "q": {"x": 1}}
    assert isinstance(again.load.device_map, FrozenMap)
    assert Trial(s, 2).id == f"{s.id}-r2"


def test_id_ignores_label_but_not_settings():
    m = ModelSpec(path="/x")
    assert Strategy(model=m, label="a").id == Strategy(model=m, label="b").id
    assert Strategy(model=m, timeout_s=60).id == Strategy(model=m, timeout_s=60.0).id
    assert Strategy(model=m).id != Strategy(model=m, load=LoadSpec(dtype="float16")).id


@pytest.mark.parametrize("make, path", [
    (lambda: LoadSpec(device_map=["cpu"]), "load.device_map"),
    (lambda: LoadSpec(device_map="gpu"), "load.device_map"),
    (lambda: LoadSpec(validation=3), "load.validation"),
    (lambda: LoadSpec(validation="sample:0"), "load.validation"),
    (lambda: LoadSpec(offload="cpu"), "load.offload"),
    (lambda: LoaderSpec(target=5), "load.loader.target"),
    (lambda: LoaderSpec(target="no_colon"), "load.loader.target"),
    (lambda: Strategy(model=ModelSpec(path="/x"), probes="memory"), "probes"),
    (lambda: Strategy(model=ModelSpec(path="/x"), sampling_hz=True), "sampling_hz"),
    (lambda: Strategy(model=ModelSpec(path="/x"), timeout_s=0), "timeout_s"),
    (lambda: GenerateSpec(max_new_tokens=0), "generate.max_new_tokens"),
    (lambda: SyntheticSpec(shape="qwen2.5-0.5"), "model.synthetic"),
    (lambda: SyntheticSpec(shape="tiny", arch="gpt2"), "model.synthetic.arch"),
    (lambda: ModelSpec(), "model"),
])
def test_bad_values_raise_spec_error_with_path(make, path):
    with pytest.raises(SpecError) as e:
        make()
    assert e.value.exit_code == 2 and (e.value.path or "").startswith(path)


def test_colliding_keys_rejected_and_sizes_parsed():
    with pytest.raises(SpecError):
        LoadSpec(device_map="auto", max_memory={0: "1GiB", "0": "2GiB"})
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("500MB") == 500 * 10**6 and parse_size(7) == 7
    assert LoadSpec(validation="sample").validation_mode == ("sample", 10)
    assert LoadSpec(validation="sample:3").validation_mode == ("sample", 3)
