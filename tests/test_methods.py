"""load.method: the spec and its YAML spellings, preflight's refusals, the skip reasons, the figures against the
machine's bounds and their finding; one end-to-end sweep (e2e) through four methods with the logits checked."""

from __future__ import annotations

import importlib.util

import pytest

from loadprof.analysis import derive
from loadprof.analysis.load_methods import load_far_from_bound
from loadprof.core import figures
from loadprof.core.errors import SpecError
from loadprof.core.phases import PhaseTiming
from loadprof.core.units import seconds
from loadprof.results.model import TrialResult
from loadprof.strategies import methods
from loadprof.strategies.expand import expand
from loadprof.strategies.method_loaders import shard_files
from loadprof.strategies.model import LOAD_METHODS, LoadSpec
from loadprof.strategies.preflight import preflight
from tests.helpers import strategy_of


def test_every_method_has_its_table_row_and_the_default_is_todays_load() -> None:
    assert tuple(methods.METHODS) == LOAD_METHODS
    assert LoadSpec().method == "from_pretrained" and LoadSpec().workers is None and not LoadSpec().check_logits


def test_the_default_method_keeps_every_id_and_another_method_changes_it() -> None:
    plain = strategy_of()
    assert plain.to_dict()["load"]["method"] == "from_pretrained"  # written out, but left out of the id
    assert plain.id == strategy_of({"load": {"method": "from_pretrained", "check_logits": False}}).id
    ids = {strategy_of({"load": {"method": m}}).id for m in ("safetensors", "runai", "fastsafetensors")}
    assert len(ids) == 3 and plain.id not in ids
    assert strategy_of({"load": {"method": "runai", "workers": 4}}).id != strategy_of({"load": {"method": "runai"}}).id


def test_the_yaml_takes_the_packages_name_and_refuses_an_unknown_method() -> None:
    sweep = expand({"model": {"synthetic": {"shape": "tiny"}}, "base": {"load": {"method": "runai-model-streamer"}}})
    assert sweep.strategies[0].load.method == "runai"
    with pytest.raises(SpecError, match="load.method"):
        expand({"model": {"synthetic": {"shape": "tiny"}}, "base": {"load": {"method": "mmap"}}})
    for bad in (0, True, "4"):
        with pytest.raises(SpecError, match="load.workers"):
            LoadSpec(method="parallel", workers=bad)
    with pytest.raises(SpecError, match="load.check_logits"):
        LoadSpec(check_logits="yes")


@pytest.mark.parametrize("load, knob", [
    ({"method": "safetensors", "device_map": "auto"}, "load.device_map"),
    ({"method": "runai", "device_map": {"": "cpu"}}, "load.device_map"),
    ({"method": "fastsafetensors", "quantization": "bnb-8bit"}, "load.quantization"),
    ({"method": "safetensors", "offload": "disk"}, "load.offload"),
    ({"method": "runai", "extra_kwargs": {"use_safetensors": True}}, "load.extra_kwargs"),
    ({"method": "instanttensor"}, "load.device_map"),
    ({"workers": 2}, "load.workers"),
    ({"method": "safetensors", "loader": {"target": "pkg.mod:load"}}, "load.loader"),
])
def test_preflight_refuses_a_knob_the_method_cannot_honour_naming_strategy_and_knob(load, knob) -> None:
    bad = strategy_of({"load": load, "label": "the-bad-one"})
    with pytest.raises(SpecError) as e:
        preflight([strategy_of(), bad])
    text = str(e.value)
    assert f"does not support {knob}" in text and "the-bad-one" in text and "\n" not in text


def test_what_each_method_supports_passes_preflight() -> None:
    ok = [strategy_of({"load": load}) for load in (
        {"method": "parallel", "workers": 4}, {"method": "safetensors", "dtype": "float32", "validation": "full"},
        {"method": "runai", "workers": 2, "file_cache": "cold", "check_logits": True},
        {"method": "instanttensor", "device_map": "cuda"}, {"method": "parallel", "device_map": "auto"})]
    assert preflight(ok) == []


def test_a_missing_package_skips_the_trial_with_the_extra_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastsafetensors" else real(name, *a))
    reason = methods.skip_reason(LoadSpec(method="fastsafetensors"))
    assert "fastsafetensors" in reason and "loadprof[methods]" in reason
    assert methods.skip_reason(LoadSpec(method="safetensors")) is None
    assert methods.skip_reason(LoadSpec()) is None


def test_shard_files_follow_the_index_or_the_single_file(tmp_path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"b": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}}')
    assert [p.rsplit("/", 1)[1] for p in shard_files(str(tmp_path))] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    single = tmp_path / "one"
    single.mkdir()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        shard_files(str(single))
    (single / "model.safetensors").write_bytes(b"")
    assert shard_files(str(single)) == [str(single / "model.safetensors")]


def _trial(cache: str, read_s: float, first_forward_s: float, bound_gb_s: float, per: dict[str, int]) -> TrialResult:
    load = PhaseTiming("load", 0.0, 0.5 + read_s, children=(
        PhaseTiming("instantiate", 0.0, 0.5), PhaseTiming("read", 0.5, 0.5 + read_s)))
    warm = PhaseTiming("warmup", 0.5 + read_s, 0.5 + read_s + first_forward_s,
                       children=(PhaseTiming("forward", 0.5 + read_s, 0.5 + read_s + first_forward_s),))
    key = derive.READ_BOUNDS[cache][0]
    return TrialResult(trial_id="t", strategy_id="s", label="", repeat_index=0, status="ok",
                       strategy=strategy_of({"load": {"method": "runai", "file_cache": cache}}),
                       metrics={"load_s": load.duration_s, "load_bytes_by_step": per, "load_method": "runai"},
                       phases=(load, warm), harness={key: {"gb_s": bound_gb_s}})


def test_every_step_is_held_against_its_bound() -> None:
    n = 2 * 10**9
    t = derive.enrich(_trial("warm", read_s=1.0, first_forward_s=0.5, bound_gb_s=4.0, per={"read": n}))
    m = t.metrics
    assert m["load_gb_s_by_step"]["read"] == pytest.approx(n / 1.0 / 1e9)
    assert figures.LOAD_GB_S.read(m) == pytest.approx(n / (1.5 + 0.5) / 1e9)  # real load cost: load + forward
    assert figures.LOAD_BOUND_FRACTION.read(m) == pytest.approx(n / 2.0 / 1e9 / 4.0)
    assert m["load_bound"] == "page-cache read" and m["load_read_step_fraction"] == pytest.approx(0.5)
    cold = derive.enrich(_trial("cold", 1.0, 0.5, 0.5, {"read": n})).metrics
    assert cold["load_bound"] == "storage sequential read" and cold["load_bound_gb_s"] == 0.5


def test_a_load_far_from_its_bound_is_a_finding_and_one_near_it_is_not() -> None:
    n = 2 * 10**9
    far = derive.enrich(_trial("warm", read_s=20.0, first_forward_s=0.5, bound_gb_s=4.0, per={"read": n}))
    (f,) = load_far_from_bound(far)
    assert f.kind == "load_far_from_bound" and "runai" in f.title and f.stake_s == pytest.approx(21.0 - n / 4e9)
    near = derive.enrich(_trial("warm", read_s=0.5, first_forward_s=0.0, bound_gb_s=4.0, per={"read": n}))
    assert list(load_far_from_bound(near)) == []
    # beside a neighbour the rate is not the load's alone: not said (the busy-machine line is)
    from tests.test_machine import machine

    busy = TrialResult(**{**far.__dict__, "probes": {**far.probes, "machine": machine(others_cpu_cores=1.5)}})
    assert list(load_far_from_bound(busy)) == []


def test_a_load_from_another_folder_is_not_held_against_the_models_read_bound() -> None:
    """The bound is the read rate of the model's own files: a loader that copied the checkpoint elsewhere and
    loaded that copy read files whose residency nobody measured."""
    from tests.helpers import phases_payload

    n = 2 * 10**9
    t = _trial("warm", read_s=20.0, first_forward_s=0.5, bound_gb_s=4.0, per={"read": n})

    def reading(source: str) -> TrialResult:
        calls = [{"class": "GPT2LMHeadModel", "kwargs": {}, "source": source}]
        return derive.enrich(TrialResult(**{**t.__dict__, "harness": {**t.harness, "model_path": "/models/gpt2"},
                                            "probes": {"phases": phases_payload(from_pretrained_calls=calls)}}))
    assert len(list(load_far_from_bound(reading("/models/gpt2/")))) == 1  # the model's folder: held to it
    assert len(list(load_far_from_bound(reading("openai-community/gpt2")))) == 1  # a hub id resolves to it
    assert list(load_far_from_bound(reading("/tmp/copy-x1/gpt2"))) == []


def test_the_loads_import_and_your_code_are_not_held_against_the_read_bound() -> None:
    """Importing the modeling code and the user's own work in the load read no weights and have their own
    findings: the window held against the bound leaves them out, so a copy or an import is not counted twice."""
    n = 2 * 10**9
    t = _trial("warm", read_s=5.5, first_forward_s=0.0, bound_gb_s=4.0, per={"read": n})
    # 6 s of load: a 0.5 s import, 2 s of the user's own copy, then 3.5 s reading 2 GB (a 4 GB/s bound: 0.5 s)
    load = PhaseTiming("load", 0.0, 6.0, children=(
        PhaseTiming(derive.LAZY_IMPORT_PHASE, 0.0, 0.5), PhaseTiming("read", 2.5, 6.0)))
    user = {"name": "copy_first", "file": "/u/app.py", "line": 3, "phase": "load", "samples": 100, "seconds": 2.0,
            "own_s": 2.0, "running_s": 2.0}
    slow = derive.enrich(TrialResult(**{**t.__dict__, "phases": (load, *t.phases[1:]),
                                        "probes": {"sampling": {"ok": True, "user_functions": [user]}}}))
    (f,) = load_far_from_bound(slow)
    assert f.evidence["window_s"] == pytest.approx(3.5) and f.stake_s == pytest.approx(3.0)
    assert f.evidence["fraction"] == pytest.approx(n / 3.5 / 1e9 / 4.0)
    assert f.title.endswith(f"GB/s), outside its import {seconds(0.5)} and your code {seconds(2.0)}")
    # the same load with 3 s of the user's code: 1 s for 2 GB is half the bound, no finding
    busy = {**user, "own_s": 4.0, "seconds": 4.0}
    near = derive.enrich(TrialResult(**{**t.__dict__, "phases": (load, *t.phases[1:]),
                                        "probes": {"sampling": {"ok": True, "user_functions": [busy]}}}))
    assert list(load_far_from_bound(near)) == []


@pytest.mark.e2e
def test_four_methods_load_a_sharded_model_and_give_from_pretrained_logits(tmp_path) -> None:
    import loadprof

    wanted = ["from_pretrained", "parallel", "safetensors", "runai"]
    if importlib.util.find_spec("runai_model_streamer") is None:
        wanted.remove("runai")  # its trial would be skipped: checked below instead
    sweep = loadprof.compare({
        "name": "methods", "model": {"synthetic": {"shape": "tiny", "max_shard_size": "100KB"}},
        "base": {"generate": False, "timeout_s": 300, "load": {"check_logits": True}},
        "include": [{"load": {"method": m, **({"workers": 2} if m != "from_pretrained" else {})}} for m in wanted]},
        out=tmp_path / "run")
    by = {t.strategy.load.method: t for t in sweep.trials}
    assert all(t.status == "ok" for t in by.values()), {m: t.reason for m, t in by.items()}
    for m in wanted[2:]:
        mt = by[m].metrics
        assert mt["logits_check"] == "equal to from_pretrained" and mt["load_files"] > 1
        assert {"read", "assign"} <= set(mt["load_gb_s_by_step"]) and by[m].phase("check") is not None
        assert figures.LOAD_BOUND_FRACTION.read(mt) is not None
    assert by["parallel"].metrics["load_workers"] == 2
