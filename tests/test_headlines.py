"""Every finding's headline figure is a figure of its evidence: each number in a title must be one of the
evidence's values, printed as the title prints it (a share as a percent, bytes in their unit, seconds)."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import pytest

from loadprof.analysis.findings import RULES, trial_findings
from loadprof.analysis.studies import preallocation_findings
from loadprof.results.model import Finding, PhaseTiming, Study, TrialResult
from tests.helpers import memory_payload, phases_payload, sampling_payload, strategy_of
from tests.test_precision import _pair

MiB = 2**20
LOAD = (PhaseTiming("load", 0.0, 5.0, (PhaseTiming("weights", 0.2, 1.0),)),
        PhaseTiming("generate", 5.0, 7.0, (PhaseTiming("decode", 5.2, 6.8),)))
UNIT = {"%": 0.01, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "B": 1, "ms": 1e-3}
NUMBER = re.compile(r"(?<![\w.:/+-])(\d+(?:\.\d+)?)\s*(%|x\b|ms\b|s\b|B\b|KiB|MiB|GiB)?")


def _numbers(x: Any) -> Iterable[float]:
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield float(x)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _numbers(v)


def unexplained(f: Finding) -> list[str]:
    """Title numbers no evidence value (or stake) prints as."""
    values = [*_numbers(f.evidence), *(v for v in (f.stake_s, f.stake_bytes) if v is not None)]
    bad = []
    for m in NUMBER.finditer(f.title):
        text, unit = m.group(1), m.group(2) or ""
        n = float(text)
        tol = 0.5 * 10 ** -(len(text.split(".")[1]) if "." in text else 0) + 1e-9
        scale = UNIT.get(unit, 1.0)
        if not any(math.isclose(v / scale, n, abs_tol=tol) or (unit == "%" and math.isclose(v, n, abs_tol=tol))
                   for v in values):
            bad.append(m.group(0))
    return bad


def _trial(metrics=None, probes=None, env=None, strategy=None, phases=LOAD, tid="t-r0"):
    return TrialResult(trial_id=tid, strategy_id=tid.split("-")[0], label="x", repeat_index=0, status="ok",
                       strategy=strategy or strategy_of({"generate": {"batch_size": 1}}), metrics=metrics or {},
                       probes=probes or {}, env=env or {"transformers": "5.24.0"}, phases=phases)


USER = {"name": "wait_for_lock", "file": "/home/u/mm.py", "line": 5, "phase": "load", "samples": 200, "seconds": 4.0,
        "running_s": 0.0, "waiting_s": 4.0, "waits": {"sleep": 4.0}, "own_s": 4.0}
TRIALS = [
    _trial({"load_s": 1.0, "validate_s": 0.9, "validation_mode": "full", "validation_modules_checked": 40}),
    _trial({"load_s": 2.0}, {"phases": phases_payload(
        ignored_kwargs={"offload_state_dict": "m.py:1"},
        from_pretrained_calls=[{"kwargs": {"device_map": "cpu", "max_memory": {"cpu": "1GiB"}}}, {"kwargs": {}}])}),
    _trial({"meta_tensors": 3, "meta_tensor_examples": ["lm_head.weight"]}),
    _trial(probes={"sampling": sampling_payload(user_functions=[USER, {
        **USER, "name": "Proc.__call__", "phase": "generate", "decode_s": 0.6, "share_of_decode": 0.375}],
        phases={"load": {"seconds": 4.0, "top": [{"function": "wait_for_lock", "state": "sleep", "seconds": 4.0}]}})}),
    _trial(probes={"sampling": sampling_payload(user_functions=[{**USER, "running_s": 3.0, "waiting_s": 1.0}])}),
    _trial({"generate_settings": {"num_beams": 4, "use_cache": False, "torch_threads": 1, "usable_cores": 8,
                                  "dropout_active": True}, "decode_step_growth": 3.2, "decode_excess_s": 0.8,
            "new_tokens": 32, "decode_tok_s": 16.0}),
    _trial({"weights_bytes": 400 * MiB}, {"sampling": sampling_payload(user_functions=[{
        **USER, "running_s": 4.0, "waiting_s": 0.0, "waits": {}, "callees": [
            {"name": "AutoModel.from_config", "line": 7, "seconds": 3.5, "own_s": 3.5},
            {"name": "torch.Tensor.clone", "line": 8, "seconds": 0.25, "own_s": 0.25, "how": "line",
             "added_bytes": 400 * MiB, "held_bytes": 400 * MiB},
            {"name": "copy.deepcopy", "line": 9, "seconds": 0.25, "own_s": 0.25,
             "added_bytes": 410 * MiB, "held_bytes": 0}]}]),
                                  "memory": memory_payload({"load": {"peak_rss_bytes": 1300 * MiB,
                                                                   "end_anon_bytes": 1000 * MiB}})}),
    _trial({"read_bandwidth_fraction": 0.2, "storage_read_bytes": 900 * MiB, "achieved_read_gb_s": 0.4,
            "disk_seq_read_gb_s": 2.0, "reading_phases": ["load/weights"]}),
    _trial({"weights_bytes": 500 * MiB, "load_s": 0.1, "warmup_s": 1.0}, {"memory": memory_payload({
        "load": {"start_file_bytes": 0, "end_file_bytes": 10 * MiB},
        "warmup": {"start_file_bytes": 10 * MiB, "end_file_bytes": 480 * MiB}})}),
    _trial({"placement": {"cpu": {"bytes": 300 * MiB, "layers": 20}, "disk": {"bytes": 120 * MiB, "layers": 8}}}),
    _trial({"estimate_vs_measured": [{"figure": "weights_bytes", "measured": 2000 * MiB, "estimate": 1000 * MiB,
                                      "ratio": 2.0, "discrepancy": True, "likely_cause": "upcast"}]}),
    _trial({"roofline_fraction": 0.05, "decode_tok_s": 10.0, "roofline_tok_s": 200.0, "decode_bytes_per_step": 64 * MiB,
            "membw_gb_s": 10.0, "new_tokens": 32}),
    _trial({"precision": {"pairs": [_pair("bfloat16", "float32", 100 * MiB, 200 * MiB, numel=50 * MiB)]},
            "weights_bytes": 200 * MiB, "load_convert_thread_s": 2.0, "bytes_by_device": {"cpu": 200 * MiB}}),
    _trial({"precision": {"pairs": [_pair("float32", "float16", 400 * MiB, 200 * MiB)]}}),
    _trial({"matmul_gflops": {"float32": 40.0, "bfloat16": 10.0}, "new_tokens": 32, "decode_tok_s": 16.0}),
    _trial({"generate_settings": {"return_dict_in_generate": True, "output_scores": True, "vocab_size": 32000},
            "new_tokens": 256}),
    _trial({"bytes_by_dtype": {"float32": 1000 * MiB}, "weights_bytes": 1000 * MiB,
            "bytes_by_device": {"cuda:0": 1000 * MiB}}, env={"cuda_capability": "9.0"}),
    _trial({"precision": {"pairs": [_pair("bfloat16", "uint8", 200 * MiB, 50 * MiB),
                                    _pair("bfloat16", "bfloat16", 300 * MiB, 300 * MiB)]}, "weights_bytes": 350 * MiB},
           strategy=strategy_of({"load": {"device_map": "cuda", "quantization": "bnb-8bit"}})),
]
FINDINGS = [f for t in TRIALS for f in trial_findings(t)]


def test_the_trials_here_exercise_every_rule():
    fired = {f.kind for f in FINDINGS}
    assert len(fired) >= len(RULES), sorted(fired)


@pytest.mark.parametrize("f", FINDINGS, ids=lambda f: f.kind)
def test_headline_numbers_are_evidence(f: Finding) -> None:
    assert unexplained(f) == [], (f.title, dict(f.evidence))


def test_the_preallocation_headline_is_its_evidence_too():
    fits = {"generate_start_alloc_bytes": {"model": "linear", "r2": 1.0, "slope": 12288.0},
            "generate_call_s": None, "ttft_ms": None}
    study = Study("max_new_tokens", "generate.max_new_tokens", "tiny", {}, ("a", "b"),
                  {"growth": "linear", "alloc_bytes_per_cap_token": 12288.0, "fits": fits,
                   "points": [{"cap": 32}, {"cap": 4096}], "largest_cap": 4096, "covering_cap": 16,
                   "observed_new_tokens": [9], "saving_bytes": 12288.0 * 4080,
                   "sites": [{"site": "cache_utils.py:434 lazy_initialization", "op": "zeros",
                              "bytes_per_cap_token": 12288.0, "share": 1.0}]})
    (f,) = preallocation_findings([study])
    assert unexplained(f) == [], (f.title, dict(f.evidence))


def test_the_checker_catches_a_headline_that_is_not_its_evidence():
    wrong = Finding("x", "low", "decode runs at 7% of its bound", "", "", {"fraction": 0.05})
    assert unexplained(wrong) == ["7%"]
